// Tests of rpc/auth: the mutual challenge-response gate in front of every cairn service
// (promise 5: a peer without the cluster secret gets nothing). Client and server run on one
// event loop and talk Cap'n Proto RPC over an in-memory kj::newTwoWayPipe(); the service behind
// the gate is a stub proto::Chunk that implements only list().
#include "rpc/auth.h"

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <memory>
#include <string>
#include <vector>

namespace cairn {
namespace {

// The capability a successful login hands out: list() answers one chunk, (7, 3).
class StubChunk final : public proto::Chunk::Server {
 public:
  explicit StubChunk(int& calls) : calls_(calls) {}
  kj::Promise<void> list(ListContext context) override {
    calls_++;
    auto chunks = context.getResults().initChunks(1);
    chunks[0].setId(7);
    chunks[0].setVersion(3);
    return kj::READY_NOW;
  }

 private:
  int& calls_;
};

// A gate that accepts every login and proves nothing: what a server without the secret (or an
// impostor) could offer.
class ImpostorGate final : public proto::Gate::Server {
 public:
  kj::Promise<void> challenge(ChallengeContext context) override {
    context.getResults().initServerNonce(32);
    return kj::READY_NOW;
  }
  kj::Promise<void> login(LoginContext context) override {
    context.getResults().initServerProof(32);
    int ignored = 0;
    context.getResults().setService(kj::heap<StubChunk>(ignored));
    return kj::READY_NOW;
  }
};

// One connection: the server end serves `bootstrap`, the client end holds its Gate.
struct Connection {
  Connection(kj::TwoWayPipe pipe, capnp::Capability::Client bootstrap)
      : serverStream(kj::mv(pipe.ends[0])),
        clientStream(kj::mv(pipe.ends[1])),
        serverNetwork(*serverStream, capnp::rpc::twoparty::Side::SERVER),
        server(capnp::makeRpcServer(serverNetwork, kj::mv(bootstrap))),
        clientNetwork(*clientStream, capnp::rpc::twoparty::Side::CLIENT),
        client(capnp::makeRpcClient(clientNetwork)) {}

  proto::Gate::Client gate() {
    capnp::MallocMessageBuilder vatId;
    vatId.initRoot<capnp::rpc::twoparty::VatId>().setSide(capnp::rpc::twoparty::Side::SERVER);
    return client.bootstrap(vatId.getRoot<capnp::rpc::twoparty::VatId>()).castAs<proto::Gate>();
  }

  kj::Own<kj::AsyncIoStream> serverStream;
  kj::Own<kj::AsyncIoStream> clientStream;
  capnp::TwoPartyVatNetwork serverNetwork;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> server;
  capnp::TwoPartyVatNetwork clientNetwork;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> client;
};

class AuthTest : public ::testing::Test {
 protected:
  AuthTest()
      : loop(std::make_unique<kj::EventLoop>()),
        waitScopeOwner(std::make_unique<kj::WaitScope>(*loop)),
        waitScope(*waitScopeOwner),
        secret(ClusterSecret::fromBytes("the right cluster secret, 32 b.")),
        wrongSecret(ClusterSecret::fromBytes("a wrong cluster secret, 32 bytes")),
        serviceFor(std::make_unique<GateImpl::ServiceFor>(
            [this](proto::Role role) -> capnp::Capability::Client {
              roles.push_back(role);
              return kj::heap<StubChunk>(calls);
            })) {}

  // A new connection to a real GateImpl that knows `secret`.
  std::unique_ptr<Connection> connectToGate() {
    capnp::Capability::Client gate = kj::heap<GateImpl>(secret, *serviceFor, "test peer");
    return std::make_unique<Connection>(kj::newTwoWayPipe(), kj::mv(gate));
  }

  // Calls list() on an authenticated service; returns the first chunk id.
  uint64_t listFirstId(capnp::Capability::Client service) {
    auto response = service.castAs<proto::Chunk>().listRequest().send().wait(waitScope);
    KJ_ASSERT(response.getChunks().size() == 1);
    return response.getChunks()[0].getId();
  }

  // Runs `promise` and returns the description of the exception it fails with ("" if none).
  template <typename T>
  std::string failureOf(kj::Promise<T>&& promise) {
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { promise.wait(waitScope); })) {
      return e->getDescription().cStr();
    }
    return "";
  }

  // KJ objects are held by pointer: their destructors may throw, which a gtest fixture's may
  // not.
  std::unique_ptr<kj::EventLoop> loop;
  std::unique_ptr<kj::WaitScope> waitScopeOwner;
  kj::WaitScope& waitScope;
  ClusterSecret secret;
  ClusterSecret wrongSecret;
  int calls = 0;
  std::vector<proto::Role> roles;
  std::unique_ptr<GateImpl::ServiceFor> serviceFor;
};

TEST_F(AuthTest, RightSecretGetsTheServiceAndCallsWork) {
  // Proves the happy path: a client that knows the secret completes both steps, checks the
  // server's proof, receives the service for the role it asked for and can call it.
  auto conn = connectToGate();
  auto service = authenticate(conn->gate(), secret, proto::Role::ADMIN).wait(waitScope);
  EXPECT_EQ(listFirstId(service), 7u);
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(roles.size(), 1u);
  EXPECT_EQ(roles[0], proto::Role::ADMIN);
}

