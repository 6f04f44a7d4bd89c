// cairn-meta's serving logic (MetaServer) and its thin Cap'n Proto adapters.
//
// Mutations become Commands, stamped with the leader's time and, for chunk allocation, its
// placement, and go through Raft: the leader replies once the command is committed and applied.
// Every Raft Ready is persisted with one fsync however many proposals it carries, and its
// committed entries are applied in one LMDB transaction (group commit). Reads are served by the
// leader after a ReadIndex round, so they are linearizable. Followers answer EAGAIN with the
// leader's address.
#pragma once

#include <capnp/message.h>
#include <kj/async-io.h>

#include <chrono>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <unordered_map>
#include <vector>

#include "meta/change_feed.h"
#include "meta/raft/node.h"
#include "meta/rebalance.h"
#include "meta/state_machine.h"
#include "rpc/metrics.h"
#include "rpc/net.h"

namespace cairn::meta {

struct ServerTimeouts {
  std::chrono::milliseconds suspectAfter{3000};
  std::chrono::milliseconds deadAfter{10000};
  // Copies of deleted data wait this long before their servers delete them, and a copy no file
  // refers to must be seen this long in a server's inventory before it is deleted.
  std::chrono::milliseconds gcGrace{60000};
};

class MetaServer final : public raft::Application {
 public:
  MetaServer(Store& store, Metrics& metrics, ServerTimeouts timeouts, Format format);

  void attach(raft::RaftNode& node);
  // Starts the repair loop (leader only): under-replicated chunks are copied server to server,
  // fewest copies first; replicas on draining servers are moved off; surplus and dead replicas
  // are dropped once R good copies exist. `rateBytesPerSec` is shared by the `maxConcurrent`
  // repairs that run at a time.
  void startRepairs(kj::AsyncIoContext& io, const ClusterSecret& secret, uint64_t rateBytesPerSec,
                    size_t maxConcurrent);

  using Reply = kj::Own<capnp::MallocMessageBuilder>;
  kj::Promise<Reply> handle(proto::MetaRequest::Reader request);

  // raft::Application
  void apply(const std::vector<raft::Entry>& entries) override;
  raft::Index appliedIndex() override;
  raft::Index writeSnapshot(const std::string& path) override;
  bool storeUntrusted() override { return store_.untrusted(); }
  void rebuildStore(const std::string& path) override {
    store_.rebuild(path);
    rebuilt_ = true;
  }
  void installSnapshot(const std::string& path) override;
  void roleChanged(bool leader) override;

 private:
  struct LiveServer {
    uint64_t capacityBytes = 0;
    uint64_t usedBytes = 0;
    uint64_t chunks = 0;
    uint64_t scrubPass = 0, scrubDone = 0, scrubCorrupt = 0;
    int64_t scrubLastEnd = 0;
    std::chrono::steady_clock::time_point lastBeat{};
    bool seen = false;
  };
  struct Pending {
    raft::Term term;
    kj::Own<kj::PromiseFulfiller<Reply>> fulfiller;
  };

