#include "meta/raft/core.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace cairn::raft {

namespace {
// Broken invariants in the core are fatal: the node stops rather than corrupt.
[[noreturn]] void fatal(const char* what) { throw std::logic_error(std::string("raft: ") + what); }
#define RAFT_ASSERT(cond, what) \
  do {                          \
    if (!(cond)) fatal(what);   \
  } while (0)
}  // namespace

const char* messageTypeName(MessageType t) {
  switch (t) {
    case MessageType::PRE_VOTE: return "PreVote";
    case MessageType::PRE_VOTE_RESP: return "PreVoteResp";
    case MessageType::VOTE: return "Vote";
    case MessageType::VOTE_RESP: return "VoteResp";
    case MessageType::APPEND: return "Append";
    case MessageType::APPEND_RESP: return "AppendResp";
    case MessageType::HEARTBEAT: return "Heartbeat";
    case MessageType::HEARTBEAT_RESP: return "HeartbeatResp";
    case MessageType::SNAPSHOT: return "Snapshot";
    case MessageType::TIMEOUT_NOW: return "TimeoutNow";
  }
  return "?";
}

const char* roleName(Role r) {
  switch (r) {
    case Role::FOLLOWER: return "follower";
    case Role::PRE_CANDIDATE: return "pre-candidate";
    case Role::CANDIDATE: return "candidate";
    case Role::LEADER: return "leader";
  }
  return "?";
}

std::string encodeVoters(const std::vector<NodeId>& voters) {
  std::string s;
  for (auto v : voters) s.append(reinterpret_cast<const char*>(&v), sizeof(v));
  return s;
}

std::vector<NodeId> decodeVoters(const std::string& data) {
  RAFT_ASSERT(data.size() % sizeof(NodeId) == 0, "bad configuration entry");
  std::vector<NodeId> out(data.size() / sizeof(NodeId));
  if (!out.empty()) memcpy(out.data(), data.data(), data.size());
  return out;
}

Core::Core(const Config& config, const Restored& restored)
    : id_(config.id), cfg_(config), rng_(config.seed ^ (config.id * 0x9E3779B97F4A7C15ull)) {
  RAFT_ASSERT(id_ != 0, "node id 0 is reserved");
  voters_ = cfg_.voters;
  if (restored.snapshot) {
    snapIndex_ = restored.snapshot->index;
    snapTerm_ = restored.snapshot->term;
    voters_ = restored.snapshot->voters;
    configIndex_ = snapIndex_;
    configHistory_[snapIndex_] = voters_;
  }
  log_ = restored.entries;
  for (size_t i = 0; i < log_.size(); i++)
    RAFT_ASSERT(log_[i].index == snapIndex_ + 1 + i, "restored log is not contiguous");
  term_ = restored.hardState.term;
  vote_ = restored.hardState.vote;
  commit_ = std::max(restored.hardState.commit, snapIndex_);
  if (commit_ > lastIndex()) commit_ = lastIndex();
  applied_ = std::max(restored.applied, snapIndex_);
  if (applied_ > commit_) commit_ = applied_;
  stable_ = lastIndex();
  lastHard_ = HardState{term_, vote_, commit_};
  applyConfigUpTo(commit_);
  resetTimers();
}

std::optional<Term> Core::termAt(Index i) const {
  if (i == snapIndex_) return snapTerm_;
  if (i < snapIndex_ || i > lastIndex()) return std::nullopt;
  return log_[i - snapIndex_ - 1].term;
}

const Entry* Core::entryAt(Index i) const {
  if (i <= snapIndex_ || i > lastIndex()) return nullptr;
  return &log_[i - snapIndex_ - 1];
}

Term Core::lastTerm() const { return *termAt(lastIndex()); }

bool Core::isVoter(NodeId n) const {
  return std::find(voters_.begin(), voters_.end(), n) != voters_.end();
}

Index Core::matchOf(NodeId peer) const {
  auto it = progress_.find(peer);
  return it == progress_.end() ? 0 : it->second.match;
}

