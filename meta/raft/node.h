// The node loop around the Raft core: ticks it from a timer, persists its Ready to the LogStore,
// sends its messages to the other meta servers over Cap'n Proto, and hands committed entries to
// the application. Everything runs on the meta server's event loop thread.
#pragma once

#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "meta/raft/core.h"
#include "meta/raft/log_store.h"
#include "rpc/metrics.h"
#include "rpc/net.h"
#include "rpc/workers.h"

namespace cairn::raft {

Message fromWire(proto::RaftMessage::Reader r);

class Application {
 public:
  virtual ~Application() noexcept(false) = default;
  // Applies committed entries, in order, in one durable transaction.
  virtual void apply(const std::vector<Entry>& entries) = 0;
  // The index of the last entry the state machine holds.
  virtual Index appliedIndex() = 0;
  // Writes a consistent copy of the state machine to `path` and returns the index of the last
  // entry it holds. Runs on a thread of its own while entries go on being applied.
  virtual Index writeSnapshot(const std::string& path) = 0;
  // Replaces the state machine with the copy at `path` (from the leader).
  virtual void installSnapshot(const std::string& path) = 0;
  // True when the state machine's storage cannot be trusted after a crash of the machine; it
  // is then rebuilt from the copy at `path` (the last snapshot), or empty when `path` is empty,
  // and the log replayed from there.
  virtual bool storeUntrusted() = 0;
  virtual void rebuildStore(const std::string& path) = 0;
  // Leadership changed (to us, or away from us).
  virtual void roleChanged(bool leader) = 0;
};

struct NodeOptions {
  NodeId id = 1;
  std::map<NodeId, std::string> peers;  // every initial voter's address, this node included
  std::string dataDir;
  std::string selfAddr;  // our own address, sent with every message
  kj::Duration tick = 100 * kj::MILLISECONDS;
  int electionTicks = 10;
  int heartbeatTicks = 1;
  Index snapshotEvery = 10000;  // compact the log after this many applied entries
  // The leader's own entries count once written, and reach the disk behind (see node.cc): a
  // sync of them starts this long after the first one not synced (0: at once), or at once
  // when a request waits for durability.
  kj::Duration logSyncDelay = 0 * kj::MILLISECONDS;
};

class RaftNode {
 public:
  RaftNode(kj::AsyncIoContext& io, const ClusterSecret& secret, NodeOptions options,
           Application& app, Metrics& metrics);
  ~RaftNode();

  void start();

  bool isLeader() const { return core_->role() == Role::LEADER; }
  NodeId leaderId() const { return core_->leader(); }
  std::string leaderAddr() const;
  NodeId id() const { return options_.id; }
  const Core& core() const { return *core_; }
  std::map<NodeId, std::string> members() const { return members_; }
  void setMember(NodeId id, const std::string& addr);
  // Learns a sender's address, unless it is known already.
  void learnMember(NodeId id, const std::string& addr);

  // Appends a command on the leader; the (index, term) it will be applied at, or nothing when
  // this node is not the leader.
  std::optional<std::pair<Index, Term>> propose(const std::string& data);
  std::optional<std::pair<Index, Term>> proposeConfigChange(NodeId node, bool add);
  void transferLeadership(NodeId to);
  // Resolves once the local state machine reflects every change committed before the call
  // (ReadIndex); rejects with DISCONNECTED when leadership is lost meanwhile.
  kj::Promise<void> linearizableRead();

  // The log is on stable storage up to durableIndex(); entries up to writtenIndex() are
  // written (in the page cache at least: they survive a crash of the process).
  Index durableIndex() const { return durable_; }
  Index writtenIndex() const { return written_; }
  // Resolves once the log is on stable storage up to `index`, at once when it is.
  kj::Promise<void> whenDurable(Index index);

  // Messages from another meta server.
  void receive(std::vector<Message> messages);
  // A piece of a snapshot streamed by the leader.
  void receiveSnapshotChunk(const Message& header, uint64_t offset, kj::ArrayPtr<const kj::byte> data,
                            bool last);

 private:
  void schedule();
  void process();
  void sendAll(std::vector<Message>& messages);
  kj::Promise<void> tickLoop();
  void maybeCompact();
  kj::Promise<void> snapshotWritten(std::chrono::steady_clock::time_point started);
  kj::Promise<void> streamSnapshot(Peer& peer, Message header, uint64_t offset);
  std::string snapshotPath() const { return options_.dataDir + "/snapshot.mdb"; }
  void syncBehind(bool now);
  void syncNow();
  void releaseDurable();

  kj::AsyncIoContext& io_;
  const ClusterSecret& secret_;
  NodeOptions options_;
  Application& app_;
  LogStore log_;
  std::unique_ptr<Core> core_;
  std::map<NodeId, std::string> members_;
  std::map<NodeId, std::unique_ptr<Peer>> peers_;
  std::map<NodeId, int> outstanding_;
  bool scheduled_ = false;
  bool wasLeader_ = false;
  uint64_t readCtx_ = 0;
  struct ReadWaiter {
    Index index = 0;
    bool confirmed = false;
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
  };
  std::map<uint64_t, std::vector<kj::Own<kj::PromiseFulfiller<void>>>> readBatches_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> unbatchedReads_;
  std::vector<std::pair<Index, kj::Own<kj::PromiseFulfiller<void>>>> confirmedReads_;
  kj::TaskSet tasks_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
  std::map<NodeId, bool> streaming_;  // a snapshot is on its way to this peer
  // Our own snapshot being written, on snapshotThread_; snapshotAt_ is set when it is done
  // (the index it holds, or 0 when it failed).
  bool snapshotting_ = false;
  std::atomic<bool> snapshotDone_{false};
  Index snapshotAt_ = 0;
  std::string snapshotError_;
  std::thread snapshotThread_;
  uint64_t incomingBytes_ = 0;
  Counter& sentMessages_;
  Counter& syncs_;
  Counter& behindSyncs_;
  // Log durability: written_ and durable_ as above; logEpoch_ counts replacements of stored
  // entries, so that a sync begun before one does not vouch for what replaced them.
  Index written_ = 0;
  Index durable_ = 0;
  uint64_t logEpoch_ = 0;
  HardState savedHard_;
  bool syncRunning_ = false;
  bool syncTimerSet_ = false;
  std::multimap<Index, kj::Own<kj::PromiseFulfiller<void>>> durableWaiters_;
  TaskQueue syncer_{1};  // the sync behind runs here; declared last, so joined first
};

}  // namespace cairn::raft
