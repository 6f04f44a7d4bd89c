// Deterministic simulation of Raft clusters built from meta/raft/core.
//
// Every run is a function of its seed: nodes, network, disks, clocks and clients are all
// simulated on one thread. The network loses, duplicates, delays and reorders messages and is
// cut by symmetric and asymmetric partitions; nodes crash (losing whatever was not synced) and
// restart; leaders are asked to hand over leadership; voters are removed and added back.
// After every step the safety properties of the Raft paper (figure 3) are checked: election
// safety, log matching, leader completeness and state machine safety. At the end the clients'
// history is checked for linearizability and the cluster must make progress once healed.
//
// A failure prints the seed and the last events; CAIRN_RAFT_SEED=<seed> replays one run, and
// CAIRN_RAFT_SEEDS=<n> runs n seeds (1000 by default).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "meta/raft/core.h"

namespace cairn::raft {
namespace {

struct Failure {
  std::string what;
};

// The replicated state: an append-only list of operation ids, deduplicated by (client, seq).
struct StateMachine {
  std::vector<uint64_t> ops;            // operation ids in apply order
  std::map<uint64_t, uint64_t> lastSeq;  // client -> highest seq applied

  static uint64_t opId(uint64_t client, uint64_t seq) { return (client << 32) | seq; }

  // Returns the op's position (its first application, for a duplicate).
  size_t apply(const std::string& data) {
    uint64_t client, seq;
    memcpy(&client, data.data(), 8);
    memcpy(&seq, data.data() + 8, 8);
    uint64_t id = opId(client, seq);
    auto& last = lastSeq[client];
    if (seq <= last) {
      auto it = std::find(ops.begin(), ops.end(), id);
      return it == ops.end() ? SIZE_MAX : static_cast<size_t>(it - ops.begin());
    }
    last = seq;
    ops.push_back(id);
    return ops.size() - 1;
  }
  std::string encode() const {
    std::string s;
    uint64_t n = ops.size();
    s.append(reinterpret_cast<const char*>(&n), 8);
    s.append(reinterpret_cast<const char*>(ops.data()), ops.size() * 8);
    for (auto& [c, q] : lastSeq) {
      s.append(reinterpret_cast<const char*>(&c), 8);
      s.append(reinterpret_cast<const char*>(&q), 8);
    }
    return s;
  }
  static StateMachine decode(const std::string& s) {
    StateMachine m;
    if (s.empty()) return m;
    uint64_t n;
    memcpy(&n, s.data(), 8);
    m.ops.resize(n);
    memcpy(m.ops.data(), s.data() + 8, n * 8);
    for (size_t at = 8 + n * 8; at + 16 <= s.size(); at += 16) {
      uint64_t c, q;
      memcpy(&c, s.data() + at, 8);
      memcpy(&q, s.data() + at + 8, 8);
      m.lastSeq[c] = q;
    }
    return m;
  }
};

// What survives a crash: only what was synced.
struct Disk {
  HardState hard;
  std::optional<Snapshot> snapshot;
  std::vector<Entry> entries;  // after the snapshot
  // Written but not yet synced (lost on crash).
  std::optional<HardState> unsyncedHard;
};

struct Node {
  NodeId id;
  Disk disk;
  std::unique_ptr<Core> core;  // null while crashed
  StateMachine sm;
  Index applied = 0;
  int downUntil = 0;
  Role lastRole = Role::FOLLOWER;
};

struct InFlight {
  int deliverAt;
  uint64_t order;
  Message msg;
};

struct ClientOp {
  uint64_t client;
  uint64_t seq;     // 0 for reads
  bool read;
  int invoked;
  int completed = -1;
  size_t position = 0;  // writes: position in the list; reads: list length seen
  NodeId at = 0;        // node currently asked
  int deadline = 0;
  uint64_t readCtx = 0;
};

class Simulation {
 public:
  Simulation(uint64_t seed, size_t nodes) : seed_(seed), rng_(seed) {
    for (size_t i = 1; i <= nodes; i++) allVoters_.push_back(i);
    for (size_t i = 1; i <= nodes; i++) {
      auto n = std::make_unique<Node>();
      n->id = i;
      nodes_.push_back(std::move(n));
      start(*nodes_.back());
    }
    lossPct_ = pick(0, 15);
    dupPct_ = pick(0, 5);
    maxDelay_ = pick(1, 6);
    compactEvery_ = pick(5, 40);
  }