void Core::resetTimers() {
  electionElapsed_ = 0;
  heartbeatElapsed_ = 0;
  randomizedElectionTicks_ =
      cfg_.electionTicks + static_cast<int>(rng_() % static_cast<uint64_t>(cfg_.electionTicks));
}

void Core::becomeFollower(Term term, NodeId lead) {
  if (term != term_) {
    RAFT_ASSERT(term > term_, "terms never decrease");
    term_ = term;
    vote_ = 0;
  }
  role_ = Role::FOLLOWER;
  lead_ = lead;
  transferee_ = 0;
  pendingReads_.clear();
  queuedReads_.clear();
  resetTimers();
}

void Core::becomePreCandidate() {
  role_ = Role::PRE_CANDIDATE;
  lead_ = 0;
  votesGranted_.clear();
  votesRejected_.clear();
  resetTimers();
}

void Core::becomeCandidate() {
  RAFT_ASSERT(role_ != Role::LEADER, "a leader cannot become a candidate");
  term_++;
  vote_ = id_;
  role_ = Role::CANDIDATE;
  lead_ = 0;
  votesGranted_.clear();
  votesRejected_.clear();
  resetTimers();
}

void Core::resetProgress() {
  progress_.clear();
  for (auto v : voters_) {
    Progress p;
    p.next = lastIndex() + 1;
    if (v == id_) {
      p.match = stable_;
      p.state = ProgressState::REPLICATE;
    }
    progress_[v] = p;
  }
}

void Core::becomeLeader() {
  RAFT_ASSERT(role_ == Role::CANDIDATE, "only a candidate becomes leader");
  role_ = Role::LEADER;
  lead_ = id_;
  transferee_ = 0;
  resetProgress();
  resetTimers();
  // A no-op of the new term: committing it commits everything before it (paper, 5.4.2), and
  // reads and configuration changes wait for it.
  Entry noop;
  noop.type = EntryType::NOOP;
  appendLocal({noop});
  pendingConfigIndex_ = lastIndex();
  broadcastAppend();
}

void Core::campaign(bool pre, bool transfer) {
  if (!isVoter(id_)) return;
  Term msgTerm;
  if (pre) {
    becomePreCandidate();
    msgTerm = term_ + 1;
  } else {
    becomeCandidate();
    msgTerm = term_;
  }
  votesGranted_.insert(id_);
  if (votesGranted_.size() >= quorum()) {
    if (pre) {
      campaign(false, transfer);
    } else {
      becomeLeader();
    }
    return;
  }
  for (auto v : voters_) {
    if (v == id_) continue;
    Message m;
    m.type = pre ? MessageType::PRE_VOTE : MessageType::VOTE;
    m.to = v;
    m.term = msgTerm;
    m.index = lastIndex();
    m.logTerm = lastTerm();
    m.transfer = transfer;
    send(std::move(m));
  }
}

void Core::tick() {
  if (role_ == Role::LEADER) {
    heartbeatElapsed_++;
    electionElapsed_++;
    if (transferee_ != 0 && ++transferElapsed_ >= cfg_.electionTicks) transferee_ = 0;
    if (electionElapsed_ >= cfg_.electionTicks) {
      electionElapsed_ = 0;
      if (cfg_.checkQuorum) {
        size_t active = 0;
        for (auto& [id, p] : progress_) {
          if (!isVoter(id)) continue;
          if (id == id_ || p.recentActive) active++;
          p.recentActive = false;
        }
        if (active < quorum()) {
          becomeFollower(term_, 0);  // cut off from a quorum: step down (check-quorum)
          return;
        }
      }
    }
    if (heartbeatElapsed_ >= cfg_.heartbeatTicks) {
      heartbeatElapsed_ = 0;
      broadcastHeartbeat(pendingReads_.empty() ? 0 : readRound_);
    }
    return;
  }
  electionElapsed_++;
  // A sole voter has no leader to wait for and no rival to stagger against: it campaigns at
  // its first tick (a one-server cluster serves within a tick of starting, not after a whole
  // election timeout). Only election timing changes, which safety never depends on.
  bool alone = voters_.size() == 1 && voters_[0] == id_;
  if ((electionElapsed_ >= randomizedElectionTicks_ || alone) && isVoter(id_)) {
    campaign(cfg_.preVote, false);
  }
}