TEST_F(AuthTest, WrongSecretIsRefusedAndOtherClientsAreStillServed) {
  // Proves that a wrong secret gets nothing (authenticate() fails, the service is never made)
  // and that the refusal harms no one else: a client with the right secret on another
  // connection is served, and so is a retry with the right secret on the refused connection.
  auto bad = connectToGate();
  std::string why = failureOf(authenticate(bad->gate(), wrongSecret, proto::Role::CLIENT));
  EXPECT_NE(why.find("authentication failed"), std::string::npos) << why;
  EXPECT_TRUE(roles.empty()) << "a service was made for an unauthenticated peer";

  auto good = connectToGate();
  auto service = authenticate(good->gate(), secret, proto::Role::CLIENT).wait(waitScope);
  EXPECT_EQ(listFirstId(service), 7u);

  auto again = authenticate(bad->gate(), secret, proto::Role::CLIENT).wait(waitScope);
  EXPECT_EQ(listFirstId(again), 7u);
  EXPECT_EQ(calls, 2);
}

TEST_F(AuthTest, LoginWithoutChallengeFails) {
  // Proves that login needs a fresh server nonce: a login sent before any challenge is refused
  // even with a proof made with the right secret (over an all-zero "nonce").
  auto conn = connectToGate();
  kj::byte zeros[32] = {};
  kj::byte clientNonce[32];
  for (size_t i = 0; i < sizeof(clientNonce); i++) clientNonce[i] = static_cast<kj::byte>(i);
  auto proof = secret.clientProof(kj::arrayPtr(zeros, 32), kj::arrayPtr(clientNonce, 32),
                                  proto::Role::CLIENT);
  auto req = conn->gate().loginRequest();
  req.setClientNonce(kj::arrayPtr(clientNonce, 32));
  req.setProof(kj::arrayPtr(proof.data(), proof.size()));
  req.setRole(proto::Role::CLIENT);
  std::string why = failureOf(req.send());
  EXPECT_NE(why.find("without challenge"), std::string::npos) << why;
  EXPECT_TRUE(roles.empty());
}

TEST_F(AuthTest, ReplayedLoginFails) {
  // Proves that a recorded login cannot be replayed: the same (clientNonce, proof) sent a second
  // time on the same connection finds its nonce used up, and sent after a new challenge (on this
  // or another connection) no longer matches the new server nonce.
  auto conn = connectToGate();
  auto gate = conn->gate();
  auto challenge = gate.challengeRequest().send().wait(waitScope);
  auto serverNonce = kj::heapArray<kj::byte>(challenge.getServerNonce());
  kj::byte clientNonce[32];
  for (size_t i = 0; i < sizeof(clientNonce); i++) clientNonce[i] = static_cast<kj::byte>(100 + i);
  auto proof = secret.clientProof(serverNonce, kj::arrayPtr(clientNonce, 32), proto::Role::CLIENT);
  auto login = [&](proto::Gate::Client g) {
    auto req = g.loginRequest();
    req.setClientNonce(kj::arrayPtr(clientNonce, 32));
    req.setProof(kj::arrayPtr(proof.data(), proof.size()));
    req.setRole(proto::Role::CLIENT);
    return req.send();
  };
  auto first = login(gate).wait(waitScope);  // the genuine login
  auto expected = secret.serverProof(kj::arrayPtr(clientNonce, 32), serverNonce,
                                     proto::Role::CLIENT);
  ASSERT_EQ(first.getServerProof().size(), expected.size());
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), first.getServerProof().begin()));
  EXPECT_EQ(roles.size(), 1u);

  EXPECT_NE(failureOf(login(gate)), "") << "replay on the same connection was accepted";
  gate.challengeRequest().send().wait(waitScope);
  EXPECT_NE(failureOf(login(gate)).find("authentication failed"), std::string::npos);

  auto other = connectToGate();
  auto otherGate = other->gate();
  otherGate.challengeRequest().send().wait(waitScope);
  EXPECT_NE(failureOf(login(otherGate)).find("authentication failed"), std::string::npos);
  EXPECT_EQ(roles.size(), 1u) << "a replayed login received a service";
}

TEST_F(AuthTest, ProofForOneRoleDoesNotLogInAsAnother) {
  // Proves that the role is bound into the proof: a proof made for CLIENT presented with role
  // ADMIN is refused, so ordinary access cannot be upgraded to admin access.
  auto conn = connectToGate();
  auto gate = conn->gate();
  auto challenge = gate.challengeRequest().send().wait(waitScope);
  kj::byte clientNonce[32] = {1, 2, 3};
  auto proof = secret.clientProof(challenge.getServerNonce(), kj::arrayPtr(clientNonce, 32),
                                  proto::Role::CLIENT);
  auto req = gate.loginRequest();
  req.setClientNonce(kj::arrayPtr(clientNonce, 32));
  req.setProof(kj::arrayPtr(proof.data(), proof.size()));
  req.setRole(proto::Role::ADMIN);
  EXPECT_NE(failureOf(req.send()).find("authentication failed"), std::string::npos);
  EXPECT_TRUE(roles.empty());
}

TEST_F(AuthTest, ServerThatCannotProveTheSecretIsRejectedByTheClient) {
  // Proves the mutual half: a server that accepts any login but cannot produce the server proof
  // is not trusted, so a client never sends requests to an impostor.
  auto conn = std::make_unique<Connection>(kj::newTwoWayPipe(), kj::heap<ImpostorGate>());
  std::string why = failureOf(authenticate(conn->gate(), secret, proto::Role::CLIENT));
  EXPECT_NE(why.find("server failed to prove"), std::string::npos) << why;
}

}  // namespace
}  // namespace cairn
