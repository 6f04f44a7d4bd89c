// The Raft core: a pure, deterministic state machine (Ongaro & Ousterhout, "In Search of an
// Understandable Consensus Algorithm", and Ongaro's dissertation for pre-vote, check-quorum,
// leadership transfer, ReadIndex and single-server membership changes).
//
// No clock, socket, disk, thread or global random source is inside. The caller drives it:
//   tick()              a logical clock tick (the node loop calls it every tickInterval)
//   step(message)       a message from a peer
//   propose(data)       a command, on the leader
//   readIndex(ctx)      a linearizable read, on the leader
// and then, while hasReady(), takes ready() and, in this order:
//   1. persists ready.snapshot (if any), ready.entries (deleting any stored entries at or after
//      the first one's index first) and ready.hardState, syncing when ready.mustSync;
//   2. sends ready.messages;
//   3. applies ready.committed (and answers ready.reads once applied reaches their index);
//   4. calls advance(ready).
// A node's own log entries count towards a commit only after advance(), i.e. once they are
// durable, so nothing is ever committed on an unsynced copy.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace cairn::raft {

using NodeId = uint64_t;  // 0 is "none"
using Term = uint64_t;
using Index = uint64_t;

enum class EntryType : uint8_t { NORMAL = 0, CONFIG = 1, NOOP = 2 };

struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::NORMAL;
  std::string data;  // NORMAL: the command; CONFIG: encodeVoters(new voter set)
  bool operator==(const Entry&) const = default;
};

struct HardState {
  Term term = 0;
  NodeId vote = 0;
  Index commit = 0;
  bool operator==(const HardState&) const = default;
};

struct SnapshotMeta {
  Index index = 0;
  Term term = 0;
  std::vector<NodeId> voters;
};

struct Snapshot {
  SnapshotMeta meta;
  std::string data;  // opaque to the core (the node loop may stream it instead)
};

enum class MessageType : uint8_t {
  PRE_VOTE,
  PRE_VOTE_RESP,
  VOTE,
  VOTE_RESP,
  APPEND,
  APPEND_RESP,
  HEARTBEAT,
  HEARTBEAT_RESP,
  SNAPSHOT,
  TIMEOUT_NOW,
};
const char* messageTypeName(MessageType t);

struct Message {
  MessageType type = MessageType::APPEND;
  NodeId from = 0;
  NodeId to = 0;
  Term term = 0;
  Index index = 0;    // APPEND: prev log index; *_RESP: the index acknowledged or rejected
  Term logTerm = 0;   // APPEND: prev log term; VOTE: candidate's last log term
  Index commit = 0;
  bool reject = false;
  Index rejectHint = 0;  // APPEND_RESP rejected: the follower's last index
  uint64_t context = 0;  // HEARTBEAT(_RESP): read-index round
  bool transfer = false; // VOTE: campaign caused by leadership transfer (ignores leases)
  std::vector<Entry> entries;
  std::optional<Snapshot> snapshot;
};

struct ReadState {
  uint64_t ctx = 0;
  Index index = 0;  // answer once applied >= index
};

enum class Role : uint8_t { FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER };
const char* roleName(Role r);

struct Ready {
  std::optional<HardState> hardState;  // changed since the last Ready
  std::optional<Snapshot> snapshot;    // received: install, replacing state and log
  std::vector<Entry> entries;          // to persist (overwrite from entries[0].index)
  std::vector<Message> messages;       // to send after persisting
  std::vector<Entry> committed;        // to apply, in order
  std::vector<ReadState> reads;        // confirmed read indexes
  bool mustSync = false;
};

struct Config {
  NodeId id = 0;
  std::vector<NodeId> voters;   // used when the log holds no configuration yet
  int electionTicks = 10;       // randomized in [electionTicks, 2*electionTicks)
  int heartbeatTicks = 1;
  bool preVote = true;
  bool checkQuorum = true;
  size_t maxEntriesPerMessage = 64;
  size_t maxInflightMessages = 64;
  uint64_t seed = 1;
};

// What the node loop restores at start from durable storage.
struct Restored {
  HardState hardState;
  std::optional<SnapshotMeta> snapshot;  // the latest durable snapshot
  std::vector<Entry> entries;            // every durable entry after the snapshot
  Index applied = 0;                     // the state machine's applied index
};

std::string encodeVoters(const std::vector<NodeId>& voters);
std::vector<NodeId> decodeVoters(const std::string& data);

class Core {
 public:
  Core(const Config& config, const Restored& restored);

  void tick();
  void step(const Message& m);
  // False when this node is not the leader, or a leadership transfer is under way.
  bool propose(const std::string& data);
  // Adds or removes one voter; false unless the leader has committed an entry of its term and
  // no other configuration change is pending.
  bool proposeConfigChange(NodeId node, bool add);
  // False when not the leader. The ReadState comes back in a later Ready.
  bool readIndex(uint64_t ctx);
  // True when this node alone is the quorum, has committed in its term and applied all it
  // committed: a read of its state machine now is linearizable without a ReadIndex round.
  bool readsLocally() const {
    return role_ == Role::LEADER && voters_.size() == 1 && voters_[0] == id_ &&
           committedInCurrentTerm() && applied_ >= commit_;
  }
  void transferLeadership(NodeId to);
  // The state machine is durably captured up to `index` (<= applied): drop those log entries.
  void compact(Index index);

