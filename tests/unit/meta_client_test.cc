// Tests of rpc/meta_client's handling of answered calls: their responses (whose release sends
// the server capnp's Finish message) are dropped in batches, within bounds on count and bytes.
// A real listener, gate and MetaClient on one event loop; the Meta service behind the gate
// answers a getattr of inode N with N bytes of value.
#include "rpc/meta_client.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string>

#include "rpc/net.h"

namespace cairn {
namespace {

class SizedMeta final : public proto::Meta::Server {
 public:
  kj::Promise<void> call(CallContext context) override {
    auto request = context.getParams().getRequest();
    capnp::MallocMessageBuilder m;
    auto reply = m.initRoot<proto::MetaReply>();
    if (request.getOp().isGetattr()) reply.initValue(request.getOp().getGetattr());
    context.getResults().setReply(reply.asReader());
    return kj::READY_NOW;
  }
};

// Everything lives on the stack of one test: kj's destructors may throw, which a gtest fixture's
// members must not.
struct Env {
  Env()
      : io(kj::setupAsyncIo()),
        secret(ClusterSecret::fromBytes("a secret of more than sixteen bytes")),
        listener(io, secret, [](proto::Role) -> capnp::Capability::Client {
          return kj::heap<SizedMeta>();
        }) {
    auto port = listener.listen("127.0.0.1:0").wait(io.waitScope);
    client = kj::heap<MetaClient>(io, secret,
                                  std::vector<std::string>{"127.0.0.1:" + std::to_string(port)},
                                  proto::Role::CLIENT, 99);
  }

  size_t getattr(uint64_t bytes) {
    auto m = newMetaRequest();
    m->getRoot<proto::MetaRequest>().initOp().setGetattr(bytes);
    auto reply = client->call(kj::mv(m)).wait(io.waitScope);
    return reply->getRoot<proto::MetaReply>().getValue().size();
  }

  kj::AsyncIoContext io;
  ClusterSecret secret;
  RpcListener listener;
  kj::Own<MetaClient> client;
};

TEST(MetaClient, ReleaseDropsAnsweredResponsesInBatches) {
  Env env;
  auto& client = env.client;
  for (size_t i = 1; i <= 3 * MetaClient::RELEASE_BATCH; i++) {
    ASSERT_EQ(env.getattr(8), 8u);
    client->release();
    // Kept until a whole batch has gathered, then dropped together.
    EXPECT_EQ(client->heldResponses(), i % MetaClient::RELEASE_BATCH) << "after call " << i;
  }
}

TEST(MetaClient, LargeResponsesAreDroppedAtTheNextRelease) {
  Env env;
  auto& client = env.client;
  ASSERT_EQ(env.getattr(8), 8u);
  client->release();
  EXPECT_EQ(client->heldResponses(), 1u);
  ASSERT_EQ(env.getattr(MetaClient::RELEASE_BYTES), MetaClient::RELEASE_BYTES);
  EXPECT_EQ(client->heldResponses(), 2u);  // the caller has not answered its own caller yet
  client->release();
  EXPECT_EQ(client->heldResponses(), 0u);
}

TEST(MetaClient, ACallerThatNeverReleasesHoldsAtMostTwoBatches) {
  Env env;
  auto& client = env.client;
  size_t most = 0;
  for (size_t i = 0; i < 5 * MetaClient::RELEASE_BATCH; i++) {
    ASSERT_EQ(env.getattr(8), 8u);
    most = std::max(most, client->heldResponses());
  }
  EXPECT_EQ(most, 2 * MetaClient::RELEASE_BATCH);
}

TEST(MetaClient, ACallerThatNeverReleasesHoldsAtMostTwiceTheBytes) {
  Env env;
  auto& client = env.client;
  size_t most = 0;
  for (size_t i = 0; i < 20; i++) {
    ASSERT_EQ(env.getattr(MetaClient::RELEASE_BYTES / 4), MetaClient::RELEASE_BYTES / 4);
    most = std::max(most, client->heldResponses());
  }
  // Each response is a little over a quarter of RELEASE_BYTES: eight of them pass twice it.
  EXPECT_EQ(most, 8u);
}

TEST(MetaClient, ReleaseAndFlushDropsTheBatchAndLeavesTheSocketUncorked) {
  Env env;
  auto& client = env.client;
  for (size_t i = 1; i < MetaClient::RELEASE_BATCH; i++) {
    ASSERT_EQ(env.getattr(8), 8u);
    client->releaseAndFlush(env.io.waitScope);
    EXPECT_EQ(client->heldResponses(), i);
  }
  ASSERT_EQ(env.getattr(8), 8u);
  client->releaseAndFlush(env.io.waitScope);
  EXPECT_EQ(client->heldResponses(), 0u);
  // The socket was corked for the Finish messages only: a cork left on would hold every later
  // request back for up to 200 ms.
  int fd = -1;
  KJ_IF_MAYBE(f, client->leaderFd()) { fd = *f; }
  ASSERT_GE(fd, 0);
  int cork = -1;
  socklen_t len = sizeof(cork);
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &cork, &len), 0);
  EXPECT_EQ(cork, 0);
  EXPECT_EQ(env.getattr(16), 16u);
}

}  // namespace
}  // namespace cairn