  void run(int ticks) {
    for (int t = 0; t < ticks; t++) step(true);
    // Heal everything and let the cluster finish the clients' work.
    partitions_.clear();
    lossPct_ = 0;
    dupPct_ = 0;
    for (auto& n : nodes_)
      if (!n->core) start(*n);
    for (int t = 0; t < 3000 && !allDone(); t++) step(false);
    if (!allDone()) {
      std::string state;
      for (auto& n : nodes_) {
        if (!n->core) {
          state += " [" + std::to_string(n->id) + " down]";
          continue;
        }
        auto& c = *n->core;
        state += " [" + std::to_string(n->id) + " " + roleName(c.role()) + " term " +
                 std::to_string(c.term()) + " lead " + std::to_string(c.leader()) + " commit " +
                 std::to_string(c.commitIndex()) + " last " + std::to_string(c.lastIndex()) +
                 " applied " + std::to_string(n->applied) + " voters " +
                 std::to_string(c.voters().size()) + "]";
      }
      for (auto& op : ops_)
        if (op.completed < 0)
          state += " waiting{client " + std::to_string(op.client) + (op.read ? " read" : " write") +
                   " seq " + std::to_string(op.seq) + " at " + std::to_string(op.at) + "}";
      fail("no progress after healing:" + state);
    }
    checkLinearizable();
    checkConverged();
  }

  std::string stats() const {
    size_t w = 0, r = 0;
    for (auto& op : ops_) {
      if (op.completed < 0) continue;
      (op.read ? r : w)++;
    }
    return "writes acked " + std::to_string(w) + ", reads " + std::to_string(r) + ", leaders " +
           std::to_string(leaders_.size()) + ", committed " + std::to_string(committed_.size()) +
           ", ticks " + std::to_string(now_);
  }

  std::string trace() const {
    std::ostringstream out;
    for (auto& line : trace_) out << "  " << line << "\n";
    return out.str();
  }

 private:
  int pick(int lo, int hi) { return lo + static_cast<int>(rng_() % static_cast<uint64_t>(hi - lo + 1)); }
  bool chance(int pct) { return static_cast<int>(rng_() % 100) < pct; }

  void note(const std::string& s) {
    trace_.push_back("t=" + std::to_string(now_) + " " + s);
    if (trace_.size() > 60) trace_.pop_front();
  }
  [[noreturn]] void fail(const std::string& what) { throw Failure{what}; }

  void start(Node& n) {
    Config c;
    c.id = n.id;
    c.voters = allVoters_;
    c.electionTicks = 10;
    c.heartbeatTicks = 2;
    c.seed = seed_;
    c.maxEntriesPerMessage = 8;
    c.maxInflightMessages = 8;
    Restored r;
    r.hardState = n.disk.hard;
    if (n.disk.snapshot) r.snapshot = n.disk.snapshot->meta;
    r.entries = n.disk.entries;
    n.sm = n.disk.snapshot ? StateMachine::decode(n.disk.snapshot->data) : StateMachine();
    n.applied = n.disk.snapshot ? n.disk.snapshot->meta.index : 0;
    r.applied = n.applied;
    n.core = std::make_unique<Core>(c, r);
    n.core->setSnapshotSource(
        [](void* ctx) {
          auto* node = static_cast<Node*>(ctx);
          return node->disk.snapshot ? node->disk.snapshot->data : std::string();
        },
        &n);
    n.lastRole = Role::FOLLOWER;
  }

  void crash(Node& n) {
    note("crash " + std::to_string(n.id));
    n.core.reset();
    n.disk.unsyncedHard.reset();  // unsynced writes are gone
    n.downUntil = now_ + pick(5, 60);
  }

  Node* node(NodeId id) { return id >= 1 && id <= nodes_.size() ? nodes_[id - 1].get() : nullptr; }

  bool linkUp(NodeId from, NodeId to) const {
    return partitions_.count({from, to}) == 0;
  }