  bool hasReady() const;
  Ready ready();
  void advance(const Ready& ready);

  // Introspection (for status and for the simulator's checks).
  NodeId id() const { return id_; }
  Role role() const { return role_; }
  Term term() const { return term_; }
  NodeId leader() const { return lead_; }
  Index commitIndex() const { return commit_; }
  Index appliedIndex() const { return applied_; }
  Index firstIndex() const { return snapIndex_ + 1; }
  Index lastIndex() const { return snapIndex_ + log_.size(); }
  Index snapshotIndex() const { return snapIndex_; }
  std::optional<Term> termAt(Index i) const;
  const Entry* entryAt(Index i) const;
  const std::vector<NodeId>& voters() const { return voters_; }
  Index matchOf(NodeId peer) const;
  // The configuration in effect at `index`.
  std::vector<NodeId> votersAt(Index index) const;
  // Snapshot data for a follower behind the log's start; set by the node loop.
  void setSnapshotSource(std::string (*source)(void*), void* ctx) {
    snapshotSource_ = source;
    snapshotCtx_ = ctx;
  }

 private:
  enum class ProgressState : uint8_t { PROBE, REPLICATE, SNAPSHOT };
  struct Progress {
    Index match = 0;
    Index next = 1;
    ProgressState state = ProgressState::PROBE;
    bool paused = false;       // PROBE: one message in flight
    size_t inflight = 0;       // REPLICATE: messages not yet acknowledged
    std::vector<Index> inflightLast;
    bool recentActive = false;
    Index pendingSnapshot = 0;
    int snapshotWait = 0;      // SNAPSHOT: heartbeat answers since the snapshot was sent
  };
  struct PendingRead {
    uint64_t ctx;
    Index index;
    uint64_t round;
    std::set<NodeId> acks;
  };

  void becomeFollower(Term term, NodeId lead);
  void becomePreCandidate();
  void becomeCandidate();
  void becomeLeader();
  void campaign(bool pre, bool transfer);
  void resetTimers();
  void stepLeader(const Message& m);
  void stepCandidate(const Message& m);
  void stepFollower(const Message& m);
  void handleAppend(const Message& m);
  void handleHeartbeat(const Message& m);
  void handleSnapshot(const Message& m);
  void handleVoteRequest(const Message& m);
  void send(Message m);
  void sendAppend(NodeId to, bool allowEmpty);
  void broadcastAppend();
  void broadcastHeartbeat(uint64_t ctx);
  bool maybeCommit();
  void appendLocal(std::vector<Entry> entries);
  bool isUpToDate(Index lastIdx, Term lastTerm) const;
  size_t quorum() const { return voters_.size() / 2 + 1; }
  bool isVoter(NodeId n) const;
  void applyConfigUpTo(Index commit);
  void resetProgress();
  bool committedInCurrentTerm() const;
  void releaseReads();
  Term lastTerm() const;

  NodeId id_;
  Config cfg_;
  std::mt19937_64 rng_;
  std::vector<NodeId> voters_;  // the committed configuration in effect
  Index configIndex_ = 0;       // index of the entry that set voters_
  Index pendingConfigIndex_ = 0;
  std::map<Index, std::vector<NodeId>> configHistory_;  // configurations by log index

  Role role_ = Role::FOLLOWER;
  Term term_ = 0;
  NodeId vote_ = 0;
  NodeId lead_ = 0;
  Index commit_ = 0;
  Index applied_ = 0;   // handed out for applying (through Ready.committed)
  Index stable_ = 0;    // last durable index
  HardState lastHard_;

  Index snapIndex_ = 0;
  Term snapTerm_ = 0;
  std::vector<Entry> log_;  // entries snapIndex_+1 .. lastIndex()
  std::optional<Snapshot> pendingSnapshot_;  // received, not yet in a Ready

  int electionElapsed_ = 0;
  int heartbeatElapsed_ = 0;
  int randomizedElectionTicks_ = 0;
  std::set<NodeId> votesGranted_, votesRejected_;
  std::map<NodeId, Progress> progress_;
  NodeId transferee_ = 0;
  int transferElapsed_ = 0;

  uint64_t readRound_ = 0;
  std::vector<PendingRead> pendingReads_;
  std::vector<std::pair<uint64_t, bool>> queuedReads_;  // before the term's first commit
  std::vector<ReadState> readyReads_;

  std::vector<Message> outbox_;
  std::string (*snapshotSource_)(void*) = nullptr;
  void* snapshotCtx_ = nullptr;
};

}  // namespace cairn::raft
