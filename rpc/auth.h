// Mutual authentication with the cluster secret.
//
// Protocol (every connection, before any request is served):
//   1. client -> Gate.challenge()             server answers a fresh 32-byte serverNonce
//   2. client -> Gate.login(clientNonce, proof, role)
//        proof       = HMAC-SHA256(K, "cairn-client" || serverNonce || clientNonce || role)
//        serverProof = HMAC-SHA256(K, "cairn-server" || clientNonce || serverNonce || role)
//      K is the SHA-256 of the secret file's contents. The server checks proof in constant time
//      and answers serverProof with the service capability; the client checks serverProof before
//      it uses the capability. A nonce is good for one login attempt only.
// A peer without the secret never holds a capability to anything but the Gate.
#pragma once

#include <capnp/capability.h>
#include <kj/function.h>
#include <sodium.h>

#include <array>
#include <string>

#include "rpc/cairn.capnp.h"

namespace cairn {

class ClusterSecret {
 public:
  // Reads the secret from a file; at least 16 bytes of content are required.
  static ClusterSecret fromFile(const std::string& path);
  static ClusterSecret fromBytes(const std::string& bytes);

  std::array<unsigned char, 32> clientProof(kj::ArrayPtr<const kj::byte> serverNonce,
                                            kj::ArrayPtr<const kj::byte> clientNonce,
                                            proto::Role role) const;
  std::array<unsigned char, 32> serverProof(kj::ArrayPtr<const kj::byte> clientNonce,
                                            kj::ArrayPtr<const kj::byte> serverNonce,
                                            proto::Role role) const;

 private:
  std::array<unsigned char, crypto_auth_hmacsha256_KEYBYTES> key_{};
};

// The bootstrap capability of every cairn server, one per connection.
class GateImpl final : public proto::Gate::Server {
 public:
  using ServiceFor = kj::Function<capnp::Capability::Client(proto::Role)>;
  GateImpl(const ClusterSecret& secret, ServiceFor& serviceFor, std::string peer);

  kj::Promise<void> challenge(ChallengeContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  const ClusterSecret& secret_;
  ServiceFor& serviceFor_;
  std::string peer_;
  std::array<unsigned char, 32> nonce_{};
  bool haveNonce_ = false;
};

// Client side of the handshake: resolves to the service capability once both sides are proven.
kj::Promise<capnp::Capability::Client> authenticate(proto::Gate::Client gate,
                                                    const ClusterSecret& secret, proto::Role role);

}  // namespace cairn