void Core::send(Message m) {
  m.from = id_;
  if (m.term == 0) m.term = term_;
  outbox_.push_back(std::move(m));
}

bool Core::isUpToDate(Index lastIdx, Term lastT) const {
  Term mine = lastTerm();
  return lastT > mine || (lastT == mine && lastIdx >= lastIndex());
}

void Core::step(const Message& m) {
  if (m.term > term_) {
    bool vote = m.type == MessageType::PRE_VOTE || m.type == MessageType::VOTE;
    if (vote && !m.transfer && cfg_.checkQuorum && lead_ != 0 &&
        electionElapsed_ < cfg_.electionTicks) {
      return;  // we heard from a leader within the election timeout: keep its lease
    }
    if (m.type == MessageType::PRE_VOTE) {
      // A pre-vote does not change our term.
    } else if (m.type == MessageType::PRE_VOTE_RESP && !m.reject) {
      // Granted pre-votes carry the term the candidate would campaign in.
    } else {
      bool fromLeader = m.type == MessageType::APPEND || m.type == MessageType::HEARTBEAT ||
                        m.type == MessageType::SNAPSHOT;
      becomeFollower(m.term, fromLeader ? m.from : 0);
    }
  } else if (m.term < term_) {
    if (m.type == MessageType::APPEND || m.type == MessageType::HEARTBEAT) {
      // Tell a stale leader about the newer term so it steps down.
      Message r;
      r.type = MessageType::APPEND_RESP;
      r.to = m.from;
      send(std::move(r));
    } else if (m.type == MessageType::PRE_VOTE) {
      Message r;
      r.type = MessageType::PRE_VOTE_RESP;
      r.to = m.from;
      r.reject = true;
      send(std::move(r));
    }
    return;
  }

  if (m.type == MessageType::PRE_VOTE || m.type == MessageType::VOTE) {
    handleVoteRequest(m);
    return;
  }
  switch (role_) {
    case Role::LEADER:
      stepLeader(m);
      break;
    case Role::PRE_CANDIDATE:
    case Role::CANDIDATE:
      stepCandidate(m);
      break;
    case Role::FOLLOWER:
      stepFollower(m);
      break;
  }
}

void Core::handleVoteRequest(const Message& m) {
  bool pre = m.type == MessageType::PRE_VOTE;
  bool canVote = vote_ == m.from || (vote_ == 0 && lead_ == 0) || (pre && m.term > term_);
  Message r;
  r.type = pre ? MessageType::PRE_VOTE_RESP : MessageType::VOTE_RESP;
  r.to = m.from;
  if (canVote && isUpToDate(m.index, m.logTerm)) {
    r.term = m.term;
    if (!pre) {
      electionElapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    r.reject = true;
  }
  send(std::move(r));
}

void Core::stepCandidate(const Message& m) {
  switch (m.type) {
    case MessageType::APPEND:
      becomeFollower(m.term, m.from);
      handleAppend(m);
      break;
    case MessageType::HEARTBEAT:
      becomeFollower(m.term, m.from);
      handleHeartbeat(m);
      break;
    case MessageType::SNAPSHOT:
      becomeFollower(m.term, m.from);
      handleSnapshot(m);
      break;
    case MessageType::PRE_VOTE_RESP:
    case MessageType::VOTE_RESP: {
      bool pre = m.type == MessageType::PRE_VOTE_RESP;
      if (pre != (role_ == Role::PRE_CANDIDATE)) break;
      if (m.reject) {
        votesRejected_.insert(m.from);
      } else {
        votesGranted_.insert(m.from);
      }
      if (votesGranted_.size() >= quorum()) {
        if (pre) {
          campaign(false, false);
        } else {
          becomeLeader();
        }
      } else if (votesRejected_.size() >= quorum()) {
        becomeFollower(term_, 0);
      }
      break;
    }
    default:
      break;
  }
}

void Core::stepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::APPEND:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleAppend(m);
      break;
    case MessageType::HEARTBEAT:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleHeartbeat(m);
      break;
    case MessageType::SNAPSHOT:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleSnapshot(m);
      break;
    case MessageType::TIMEOUT_NOW:
      campaign(false, true);
      break;
    default:
      break;
  }
}