  kj::Promise<Reply> propose(proto::MetaRequest::Reader request, std::vector<uint32_t> placement);
  kj::Promise<Reply> waitFor(std::optional<std::pair<raft::Index, raft::Term>> at);
  kj::Promise<Reply> afterRead(kj::Function<Reply()> read);
  Reply readOnly(proto::MetaRequest::Reader request);
  Reply status();
  Reply statfs(uint64_t ino);  // ino 0: the whole cluster
  Reply metaStatus();
  Reply notLeader();
  static Reply errorReply(int err);
  kj::Promise<Reply> heartbeat(proto::MetaRequest::Reader request);
  kj::Promise<Reply> metaAdd(proto::MetaRequest::Reader request);
  // cairn fsck reads a consistent copy of the store in pieces: the copy is written by a thread
  // (the event loop keeps serving) and removed after its last piece or 10 idle minutes.
  kj::Promise<Reply> dump(uint64_t token, uint64_t offset);
  struct Dump {
    std::string path;
    uint64_t size = 0;
    std::chrono::steady_clock::time_point lastUse;
  };
  std::map<uint64_t, Dump> dumps_;
  // Picks `replicas` online servers on distinct hosts, spread over zones, then racks, that
  // `existing` replicas do not use already; weighted by free space; never on `avoidHosts`.
  std::vector<uint32_t> place(Txn& t, uint32_t replicas,
                              const std::vector<uint32_t>& existing = {},
                              const std::set<std::string>& avoidHosts = {});
  // One chunk's repair: fence `keep` and `extra` at a new version, copy to a new server when
  // `copy`, then commit `keep` (+ the new copy) and as many of `extra` as needed to stay at R.
  struct RepairPlan {
    uint64_t ino = 0, index = 0;
    ChunkRecord rec;
    std::vector<uint32_t> keep;   // good copies that stay
    std::vector<uint32_t> extra;  // live copies to drop (draining, surplus)
    bool copy = false;
    uint32_t target = 0;  // a rebalance move: copy to this server (else placement chooses)
  };
  // Coherence between clients (meta/watch.cc): the feed of changes mounts long-poll, the
  // watches parked until something changes, and the sessions those watches keep alive.
  kj::Promise<Reply> watch(proto::MetaRequest::Reader request);
  // `confirmed`: read after a linearizable read, with every change there is (ChangePage).
  Reply changesReply(const ChangeFeed::Page& page, bool confirmed);
  void wakeWatchers();
  void expireSessions();
  struct Watcher {
    uint64_t epoch = 0, after = 0;
    uint64_t client = 0;  // its own changes do not wake it (it has nothing to drop for them)
    uint64_t checked = 0; // changes up to here are known to be its own
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;  // the watch's answer is due
  };
  struct Session {
    std::string host, mount;
    std::chrono::steady_clock::time_point lastSeen;
    std::map<uint64_t, uint64_t> open;  // inode -> generation of the client's open
    bool synced = true;   // its open files are known to this leader (false: loaded from the store)
    bool stored = false;  // a SESSION_START for it is in the log
  };
  // The session of `client`, begun (and its start proposed) when new.
  Session& sessionOf(uint64_t client);
  void fileOpened(uint64_t client, uint64_t ino, uint64_t gen);
  void fileClosed(uint64_t client, uint64_t ino, uint64_t gen);
  kj::Promise<Reply> openFile(proto::MetaRequest::Reader request);
  kj::Promise<Reply> createAndOpen(proto::MetaRequest::Reader request);
  // Proposes RECLAIM for unlinked files no session holds open, once every session is synced.
  void reclaimUnlinked();
  bool reclaiming_ = false;  // a RECLAIM is in flight
  // Chunk ids offered with creates become unbindable (and their copies garbage) once they are
  // older than max(10 s, gc grace / 2): the leader remembers the id counter each second and
  // raises the floor to what it was that long ago.
  void raiseOfferFloor();
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> offerMarks_;
  bool raisingFloor_ = false;
  static constexpr size_t MAX_OPEN_PER_SESSION = 1 << 20;
  static constexpr size_t MAX_RECLAIM = 1024;  // files in one RECLAIM
  static uint64_t newEpoch();  // random, never 0
  ChangeFeed feed_{newEpoch(), 65536};
  std::vector<Watcher> watchers_;
  std::map<uint64_t, Session> sessions_;  // client id -> session (leader only)
  static constexpr size_t MAX_WATCHERS = 4096;
  static constexpr size_t MAX_PAGE = 4096;  // changes in one watch reply
  static constexpr std::chrono::seconds SESSION_TIMEOUT{30};

  // Rebalancing (meta/rebalancer.cc).
  // The servers' loads from the chunk table; optionally every chunk, and the largest chunk.
  std::vector<rebalance::ServerLoad> serverLoads(Txn& t, std::vector<rebalance::ChunkView>* chunks,
                                                 uint64_t* maxChunkBytes = nullptr);
  void planRebalance(uint32_t replicas);
  Reply rebalancePlanReply(double tolerance);
  void fillRebalance(Txn& t, const std::vector<rebalance::ServerLoad>& loads, uint64_t maxChunk,
                     proto::RebalanceStatus::Builder out);
  std::set<uint64_t> rebalancing_;  // chunk ids being moved by the rebalance (also in repairing_)
  uint64_t rebalanceMoves_ = 0, rebalanceBytes_ = 0;  // since the running rebalance started
  int64_t rebalanceStarted_ = 0;
  double rebalanceSpread_ = 0;
  Counter* rebalanceMovesTotal_ = nullptr;
  Counter* rebalanceBytesTotal_ = nullptr;