  void step(bool chaos) {
    now_++;
    if (chaos) injectFaults();
    // Deliver due messages.
    std::vector<InFlight> due;
    for (auto it = network_.begin(); it != network_.end();) {
      if (it->deliverAt <= now_) {
        due.push_back(std::move(*it));
        it = network_.erase(it);
      } else {
        ++it;
      }
    }
    std::sort(due.begin(), due.end(), [](const InFlight& a, const InFlight& b) {
      return a.deliverAt != b.deliverAt ? a.deliverAt < b.deliverAt : a.order < b.order;
    });
    for (auto& f : due) {
      Node* n = node(f.msg.to);
      if (!n || !n->core || !linkUp(f.msg.from, f.msg.to)) continue;
      n->core->step(f.msg);
      process(*n);
    }
    for (auto& n : nodes_) {
      if (!n->core) {
        if (now_ >= n->downUntil) {
          note("restart " + std::to_string(n->id));
          start(*n);
        }
        continue;
      }
      n->core->tick();
      process(*n);
    }
    driveClients(chaos);
    checkSafety();
  }

  void injectFaults() {
    if (chance(2)) {
      // A new partition: isolate one node, split the cluster, or cut one direction.
      partitions_.clear();
      int kind = pick(0, 3);
      NodeId a = pick(1, static_cast<int>(nodes_.size()));
      if (kind == 0) {
        for (auto& n : nodes_)
          if (n->id != a) {
            partitions_.insert({a, n->id});
            partitions_.insert({n->id, a});
          }
        note("partition: isolate " + std::to_string(a));
      } else if (kind == 1) {
        std::vector<NodeId> ids;
        for (auto& n : nodes_) ids.push_back(n->id);
        std::shuffle(ids.begin(), ids.end(), rng_);
        size_t half = ids.size() / 2;
        for (size_t i = 0; i < half; i++)
          for (size_t j = half; j < ids.size(); j++) {
            partitions_.insert({ids[i], ids[j]});
            partitions_.insert({ids[j], ids[i]});
          }
        note("partition: split");
      } else if (kind == 2) {
        NodeId b = pick(1, static_cast<int>(nodes_.size()));
        if (b != a) partitions_.insert({a, b});
        note("partition: one way " + std::to_string(a) + "->" + std::to_string(b));
      } else {
        note("partition: healed");
      }
    }
    if (chance(1)) {
      Node& n = *nodes_[pick(0, static_cast<int>(nodes_.size()) - 1)];
      size_t down = 0;
      for (auto& m : nodes_) down += m->core ? 0 : 1;
      if (n.core && down + 1 <= (nodes_.size() - 1) / 2 + 1) crash(n);
    }
    if (chance(1)) {
      if (Node* l = leaderNode()) {
        NodeId to = pick(1, static_cast<int>(nodes_.size()));
        note("transfer leadership " + std::to_string(l->id) + " -> " + std::to_string(to));
        l->core->transferLeadership(to);
        process(*l);
      }
    }
    if (nodes_.size() >= 5 && chance(1)) {
      if (Node* l = leaderNode()) {
        NodeId target = pick(1, static_cast<int>(nodes_.size()));
        bool isVoter = false;
        for (auto v : l->core->voters()) isVoter |= v == target;
        bool add = !isVoter;
        if (!add && (l->core->voters().size() <= 3 || target == l->id)) return;
        if (l->core->proposeConfigChange(target, add)) {
          note(std::string(add ? "add voter " : "remove voter ") + std::to_string(target));
          process(*l);
        }
      }
    }
  }

  Node* leaderNode() {
    Node* best = nullptr;
    for (auto& n : nodes_)
      if (n->core && n->core->role() == Role::LEADER &&
          (!best || n->core->term() > best->core->term()))
        best = n.get();
    return best;
  }

  void send(const Message& m) {
    if (!linkUp(m.from, m.to)) return;
    if (chance(lossPct_)) return;
    int copies = chance(dupPct_) ? 2 : 1;
    for (int i = 0; i < copies; i++)
      network_.push_back(InFlight{now_ + pick(1, maxDelay_), order_++, m});
  }