void Core::handleAppend(const Message& m) {
  Message r;
  r.type = MessageType::APPEND_RESP;
  r.to = m.from;
  if (m.index < commit_) {
    r.index = commit_;
    send(std::move(r));
    return;
  }
  auto t = termAt(m.index);
  if (!t || *t != m.logTerm) {
    r.reject = true;
    r.index = m.index;
    r.rejectHint = lastIndex();
    send(std::move(r));
    return;
  }
  std::vector<Entry> fresh;
  for (size_t i = 0; i < m.entries.size(); i++) {
    const Entry& e = m.entries[i];
    RAFT_ASSERT(e.index == m.index + 1 + i, "append with non-contiguous entries");
    if (e.index <= lastIndex()) {
      if (*termAt(e.index) == e.term) continue;
      // Conflict: drop our entry and everything after it (never a committed one).
      RAFT_ASSERT(e.index > commit_, "conflict with a committed entry");
      log_.resize(e.index - snapIndex_ - 1);
      if (stable_ >= e.index) stable_ = e.index - 1;
      if (pendingConfigIndex_ >= e.index) pendingConfigIndex_ = 0;
    }
    fresh.assign(m.entries.begin() + static_cast<long>(i), m.entries.end());
    break;
  }
  for (auto& e : fresh) log_.push_back(e);
  Index lastNew = m.index + m.entries.size();
  Index newCommit = std::min(m.commit, lastNew);
  if (newCommit > commit_) {
    commit_ = newCommit;
    applyConfigUpTo(commit_);
  }
  r.index = lastNew;
  send(std::move(r));
}

void Core::handleHeartbeat(const Message& m) {
  Index newCommit = std::min(m.commit, lastIndex());
  if (newCommit > commit_) {
    commit_ = newCommit;
    applyConfigUpTo(commit_);
  }
  Message r;
  r.type = MessageType::HEARTBEAT_RESP;
  r.to = m.from;
  r.context = m.context;
  send(std::move(r));
}

void Core::handleSnapshot(const Message& m) {
  RAFT_ASSERT(m.snapshot.has_value(), "snapshot message without a snapshot");
  const Snapshot& s = *m.snapshot;
  Message r;
  r.type = MessageType::APPEND_RESP;
  r.to = m.from;
  if (s.meta.index <= commit_) {
    r.index = commit_;
    send(std::move(r));
    return;
  }
  auto t = termAt(s.meta.index);
  if (t && *t == s.meta.term) {
    // We already hold the entry: just commit up to it.
    commit_ = s.meta.index;
    applyConfigUpTo(commit_);
  } else {
    log_.clear();
    snapIndex_ = s.meta.index;
    snapTerm_ = s.meta.term;
    commit_ = applied_ = stable_ = snapIndex_;
    voters_ = s.meta.voters;
    configIndex_ = snapIndex_;
    configHistory_.clear();
    configHistory_[snapIndex_] = voters_;
    pendingSnapshot_ = s;
  }
  r.index = s.meta.index;
  send(std::move(r));
}

