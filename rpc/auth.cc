#include "rpc/auth.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "rpc/runtime.h"

namespace cairn {
namespace {

constexpr size_t NONCE_BYTES = 32;

std::array<unsigned char, 32> hmac(const unsigned char* key, const char* label,
                                   kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b,
                                   proto::Role role) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key, crypto_auth_hmacsha256_KEYBYTES);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(label), strlen(label));
  crypto_auth_hmacsha256_update(&st, a.begin(), a.size());
  crypto_auth_hmacsha256_update(&st, b.begin(), b.size());
  unsigned char r = static_cast<unsigned char>(role);
  crypto_auth_hmacsha256_update(&st, &r, 1);
  std::array<unsigned char, 32> out;
  crypto_auth_hmacsha256_final(&st, out.data());
  return out;
}

}  // namespace

ClusterSecret ClusterSecret::fromBytes(const std::string& bytes) {
  KJ_REQUIRE(sodium_init() >= 0, "libsodium failed to initialise");
  KJ_REQUIRE(bytes.size() >= 16, "cluster secret is too short (at least 16 bytes)");
  ClusterSecret s;
  crypto_hash_sha256(s.key_.data(), reinterpret_cast<const unsigned char*>(bytes.data()),
                     bytes.size());
  return s;
}

ClusterSecret ClusterSecret::fromFile(const std::string& path) {
  return fromBytes(readWholeFile(path));
}

std::array<unsigned char, 32> ClusterSecret::clientProof(kj::ArrayPtr<const kj::byte> serverNonce,
                                                         kj::ArrayPtr<const kj::byte> clientNonce,
                                                         proto::Role role) const {
  return hmac(key_.data(), "cairn-client", serverNonce, clientNonce, role);
}

std::array<unsigned char, 32> ClusterSecret::serverProof(kj::ArrayPtr<const kj::byte> clientNonce,
                                                         kj::ArrayPtr<const kj::byte> serverNonce,
                                                         proto::Role role) const {
  return hmac(key_.data(), "cairn-server", clientNonce, serverNonce, role);
}

GateImpl::GateImpl(const ClusterSecret& secret, ServiceFor& serviceFor, std::string peer)
    : secret_(secret), serviceFor_(serviceFor), peer_(std::move(peer)) {}

kj::Promise<void> GateImpl::challenge(ChallengeContext context) {
  randombytes_buf(nonce_.data(), nonce_.size());
  haveNonce_ = true;
  context.getResults().setServerNonce(kj::arrayPtr(nonce_.data(), nonce_.size()));
  return kj::READY_NOW;
}

kj::Promise<void> GateImpl::login(LoginContext context) {
  auto params = context.getParams();
  bool had = haveNonce_;
  haveNonce_ = false;  // one attempt per challenge
  if (!had) {
    spdlog::warn("refused {}: login without a challenge", peer_);
    KJ_FAIL_REQUIRE("login without challenge");
  }
  auto clientNonce = params.getClientNonce();
  auto proof = params.getProof();
  auto role = params.getRole();
  auto serverNonce = kj::arrayPtr<const kj::byte>(nonce_.data(), nonce_.size());
  auto expected = secret_.clientProof(serverNonce, clientNonce, role);
  if (clientNonce.size() != NONCE_BYTES || proof.size() != expected.size() ||
      crypto_verify_32(proof.begin(), expected.data()) != 0) {
    spdlog::warn("refused {}: wrong cluster secret", peer_);
    KJ_FAIL_REQUIRE("authentication failed: wrong cluster secret");
  }
  auto results = context.getResults();
  auto mine = secret_.serverProof(clientNonce, serverNonce, role);
  results.setServerProof(kj::arrayPtr(mine.data(), mine.size()));
  results.setService(serviceFor_(role));
  spdlog::debug("authenticated {} as role {}", peer_, static_cast<int>(role));
  return kj::READY_NOW;
}

kj::Promise<capnp::Capability::Client> authenticate(proto::Gate::Client gate,
                                                    const ClusterSecret& secret,
                                                    proto::Role role) {
  return gate.challengeRequest().send().then([gate, &secret, role](auto response) mutable {
    auto serverNonce = kj::heapArray<kj::byte>(response.getServerNonce());
    KJ_REQUIRE(serverNonce.size() == NONCE_BYTES, "bad challenge from server");
    auto clientNonce = kj::heapArray<kj::byte>(NONCE_BYTES);
    randombytes_buf(clientNonce.begin(), clientNonce.size());
    auto proof = secret.clientProof(serverNonce, clientNonce, role);
    auto req = gate.loginRequest();
    req.setClientNonce(clientNonce);
    req.setProof(kj::arrayPtr(proof.data(), proof.size()));
    req.setRole(role);
    return req.send().then([&secret, role, serverNonce = kj::mv(serverNonce),
                            clientNonce = kj::mv(clientNonce)](auto response) {
      auto expected = secret.serverProof(clientNonce, serverNonce, role);
      auto got = response.getServerProof();
      KJ_REQUIRE(got.size() == expected.size() && crypto_verify_32(got.begin(), expected.data()) == 0,
                 "server failed to prove the cluster secret");
      return response.getService();
    });
  });
}

}  // namespace cairn