  void process(Node& n) {
    while (n.core && n.core->hasReady()) {
      Ready rd = n.core->ready();
      // 1. Persist (a sync makes earlier unsynced writes durable too).
      if (rd.snapshot) {
        n.disk.snapshot = rd.snapshot;
        n.disk.entries.clear();
        n.sm = StateMachine::decode(rd.snapshot->data);
        n.applied = rd.snapshot->meta.index;
      }
      if (!rd.entries.empty()) {
        Index first = rd.entries.front().index;
        Index base = n.disk.snapshot ? n.disk.snapshot->meta.index : 0;
        if (first <= base) fail("persisting entries inside the snapshot");
        n.disk.entries.resize(std::min<size_t>(n.disk.entries.size(), first - base - 1));
        for (auto& e : rd.entries) n.disk.entries.push_back(e);
      }
      if (rd.hardState) {
        if (rd.mustSync) {
          n.disk.hard = *rd.hardState;
          n.disk.unsyncedHard.reset();
        } else {
          n.disk.unsyncedHard = *rd.hardState;
        }
      }
      if (rd.mustSync && n.disk.unsyncedHard) {
        n.disk.hard = *n.disk.unsyncedHard;
        n.disk.unsyncedHard.reset();
      }
      // 2. Send.
      for (auto& m : rd.messages) send(m);
      // 3. Apply.
      for (auto& e : rd.committed) {
        if (e.index != n.applied + 1) fail("applied out of order at node " + std::to_string(n.id));
        n.applied = e.index;
        auto& rec = committed_[e.index];
        if (rec.first == 0) {
          rec = {e.term, e.data};
        } else if (rec.first != e.term || rec.second != e.data) {
          fail("state machine safety: index " + std::to_string(e.index) +
               " applied with different entries");
        }
        if (e.type == EntryType::NORMAL) {
          size_t pos = n.sm.apply(e.data);
          uint64_t client, seq;
          memcpy(&client, e.data.data(), 8);
          memcpy(&seq, e.data.data() + 8, 8);
          for (auto& op : ops_) {
            if (op.completed < 0 && !op.read && op.client == client && op.seq == seq &&
                op.at == n.id) {
              op.completed = now_;
              op.position = pos;
              note("ack client " + std::to_string(client) + " seq " + std::to_string(seq) +
                   " pos " + std::to_string(pos));
            }
          }
        }
      }
      for (auto& r : rd.reads) pendingReads_[n.id].push_back(r);
      // 4. Advance.
      n.core->advance(rd);
      // Snapshot now and then, then compact.
      Index base = n.disk.snapshot ? n.disk.snapshot->meta.index : 0;
      if (n.applied >= base + static_cast<Index>(compactEvery_)) {
        Snapshot s;
        s.meta.index = n.applied;
        s.meta.term = *n.core->termAt(n.applied);
        s.meta.voters = votersAt(n, n.applied);
        s.data = n.sm.encode();
        Index drop = n.applied - base;
        n.disk.entries.erase(n.disk.entries.begin(),
                             n.disk.entries.begin() + static_cast<long>(std::min<size_t>(drop, n.disk.entries.size())));
        n.disk.snapshot = s;
        n.core->compact(n.applied);
      }
    }
    // Reads whose index has been applied are answered.
    auto& reads = pendingReads_[n.id];
    for (auto it = reads.begin(); it != reads.end();) {
      if (n.applied >= it->index) {
        for (auto& op : ops_)
          if (op.read && op.completed < 0 && op.readCtx == it->ctx && op.at == n.id) {
            op.completed = now_;
            op.position = n.sm.ops.size();
          }
        it = reads.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::vector<NodeId> votersAt(Node& n, Index index) {
    // The configuration in effect at `index`: the last CONFIG entry at or before it.
    std::vector<NodeId> v = n.disk.snapshot ? n.disk.snapshot->meta.voters : allVoters_;
    for (auto& e : n.disk.entries)
      if (e.index <= index && e.type == EntryType::CONFIG) v = decodeVoters(e.data);
    return v;
  }

  void driveClients(bool chaos) {
    // Each client has one operation in flight at a time.
    for (uint64_t c = 1; c <= CLIENTS; c++) {
      ClientOp* cur = nullptr;
      for (auto& op : ops_)
        if (op.client == c && op.completed < 0) cur = &op;
      if (!cur) {
        if (!chaos || !chance(30)) continue;
        ClientOp op;
        op.client = c;
        op.read = chance(30);
        op.seq = op.read ? 0 : ++seqs_[c];
        op.invoked = now_;
        ops_.push_back(op);
        cur = &ops_.back();
        cur->deadline = 0;
      }
      if (now_ < cur->deadline) continue;
      // (Re)send to the node believed to be the leader, or any node.
      NodeId target = 0;
      for (auto& n : nodes_)
        if (n->core && n->core->role() == Role::LEADER) target = n->id;
      if (!target || chance(20)) target = pick(1, static_cast<int>(nodes_.size()));
      Node* n = node(target);
      cur->at = target;
      cur->deadline = now_ + 40;
      if (!n->core) continue;
      if (cur->read) {
        cur->readCtx = ++readCtx_;
        n->core->readIndex(cur->readCtx);
      } else {
        std::string data(16, '\0');
        memcpy(data.data(), &cur->client, 8);
        memcpy(data.data() + 8, &cur->seq, 8);
        n->core->propose(data);
      }
      process(*n);
    }
  }

  bool allDone() const {
    for (auto& op : ops_)
      if (op.completed < 0) return false;
    return true;
  }

  void checkSafety() {
    for (auto& n : nodes_) {
      if (!n->core) continue;
      Core& c = *n->core;
      if (c.role() == Role::LEADER) {
        auto [it, fresh] = leaders_.emplace(c.term(), n->id);
        if (it->second != n->id)
          fail("election safety: two leaders in term " + std::to_string(c.term()));
        if (n->lastRole != Role::LEADER) {
          note("leader " + std::to_string(n->id) + " term " + std::to_string(c.term()));
          // Leader completeness: every committed entry is in the new leader's log.
          for (auto& [idx, rec] : committed_) {
            if (idx <= c.snapshotIndex()) continue;
            auto t = c.termAt(idx);
            if (!t || *t != rec.first)
              fail("leader completeness: leader " + std::to_string(n->id) + " misses index " +
                   std::to_string(idx));
          }
        }
      }
      n->lastRole = c.role();
    }
    // Log matching between every pair of running nodes.
    if (now_ % 5 != 0) return;
    for (size_t a = 0; a < nodes_.size(); a++) {
      for (size_t b = a + 1; b < nodes_.size(); b++) {
        Core* x = nodes_[a]->core.get();
        Core* y = nodes_[b]->core.get();
        if (!x || !y) continue;
        Index lo = std::max(x->firstIndex(), y->firstIndex());
        Index hi = std::min(x->lastIndex(), y->lastIndex());
        Index match = 0;
        for (Index i = hi; i >= lo && i > 0; i--) {
          if (x->termAt(i) == y->termAt(i)) {
            match = i;
            break;
          }
        }
        for (Index i = lo; i <= match; i++) {
          if (!(*x->entryAt(i) == *y->entryAt(i)))
            fail("log matching: nodes " + std::to_string(a + 1) + " and " + std::to_string(b + 1) +
                 " differ at " + std::to_string(i));
        }
      }
    }
  }

  void checkLinearizable() {
    // Reference order: the final state of the most advanced node.
    Node* ref = nullptr;
    for (auto& n : nodes_)
      if (!ref || n->applied > ref->applied) ref = n.get();
    std::map<uint64_t, size_t> pos;
    for (size_t i = 0; i < ref->sm.ops.size(); i++) {
      if (!pos.emplace(ref->sm.ops[i], i).second) fail("an operation was applied twice");
    }
    for (auto& op : ops_) {
      if (op.read || op.completed < 0) continue;
      auto it = pos.find(StateMachine::opId(op.client, op.seq));
      if (it == pos.end()) fail("an acknowledged write is missing");
      if (it->second != op.position) fail("a write was acknowledged with the wrong position");
    }
    // Real-time order between writes, and reads see exactly a prefix consistent with time.
    std::vector<const ClientOp*> writes;
    for (auto& op : ops_)
      if (!op.read && op.completed >= 0) writes.push_back(&op);
    for (auto* a : writes)
      for (auto* b : writes)
        if (a->completed < b->invoked && a->position >= b->position)
          fail("real-time order violated between two writes");
    for (auto& r : ops_) {
      if (!r.read || r.completed < 0) continue;
      for (auto* w : writes)
        if (w->completed < r.invoked && w->position >= r.position)
          fail("a read missed a write acknowledged before it started");
      for (size_t i = 0; i < r.position && i < ref->sm.ops.size(); i++) {
        uint64_t id = ref->sm.ops[i];
        for (auto& w : ops_)
          if (!w.read && StateMachine::opId(w.client, w.seq) == id && w.invoked > r.completed)
            fail("a read saw a write that started after it completed");
      }
    }
  }

  void checkConverged() {
    // Let followers catch up, then every node applied the same prefix.
    for (int t = 0; t < 200; t++) step(false);
    Node* ref = nullptr;
    for (auto& n : nodes_)
      if (!ref || n->applied > ref->applied) ref = n.get();
    for (auto& n : nodes_) {
      bool member = false;
      for (auto v : ref->core->voters()) member |= v == n->id;
      if (!member) continue;
      size_t k = std::min(n->sm.ops.size(), ref->sm.ops.size());
      if (!std::equal(n->sm.ops.begin(), n->sm.ops.begin() + static_cast<long>(k), ref->sm.ops.begin()))
        fail("state machines diverged");
    }
  }

  static constexpr uint64_t CLIENTS = 3;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<NodeId> allVoters_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<InFlight> network_;
  std::set<std::pair<NodeId, NodeId>> partitions_;
  int now_ = 0;
  uint64_t order_ = 0;
  int lossPct_, dupPct_, maxDelay_, compactEvery_;
  std::map<Term, NodeId> leaders_;
  std::map<Index, std::pair<Term, std::string>> committed_;
  std::deque<ClientOp> ops_;
  std::map<uint64_t, uint64_t> seqs_;
  uint64_t readCtx_ = 0;
  std::map<NodeId, std::vector<ReadState>> pendingReads_;
  std::deque<std::string> trace_;
};

uint64_t envOr(const char* name, uint64_t dflt) {
  const char* v = getenv(name);
  return v ? std::stoull(v) : dflt;
}

// Runs one seed; returns an empty string on success, else the failure with its trace.
std::string runSeed(uint64_t seed) {
  size_t nodes = seed % 2 == 0 ? 3 : 5;
  Simulation sim(seed, nodes);
  try {
    sim.run(1200);
    if (getenv("CAIRN_RAFT_VERBOSE")) printf("seed %llu: %s\n", (unsigned long long)seed, sim.stats().c_str());
  } catch (Failure& f) {
    return "seed " + std::to_string(seed) + " (" + std::to_string(nodes) + " nodes): " + f.what +
           "\nlast events:\n" + sim.trace() + "replay with CAIRN_RAFT_SEED=" +
           std::to_string(seed);
  } catch (std::exception& e) {
    return "seed " + std::to_string(seed) + ": core assertion: " + e.what() + "\nlast events:\n" +
           sim.trace() + "replay with CAIRN_RAFT_SEED=" + std::to_string(seed);
  }
  return "";
}

// Safety and linearizability hold for every seed under loss, duplication, reordering,
// partitions, crashes, leadership transfers and membership changes.
TEST(RaftSimulation, SafetyAndLinearizabilityHoldAcrossSeeds) {
  if (const char* one = getenv("CAIRN_RAFT_SEED")) {
    auto r = runSeed(std::stoull(one));
    EXPECT_EQ(r, "");
    return;
  }
  uint64_t seeds = envOr("CAIRN_RAFT_SEEDS", 1000);
  uint64_t first = envOr("CAIRN_RAFT_FIRST_SEED", 1);
  size_t failures = 0;
  for (uint64_t s = first; s < first + seeds && failures < 3; s++) {
    auto r = runSeed(s);
    if (!r.empty()) {
      ADD_FAILURE() << r;
      failures++;
    }
  }
  printf("simulated %llu seeds\n", static_cast<unsigned long long>(seeds));
}

}  // namespace
}  // namespace cairn::raft

namespace cairn::raft {
namespace {

// A sole voter has nobody to wait for: it leads after its first tick. A voter among three
// still waits out its election timeout (at least electionTicks ticks) before campaigning.
TEST(RaftElection, ASoleVoterLeadsAtItsFirstTickOthersWaitTheirTimeout) {
  Config sole;
  sole.id = 1;
  sole.voters = {1};
  Core alone(sole, Restored{});
  EXPECT_NE(alone.role(), Role::LEADER);
  alone.tick();
  EXPECT_EQ(alone.role(), Role::LEADER);

  Config three = sole;
  three.voters = {1, 2, 3};
  Core member(three, Restored{});
  for (int i = 0; i < three.electionTicks - 1; i++) member.tick();
  EXPECT_EQ(member.role(), Role::FOLLOWER);
}

}  // namespace
}  // namespace cairn::raft