void Core::stepLeader(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;  // not (or no longer) a member
  Progress& pr = it->second;
  switch (m.type) {
    case MessageType::APPEND_RESP: {
      pr.recentActive = true;
      if (m.reject) {
        if (m.index < pr.match) break;  // stale
        if (pr.state == ProgressState::REPLICATE || m.index == pr.next - 1) {
          pr.next = std::max<Index>(1, std::min(m.index, m.rejectHint + 1));
          if (pr.next <= pr.match) pr.next = pr.match + 1;
          pr.state = ProgressState::PROBE;
          pr.paused = false;
          pr.inflight = 0;
          pr.inflightLast.clear();
          sendAppend(m.from, true);
        }
        break;
      }
      bool updated = false;
      if (m.index > pr.match) {
        pr.match = m.index;
        updated = true;
      }
      if (pr.next < m.index + 1) pr.next = m.index + 1;
      pr.paused = false;
      while (!pr.inflightLast.empty() && pr.inflightLast.front() <= m.index) {
        pr.inflightLast.erase(pr.inflightLast.begin());
        pr.inflight--;
      }
      if (pr.state == ProgressState::PROBE ||
          (pr.state == ProgressState::SNAPSHOT && pr.match >= pr.pendingSnapshot)) {
        pr.state = ProgressState::REPLICATE;
        pr.inflight = 0;
        pr.inflightLast.clear();
        pr.next = pr.match + 1;
      }
      if (updated && maybeCommit()) {
        broadcastAppend();
      } else if (pr.next <= lastIndex()) {
        sendAppend(m.from, false);
      }
      if (m.from == transferee_ && pr.match == lastIndex()) {
        Message t;
        t.type = MessageType::TIMEOUT_NOW;
        t.to = m.from;
        send(std::move(t));
      }
      break;
    }
    case MessageType::HEARTBEAT_RESP: {
      pr.recentActive = true;
      pr.paused = false;
      if (pr.state == ProgressState::SNAPSHOT &&
          ++pr.snapshotWait > 4 * cfg_.electionTicks) {
        // The snapshot (or its answer) was lost: probe again rather than stall this follower.
        pr.state = ProgressState::PROBE;
        pr.snapshotWait = 0;
      }
      if (pr.state == ProgressState::REPLICATE && pr.inflight >= cfg_.maxInflightMessages) {
        // The window is full and the follower is alive: what is in flight was lost. Probe
        // again from what it has acknowledged.
        pr.state = ProgressState::PROBE;
        pr.next = pr.match + 1;
        pr.inflight = 0;
        pr.inflightLast.clear();
      }
      if (pr.match < lastIndex()) sendAppend(m.from, true);
      if (m.context != 0) {
        for (auto& r : pendingReads_)
          if (r.round <= m.context) r.acks.insert(m.from);
        releaseReads();
      }
      break;
    }
    default:
      break;
  }
}

void Core::sendAppend(NodeId to, bool allowEmpty) {
  if (to == id_) return;
  Progress& pr = progress_[to];
  if (pr.state == ProgressState::SNAPSHOT) return;
  if (pr.state == ProgressState::PROBE && pr.paused) return;
  if (pr.state == ProgressState::REPLICATE && pr.inflight >= cfg_.maxInflightMessages) return;
  Index prev = pr.next - 1;
  auto prevTerm = termAt(prev);
  if (!prevTerm) {
    // The entries it needs were compacted: send the snapshot.
    Message m;
    m.type = MessageType::SNAPSHOT;
    m.to = to;
    Snapshot s;
    s.meta.index = snapIndex_;
    s.meta.term = snapTerm_;
    s.meta.voters = votersAt(snapIndex_);
    if (snapshotSource_) s.data = snapshotSource_(snapshotCtx_);
    m.snapshot = std::move(s);
    pr.state = ProgressState::SNAPSHOT;
    pr.pendingSnapshot = snapIndex_;
    pr.snapshotWait = 0;
    pr.inflight = 0;
    send(std::move(m));
    return;
  }
  Message m;
  m.type = MessageType::APPEND;
  m.to = to;
  m.index = prev;
  m.logTerm = *prevTerm;
  m.commit = commit_;
  for (Index i = pr.next; i <= lastIndex() && m.entries.size() < cfg_.maxEntriesPerMessage; i++)
    m.entries.push_back(*entryAt(i));
  if (m.entries.empty() && !allowEmpty) return;
  if (!m.entries.empty()) {
    Index last = m.entries.back().index;
    if (pr.state == ProgressState::REPLICATE) {
      pr.next = last + 1;
      pr.inflight++;
      pr.inflightLast.push_back(last);
    } else {
      pr.paused = true;
    }
  } else if (pr.state == ProgressState::PROBE) {
    pr.paused = true;
  }
  send(std::move(m));
}