  kj::Promise<void> repairLoop();
  void planRepairs();
  kj::Promise<void> repair(RepairPlan plan);
  std::vector<uint32_t> chooseKeep(const std::vector<uint32_t>& good, uint32_t replicas);
  void refreshServers(Txn& t);
  void checkInventory(Txn& t, uint32_t server, uint64_t after,
                      capnp::List<uint64_t>::Reader ids);
  kj::Promise<int> chunkCall(const std::string& addr,
                             kj::Function<kj::Promise<int>(proto::Chunk::Client)> fn);
  const char* stateOf(uint32_t id) const;
  void failPending(int err);

  Store& store_;
  StateMachine sm_;
  Metrics& metrics_;
  ServerTimeouts timeouts_;
  Format format_;
  raft::RaftNode* node_ = nullptr;
  std::map<uint32_t, LiveServer> live_;
  std::chrono::steady_clock::time_point leaderSince_{};  // when this server last became leader
  std::map<raft::Index, Pending> pending_;
  std::mt19937_64 rng_;
  kj::AsyncIoContext* io_ = nullptr;
  const ClusterSecret* secret_ = nullptr;
  uint64_t repairRate_ = 0;
  size_t maxRepairs_ = 2;
  std::set<uint64_t> repairing_;  // chunk ids being repaired
  std::map<uint32_t, ServerRecord> servers_;  // registered chunk servers (refreshServers)
  // Garbage handed to a server in a heartbeat reply it may not have acted on yet: no repair
  // places a new copy of those chunks there until its next heartbeat (sent only after it has
  // deleted them), or the deletion could remove the new copy.
  std::map<uint32_t, std::set<uint64_t>> handedOut_;
  // Orphan candidates per server: chunk id -> when first seen without a referring file.
  std::map<uint32_t, std::map<uint64_t, std::chrono::steady_clock::time_point>> orphanSeen_;
  uint64_t repairQueue_ = 0;
  uint64_t repairedCount_ = 0;
  uint64_t repairedBytesTotal_ = 0;
  std::vector<std::pair<std::chrono::steady_clock::time_point, uint64_t>> recentRepairs_;
  Counter* repairedBytes_ = nullptr;
  std::map<std::string, std::unique_ptr<Peer>> chunkPeers_;
  kj::Own<kj::TaskSet> repairTasks_;
  struct RepairErrors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } repairErrors_;
  Counter* repairedChunks_ = nullptr;
  bool rebuilt_ = false;  // the store was rebuilt at start: the first leadership skips ids
  // Answers held until their entry is on stable storage (see mayAnswerBeforeDurable).
  struct AnswerErrors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } answerErrors_;
  kj::TaskSet heldAnswers_{answerErrors_};
  Counter& applied_;
  Histogram& applyLatency_;
  Histogram& commitLatency_;
  Counter& storeCommits_;
  // Applied commands wait in the store's open write transaction (Store::writer) for a commit
  // at most COMMIT_DELAY later, or at once after MAX_UNCOMMITTED of them.
  static constexpr kj::Duration COMMIT_DELAY = 5 * kj::MILLISECONDS;
  static constexpr size_t MAX_UNCOMMITTED = 1024;
  size_t uncommitted_ = 0;
  bool commitScheduled_ = false;
  void scheduleCommit();
  void commitApplied();
};

// One instance per authenticated role: what a connection may call depends on the role it proved
// (cluster administration only as ADMIN, chunk server bookkeeping only as SERVER, requests meta
// makes of itself never from outside). Refused requests get EPERM.
class MetaServiceImpl final : public proto::Meta::Server {
 public:
  MetaServiceImpl(MetaServer& server, Metrics& metrics, proto::Role role)
      : server_(server), metrics_(metrics), role_(role) {}
  kj::Promise<void> call(CallContext context) override;
  // Whether `role` may send this request.
  static bool allowed(proto::Role role, proto::MetaRequest::Op::Which op);

 private:
  MetaServer& server_;
  Metrics& metrics_;
  proto::Role role_;
  // Each op's latency histogram, looked up once per connection (the registry takes a lock and
  // builds the label string).
  std::unordered_map<uint16_t, Histogram*> latency_;
};

class MetaPeerImpl final : public proto::MetaPeer::Server {
 public:
  explicit MetaPeerImpl(raft::RaftNode& node) : node_(node) {}
  kj::Promise<void> raft(RaftContext context) override;
  kj::Promise<void> snapshotChunk(SnapshotChunkContext context) override;

 private:
  raft::RaftNode& node_;
};

}  // namespace cairn::meta
