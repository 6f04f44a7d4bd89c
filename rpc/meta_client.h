// The client side of the meta service, shared by mount.cairn, cairn and cairn-chunk: finds the
// leader, follows redirects, and resends through disconnects and elections with backoff. Every
// request carries (client id, sequence), so a resend after a lost reply changes nothing twice.
// Lives on one KJ event loop.
#pragma once

#include <capnp/capability.h>
#include <capnp/message.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "rpc/net.h"

namespace cairn {

// The sequence numbers of one client id, shared by its MetaClients (one per thread). It knows
// the lowest one still waiting for its reply: every request carries it (ackedBelow), and meta
// forgets this client's replies below it, as they will never be asked for again.
class SeqSource {
 public:
  uint64_t take();         // a new number, outstanding until done()
  void done(uint64_t seq);
  uint64_t ackedBelow();   // the lowest outstanding number, or the next one when none is

 private:
  std::mutex mutex_;
  uint64_t next_ = 1;
  std::set<uint64_t> outstanding_;
};

class MetaClient {
 public:
  MetaClient(kj::AsyncIoContext& io, const ClusterSecret& secret, std::vector<std::string> addrs,
             proto::Role role, uint64_t clientId, kj::Duration retryFor = 60 * kj::SECONDS,
             std::shared_ptr<SeqSource> seqs = nullptr);
  ~MetaClient();

  // `request`'s root is a MetaRequest. Resolves to a message whose root is the MetaReply.
  kj::Promise<kj::Own<capnp::MallocMessageBuilder>> call(kj::Own<capnp::MallocMessageBuilder> request);

  uint64_t clientId() const { return clientId_; }
  const std::string& leaderAddr() const { return addrs_[leader_]; }

  // Answered calls' responses are kept and dropped in batches: dropping one sends the server
  // capnp's Finish message, and a Finish sent alone wakes a server that had nothing else to do
  // (on a virtual machine a wakeup costs more than the work). release() drops them once
  // RELEASE_BATCH have gathered or they hold RELEASE_BYTES; a caller that answers someone (a
  // FUSE request) calls it after its own answer, so Finish never goes out ahead of it. The server
  // keeps each answer until its Finish, so the same bounds hold for a caller that never calls
  // release(): at twice them, the next answer drops the rest.
  void release();
  // release(), and when that drops responses, runs the loop of `waitScope` until their Finish
  // messages are written, with the leader's socket corked meanwhile: capnp writes each message
  // on its own, and a batch of 32 would cross loopback as 32 segments (each a softirq pass in
  // both processes); corked, they go as one.
  void releaseAndFlush(kj::WaitScope& waitScope);
  static constexpr size_t RELEASE_BATCH = 32;
  static constexpr size_t RELEASE_BYTES = 256 << 10;
  size_t heldResponses() const { return held_.size(); }
  // The socket of the connection to the leader, if there is one.
  kj::Maybe<int> leaderFd() const;

 private:
  kj::Promise<kj::Own<capnp::MallocMessageBuilder>> attempt(
      std::shared_ptr<capnp::MallocMessageBuilder> request, kj::TimePoint deadline,
      kj::Duration backoff);
  size_t indexOf(const std::string& addr);
  // Whether the held responses reach `times` RELEASE_BATCH or RELEASE_BYTES.
  bool heldReach(size_t times) const;
  // Drops the held responses once they reach that.
  void dropHeldAt(size_t times);

  kj::AsyncIoContext& io_;
  const ClusterSecret& secret_;
  std::vector<std::string> addrs_;
  std::vector<std::unique_ptr<Peer>> peers_;
  proto::Role role_;
  uint64_t clientId_;
  // Several MetaClients of one client id (one per thread) may share it.
  std::shared_ptr<SeqSource> seqs_;
  size_t leader_ = 0;
  kj::Duration retryFor_;
  std::vector<capnp::Response<proto::Meta::CallResults>> held_;
  size_t heldBytes_ = 0;
};

// Builds an empty MetaRequest message.
kj::Own<capnp::MallocMessageBuilder> newMetaRequest();

}  // namespace cairn