void Core::broadcastAppend() {
  for (auto& [id, p] : progress_)
    if (id != id_) sendAppend(id, true);
}

void Core::broadcastHeartbeat(uint64_t ctx) {
  for (auto& [id, p] : progress_) {
    if (id == id_) continue;
    Message m;
    m.type = MessageType::HEARTBEAT;
    m.to = id;
    m.commit = std::min(p.match, commit_);
    m.context = ctx;
    send(std::move(m));
  }
}

bool Core::maybeCommit() {
  std::vector<Index> matches;
  for (auto v : voters_) {
    auto it = progress_.find(v);
    matches.push_back(v == id_ ? stable_ : (it == progress_.end() ? 0 : it->second.match));
  }
  std::sort(matches.begin(), matches.end(), std::greater<Index>());
  Index q = matches[quorum() - 1];
  if (q > commit_ && termAt(q) == term_) {
    commit_ = q;
    applyConfigUpTo(commit_);
    if (committedInCurrentTerm()) {
      auto queued = std::move(queuedReads_);
      queuedReads_.clear();
      for (auto& [ctx, unused] : queued) readIndex(ctx);
    }
    return true;
  }
  return false;
}

bool Core::committedInCurrentTerm() const {
  auto t = termAt(commit_);
  return t && *t == term_;
}

std::vector<NodeId> Core::votersAt(Index index) const {
  std::vector<NodeId> v = cfg_.voters;
  for (auto& [i, voters] : configHistory_) {
    if (i > index) break;
    v = voters;
  }
  return v;
}

void Core::applyConfigUpTo(Index commit) {
  for (Index i = std::max(configIndex_ + 1, snapIndex_ + 1); i <= commit && i <= lastIndex(); i++) {
    const Entry* e = entryAt(i);
    if (e->type != EntryType::CONFIG) continue;
    voters_ = decodeVoters(e->data);
    configIndex_ = i;
    configHistory_[i] = voters_;
    if (role_ == Role::LEADER) {
      for (auto v : voters_) {
        if (!progress_.count(v)) {
          Progress p;
          p.next = lastIndex() + 1;
          progress_[v] = p;
        }
      }
      for (auto it = progress_.begin(); it != progress_.end();) {
        if (!isVoter(it->first)) {
          it = progress_.erase(it);
        } else {
          ++it;
        }
      }
      if (!isVoter(id_)) {
        // Removed from the cluster: the next leader comes from the new configuration.
        becomeFollower(term_, 0);
        return;
      }
    }
  }
  if (configIndex_ < commit) configIndex_ = std::min(commit, lastIndex());
}

void Core::appendLocal(std::vector<Entry> entries) {
  for (auto& e : entries) {
    e.term = term_;
    e.index = lastIndex() + 1;
    log_.push_back(std::move(e));
  }
}

bool Core::propose(const std::string& data) {
  if (role_ != Role::LEADER || transferee_ != 0) return false;
  Entry e;
  e.type = EntryType::NORMAL;
  e.data = data;
  appendLocal({e});
  broadcastAppend();
  return true;
}

bool Core::proposeConfigChange(NodeId node, bool add) {
  if (role_ != Role::LEADER || transferee_ != 0 || node == 0) return false;
  if (!committedInCurrentTerm() || pendingConfigIndex_ > commit_) return false;
  std::vector<NodeId> next = voters_;
  bool present = isVoter(node);
  if (add == present) return false;
  if (add) {
    next.push_back(node);
  } else {
    next.erase(std::remove(next.begin(), next.end(), node), next.end());
    if (next.empty()) return false;
  }
  std::sort(next.begin(), next.end());
  Entry e;
  e.type = EntryType::CONFIG;
  e.data = encodeVoters(next);
  appendLocal({e});
  pendingConfigIndex_ = lastIndex();
  broadcastAppend();
  return true;
}

bool Core::readIndex(uint64_t ctx) {
  if (role_ != Role::LEADER) return false;
  if (!committedInCurrentTerm()) {
    queuedReads_.emplace_back(ctx, true);
    return true;
  }
  if (voters_.size() == 1) {
    readyReads_.push_back(ReadState{ctx, commit_});
    return true;
  }
  PendingRead r{ctx, commit_, ++readRound_, {id_}};
  pendingReads_.push_back(std::move(r));
  broadcastHeartbeat(readRound_);
  return true;
}

void Core::releaseReads() {
  while (!pendingReads_.empty() && pendingReads_.front().acks.size() >= quorum()) {
    readyReads_.push_back(ReadState{pendingReads_.front().ctx, pendingReads_.front().index});
    pendingReads_.erase(pendingReads_.begin());
  }
}

void Core::transferLeadership(NodeId to) {
  if (role_ != Role::LEADER || to == id_ || !isVoter(to)) return;
  transferee_ = to;
  transferElapsed_ = 0;
  if (progress_[to].match == lastIndex()) {
    Message t;
    t.type = MessageType::TIMEOUT_NOW;
    t.to = to;
    send(std::move(t));
  } else {
    sendAppend(to, true);
  }
}

void Core::compact(Index index) {
  if (index <= snapIndex_) return;
  RAFT_ASSERT(index <= applied_, "compacting past what was applied");
  snapTerm_ = *termAt(index);
  log_.erase(log_.begin(), log_.begin() + static_cast<long>(index - snapIndex_));
  snapIndex_ = index;
}

bool Core::hasReady() const {
  if (!outbox_.empty() || pendingSnapshot_ || !readyReads_.empty()) return true;
  if (lastIndex() > stable_) return true;
  if (HardState{term_, vote_, commit_} != lastHard_) return true;
  return std::min(commit_, lastIndex()) > applied_;
}

Ready Core::ready() {
  Ready rd;
  HardState hs{term_, vote_, commit_};
  if (hs != lastHard_) {
    rd.hardState = hs;
    if (hs.term != lastHard_.term || hs.vote != lastHard_.vote) rd.mustSync = true;
  }
  if (pendingSnapshot_) {
    rd.snapshot = std::move(*pendingSnapshot_);
    pendingSnapshot_.reset();
    rd.mustSync = true;
  }
  for (Index i = std::max(stable_ + 1, snapIndex_ + 1); i <= lastIndex(); i++)
    rd.entries.push_back(*entryAt(i));
  if (!rd.entries.empty()) rd.mustSync = true;
  for (Index i = applied_ + 1; i <= std::min(commit_, lastIndex()); i++)
    rd.committed.push_back(*entryAt(i));
  rd.messages = std::move(outbox_);
  outbox_.clear();
  rd.reads = std::move(readyReads_);
  readyReads_.clear();
  return rd;
}

void Core::advance(const Ready& rd) {
  if (rd.hardState) lastHard_ = *rd.hardState;
  if (rd.snapshot) stable_ = std::max(stable_, rd.snapshot->meta.index);
  if (!rd.entries.empty()) stable_ = std::max(stable_, rd.entries.back().index);
  if (stable_ > lastIndex()) stable_ = lastIndex();
  if (!rd.committed.empty()) applied_ = rd.committed.back().index;
  if (role_ == Role::LEADER) {
    progress_[id_].match = stable_;
    if (maybeCommit()) broadcastAppend();
  }
}

}  // namespace cairn::raft
