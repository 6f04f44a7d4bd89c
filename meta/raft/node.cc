#include "meta/raft/node.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "rpc/runtime.h"

namespace cairn::raft {

namespace {

constexpr int MAX_OUTSTANDING_PER_PEER = 64;  // calls in flight; beyond, messages are dropped

void toWire(const Message& m, proto::RaftMessage::Builder b, const std::string& selfAddr) {
  b.setFromAddr(selfAddr);
  b.setType(static_cast<uint8_t>(m.type));
  b.setFrom(m.from);
  b.setTo(m.to);
  b.setTerm(m.term);
  b.setIndex(m.index);
  b.setLogTerm(m.logTerm);
  b.setCommit(m.commit);
  b.setReject(m.reject);
  b.setRejectHint(m.rejectHint);
  b.setContext(m.context);
  b.setTransfer(m.transfer);
  auto es = b.initEntries(m.entries.size());
  for (size_t i = 0; i < m.entries.size(); i++) {
    es[i].setTerm(m.entries[i].term);
    es[i].setIndex(m.entries[i].index);
    es[i].setType(static_cast<uint8_t>(m.entries[i].type));
    es[i].setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(m.entries[i].data.data()),
                               m.entries[i].data.size()));
  }
  if (m.snapshot) {
    b.setHasSnapshot(true);
    b.setSnapshotIndex(m.snapshot->meta.index);
    b.setSnapshotTerm(m.snapshot->meta.term);
    auto v = b.initSnapshotVoters(m.snapshot->meta.voters.size());
    for (size_t i = 0; i < m.snapshot->meta.voters.size(); i++) v.set(i, m.snapshot->meta.voters[i]);
    b.setSnapshotData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(m.snapshot->data.data()),
                                   m.snapshot->data.size()));
  }
}

// Copies `from` to `to` and makes the copy durable.
void copyFile(const std::string& from, const std::string& to) {
  int in, out;
  KJ_SYSCALL(in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC), from);
  KJ_DEFER(::close(in));
  KJ_SYSCALL(out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), to);
  KJ_DEFER(::close(out));
  std::vector<char> buf(1 << 20);
  for (off_t off = 0;;) {
    ssize_t n;
    KJ_SYSCALL(n = ::pread(in, buf.data(), buf.size(), off), from);
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w;
      KJ_SYSCALL(w = ::pwrite(out, buf.data() + done, static_cast<size_t>(n - done), off + done), to);
      done += w;
    }
    off += n;
  }
  KJ_SYSCALL(::fdatasync(out), to);
}

}  // namespace

Message fromWire(proto::RaftMessage::Reader r) {
  Message m;
  KJ_REQUIRE(r.getType() <= static_cast<uint8_t>(MessageType::TIMEOUT_NOW), "bad raft message type");
  m.type = static_cast<MessageType>(r.getType());
  m.from = r.getFrom();
  m.to = r.getTo();
  m.term = r.getTerm();
  m.index = r.getIndex();
  m.logTerm = r.getLogTerm();
  m.commit = r.getCommit();
  m.reject = r.getReject();
  m.rejectHint = r.getRejectHint();
  m.context = r.getContext();
  m.transfer = r.getTransfer();
  for (auto e : r.getEntries()) {
    Entry x;
    x.term = e.getTerm();
    x.index = e.getIndex();
    KJ_REQUIRE(e.getType() <= static_cast<uint8_t>(EntryType::NOOP), "bad raft entry type");
    x.type = static_cast<EntryType>(e.getType());
    x.data.assign(reinterpret_cast<const char*>(e.getData().begin()), e.getData().size());
    m.entries.push_back(std::move(x));
  }
  if (r.getHasSnapshot()) {
    Snapshot s;
    s.meta.index = r.getSnapshotIndex();
    s.meta.term = r.getSnapshotTerm();
    for (auto v : r.getSnapshotVoters()) s.meta.voters.push_back(v);
    s.data.assign(reinterpret_cast<const char*>(r.getSnapshotData().begin()),
                  r.getSnapshotData().size());
    m.snapshot = std::move(s);
  }
  return m;
}

void RaftNode::ErrorHandler::taskFailed(kj::Exception&& e) {
  spdlog::warn("raft: {}", e.getDescription().cStr());
}

RaftNode::RaftNode(kj::AsyncIoContext& io, const ClusterSecret& secret, NodeOptions options,
                   Application& app, Metrics& metrics)
    : io_(io),
      secret_(secret),
      options_(std::move(options)),
      app_(app),
      log_(options_.dataDir + "/raft"),
      members_(options_.peers),
      tasks_(errorHandler_),
      sentMessages_(metrics.counter("cairn_raft_messages_sent_total", "Raft messages sent")),
      syncs_(metrics.counter("cairn_raft_log_syncs_total", "fsyncs of the Raft log")),
      behindSyncs_(metrics.counter("cairn_raft_log_syncs_behind_total",
                                   "fsyncs of the leader's own entries after they counted")) {
  Restored restored = log_.load();
  if (app_.storeUntrusted()) {
    // The machine went down with the store open: rebuild it from the last snapshot (which was
    // synced before the log was compacted to it) and let the log replay the rest.
    std::string snap = snapshotPath();
    struct stat st;
    bool fromSnapshot = ::stat(snap.c_str(), &st) == 0;
    std::string copy = fromSnapshot ? options_.dataDir + "/rebuild.mdb" : std::string();
    if (fromSnapshot) copyFile(snap, copy);
    app_.rebuildStore(copy);
    spdlog::warn("raft: the store was open when the machine stopped: rebuilt from {}, the log "
                 "replays from index {}",
                 fromSnapshot ? snap : std::string("nothing"), app_.appliedIndex() + 1);
  }
  restored.applied = app_.appliedIndex();
  if (!restored.entries.empty() && restored.entries.back().index > restored.applied)
    spdlog::info("raft: the store holds the log up to index {}; entries up to {} are applied "
                 "again once committed",
                 restored.applied, restored.entries.back().index);
  Index logStart = restored.snapshot ? restored.snapshot->index + 1 : 1;
  KJ_REQUIRE(restored.applied + 1 >= logStart,
             "the store is behind the start of the Raft log: restore the data directory from a "
             "backup, or remove it to rejoin as an empty member",
             restored.applied, logStart);
  Config cfg;
  cfg.id = options_.id;
  for (auto& [id, addr] : options_.peers) cfg.voters.push_back(id);
  cfg.electionTicks = options_.electionTicks;
  cfg.heartbeatTicks = options_.heartbeatTicks;
  uint64_t seed;
  randombytes_buf(&seed, sizeof(seed));
  cfg.seed = seed;
  core_ = std::make_unique<Core>(cfg, restored);
  // What a crash of the process left in the page cache is made durable before it counts.
  log_.sync();
  written_ = durable_ = core_->lastIndex();
  savedHard_ = restored.hardState;
  metrics.gauge("cairn_raft_term", "Current Raft term", [this]() { return double(core_->term()); });
  metrics.gauge("cairn_raft_commit_index", "Raft commit index",
                [this]() { return double(core_->commitIndex()); });
  metrics.gauge("cairn_raft_applied_index", "Raft applied index",
                [this]() { return double(core_->appliedIndex()); });
  metrics.gauge("cairn_raft_log_written_index", "Last Raft log index written",
                [this]() { return double(written_); });
  metrics.gauge("cairn_raft_log_durable_index", "Last Raft log index on stable storage",
                [this]() { return double(durable_); });
  metrics.gauge("cairn_raft_is_leader", "1 on the leader",
                [this]() { return core_->role() == Role::LEADER ? 1.0 : 0.0; });
  spdlog::info("raft: node {} restored term {} commit {} applied {} log {}..{}", options_.id,
               restored.hardState.term, restored.hardState.commit, restored.applied,
               core_->firstIndex(), core_->lastIndex());
}

RaftNode::~RaftNode() {
  if (snapshotThread_.joinable()) snapshotThread_.join();
}

void RaftNode::start() {
  tasks_.add(tickLoop());
  schedule();
}

std::string RaftNode::leaderAddr() const {
  auto it = members_.find(core_->leader());
  return it == members_.end() ? std::string() : it->second;
}

void RaftNode::learnMember(NodeId id, const std::string& addr) {
  if (id != 0 && !addr.empty() && addr.size() <= 256 && !members_.count(id)) setMember(id, addr);
}

void RaftNode::setMember(NodeId id, const std::string& addr) {
  if (members_[id] != addr) {
    members_[id] = addr;
    peers_.erase(id);
  }
}

kj::Promise<void> RaftNode::tickLoop() {
  return io_.provider->getTimer().afterDelay(options_.tick).then([this]() {
    core_->tick();
    process();
    return tickLoop();
  });
}

void RaftNode::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
  // Group commit: run once every event already queued has run (requests read from sockets
  // while the last batch was syncing included), so that one log sync covers all their
  // proposals rather than the first alone.
  tasks_.add(kj::evalLast([this]() {
    scheduled_ = false;
    process();
  }));
}

std::optional<std::pair<Index, Term>> RaftNode::propose(const std::string& data) {
  if (!core_->propose(data)) return std::nullopt;
  schedule();
  return std::make_pair(core_->lastIndex(), core_->term());
}

std::optional<std::pair<Index, Term>> RaftNode::proposeConfigChange(NodeId node, bool add) {
  if (!core_->proposeConfigChange(node, add)) return std::nullopt;
  schedule();
  return std::make_pair(core_->lastIndex(), core_->term());
}

void RaftNode::transferLeadership(NodeId to) {
  core_->transferLeadership(to);
  schedule();
}

kj::Promise<void> RaftNode::linearizableRead() {
  if (!isLeader()) {
    return KJ_EXCEPTION(DISCONNECTED, "not the leader");
  }
  // A lone voter answers at once, ahead of the batch of writes now waiting for their sync.
  if (core_->readsLocally()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  unbatchedReads_.push_back(kj::mv(paf.fulfiller));
  schedule();
  return kj::mv(paf.promise);
}

void RaftNode::receive(std::vector<Message> messages) {
  for (auto& m : messages) {
    if (m.to != options_.id) continue;
    core_->step(m);
  }
  schedule();
}

void RaftNode::receiveSnapshotChunk(const Message& header, uint64_t offset,
                                    kj::ArrayPtr<const kj::byte> data, bool last) {
  std::string path = options_.dataDir + "/incoming.mdb";
  KJ_REQUIRE(offset == 0 || offset == incomingBytes_, "snapshot pieces out of order", offset);
  int fd;
  KJ_SYSCALL(fd = ::open(path.c_str(), O_WRONLY | O_CREAT | (offset == 0 ? O_TRUNC : 0) | O_CLOEXEC,
                         0600));
  KJ_DEFER(::close(fd));
  for (size_t done = 0; done < data.size();) {
    ssize_t n;
    KJ_SYSCALL(n = ::pwrite(fd, data.begin() + done, data.size() - done, offset + done));
    done += n;
  }
  incomingBytes_ = offset + data.size();
  if (!last) return;
  KJ_SYSCALL(fdatasync(fd));
  Message m = header;
  KJ_REQUIRE(m.snapshot.has_value(), "snapshot header without snapshot");
  m.snapshot->data = path;  // locally: where the received copy lies
  receive({m});
}

kj::Promise<void> RaftNode::streamSnapshot(Peer& peer, Message header, uint64_t offset) {
  constexpr size_t PIECE = 4 << 20;
  std::string path = snapshotPath();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return KJ_EXCEPTION(FAILED, "no snapshot to send", path);
  auto buf = kj::heapArray<kj::byte>(PIECE);
  ssize_t n = ::pread(fd, buf.begin(), PIECE, static_cast<off_t>(offset));
  struct stat st;
  fstat(fd, &st);
  ::close(fd);
  if (n < 0) return KJ_EXCEPTION(FAILED, "cannot read snapshot", path);
  bool last = offset + static_cast<uint64_t>(n) >= static_cast<uint64_t>(st.st_size);
  return peer.get().then([this, header, offset, n, last, buf = kj::mv(buf)](capnp::Capability::Client cap) mutable {
    auto req = cap.castAs<proto::MetaPeer>().snapshotChunkRequest();
    toWire(header, req.initHeader(), options_.selfAddr);
    req.setOffset(offset);
    req.setData(buf.slice(0, static_cast<size_t>(n)));
    req.setLast(last);
    return req.send().ignoreResult();
  }).then([this, &peer, header, offset, n, last]() mutable -> kj::Promise<void> {
    if (last) return kj::READY_NOW;
    return streamSnapshot(peer, kj::mv(header), offset + static_cast<uint64_t>(n));
  });
}

void RaftNode::sendAll(std::vector<Message>& messages) {
  std::map<NodeId, std::vector<Message*>> byPeer;
  for (auto& m : messages) {
    if (m.type == MessageType::SNAPSHOT) {
      // Snapshots are streamed from the file, one at a time per follower.
      auto addr = members_.find(m.to);
      if (addr == members_.end() || streaming_[m.to]) continue;
      auto& peer = peers_[m.to];
      if (!peer) peer = std::make_unique<Peer>(io_, secret_, addr->second, proto::Role::PEER);
      streaming_[m.to] = true;
      NodeId to = m.to;
      spdlog::info("raft: sending snapshot at index {} to node {}", m.snapshot->meta.index, to);
      Peer* p = peer.get();
      tasks_.add(io_.provider->getTimer().timeoutAfter(120 * kj::SECONDS, streamSnapshot(*p, m, 0)).then(
          [this, to]() { streaming_[to] = false; },
          [this, to, p](kj::Exception&& e) {
            streaming_[to] = false;
            p->reset();
            spdlog::warn("raft: snapshot to node {} failed: {}", to, e.getDescription().cStr());
          }));
      continue;
    }
    byPeer[m.to].push_back(&m);
  }
  for (auto& [to, list] : byPeer) {
    auto addr = members_.find(to);
    if (addr == members_.end()) continue;
    auto& peer = peers_[to];
    if (!peer) {
      PeerOptions po;
      po.connectTimeout = 1 * kj::SECONDS;
      po.maxBackoff = 500 * kj::MILLISECONDS;
      peer = std::make_unique<Peer>(io_, secret_, addr->second, proto::Role::PEER, po);
    }
    if (outstanding_[to] >= MAX_OUTSTANDING_PER_PEER) continue;  // Raft tolerates loss
    auto msg = kj::heap<capnp::MallocMessageBuilder>();
    auto root = msg->initRoot<proto::MetaPeer::RaftParams>();
    auto out = root.initMessages(list.size());
    for (size_t i = 0; i < list.size(); i++) toWire(*list[i], out[i], options_.selfAddr);
    sentMessages_.inc(list.size());
    outstanding_[to]++;
    Peer* p = peer.get();
    NodeId id = to;
    // A peer behind a dead link never answers: bound every call, and start a fresh
    // connection after a timeout, so the window of outstanding calls never stays full.
    auto call = p->get().then([msg = kj::mv(msg)](capnp::Capability::Client cap) mutable {
      auto req = cap.castAs<proto::MetaPeer>().raftRequest();
      req.setMessages(msg->getRoot<proto::MetaPeer::RaftParams>().getMessages());
      return req.send().ignoreResult();
    });
    tasks_.add(io_.provider->getTimer()
                   .timeoutAfter(2 * kj::SECONDS, kj::mv(call))
                   .then([this, id]() { outstanding_[id]--; },
                         [this, id, p](kj::Exception&& e) {
                           outstanding_[id]--;
                           p->reset();
                         }));
  }
}

void RaftNode::process() {
  // Reads that arrived since the last turn share one ReadIndex round.
  if (!unbatchedReads_.empty()) {
    if (!isLeader()) {
      for (auto& f : unbatchedReads_) f->reject(KJ_EXCEPTION(DISCONNECTED, "not the leader"));
      unbatchedReads_.clear();
    } else {
      uint64_t ctx = ++readCtx_;
      core_->readIndex(ctx);
      readBatches_[ctx] = kj::mv(unbatchedReads_);
      unbatchedReads_.clear();
    }
  }
  while (core_->hasReady()) {
    Ready rd = core_->ready();
    if (rd.snapshot) {
      // A snapshot from the leader (received into a local file) replaces our state machine and
      // log; a copy stays as our own snapshot for followers behind us.
      std::string path = rd.snapshot->data;
      // A copy (not a link: the store writes its file in place) stays as our snapshot.
      std::string keep = snapshotPath() + ".tmp";
      copyFile(path, keep);
      app_.installSnapshot(path);
      KJ_SYSCALL(::rename(keep.c_str(), snapshotPath().c_str()));
      log_.resetTo(rd.snapshot->meta);
      logEpoch_++;
      written_ = durable_ = rd.snapshot->meta.index;
      spdlog::info("raft: installed snapshot at index {} term {}", rd.snapshot->meta.index,
                   rd.snapshot->meta.term);
    }
    // The leader's own new entries count as persisted once written, before they reach the
    // disk, and a sync on a thread of its own follows them (syncBehind). A follower syncs
    // before it acknowledges, and a new term or vote is synced before anything is sent, as
    // Raft has it. So an entry the leader commits is on stable storage on a majority but
    // perhaps the leader, and in the page cache of the leader: it survives the crash of any
    // minority of machines and of every meta process; what a power loss of the leader's
    // machine within one sync can take is only what no client asked to be durable, because
    // fsync() waits for the sync (whenDurable) and so does every command that others act on
    // (see StateMachine::mayAnswerBeforeDurable).
    bool hardChange = rd.hardState && (rd.hardState->term != savedHard_.term ||
                                       rd.hardState->vote != savedHard_.vote);
    bool behind = rd.mustSync && isLeader() && !rd.snapshot && !hardChange;
    if (!rd.entries.empty() && rd.entries.front().index <= written_) {
      logEpoch_++;  // stored entries are replaced
      durable_ = std::min(durable_, rd.entries.front().index - 1);
    }
    log_.save(rd.entries, rd.hardState ? &*rd.hardState : nullptr, rd.mustSync && !behind);
    if (!rd.entries.empty()) written_ = rd.entries.back().index;
    if (rd.hardState) savedHard_ = *rd.hardState;
    if (rd.mustSync && !behind) {
      syncs_.inc();
      durable_ = written_;
      releaseDurable();
    }
    sendAll(rd.messages);
    if (!rd.committed.empty()) app_.apply(rd.committed);
    for (auto& r : rd.reads) {
      auto it = readBatches_.find(r.ctx);
      if (it == readBatches_.end()) continue;
      for (auto& f : it->second) confirmedReads_.emplace_back(r.index, kj::mv(f));
      readBatches_.erase(it);
    }
    core_->advance(rd);
  }
  // Confirmed reads are answered once applied.
  Index applied = core_->appliedIndex();
  for (auto it = confirmedReads_.begin(); it != confirmedReads_.end();) {
    if (it->first <= applied) {
      it->second->fulfill();
      it = confirmedReads_.erase(it);
    } else {
      ++it;
    }
  }
  bool leader = isLeader();
  if (!leader && (!readBatches_.empty() || !confirmedReads_.empty())) {
    for (auto& [ctx, list] : readBatches_)
      for (auto& f : list) f->reject(KJ_EXCEPTION(DISCONNECTED, "leadership lost"));
    readBatches_.clear();
    for (auto& [idx, f] : confirmedReads_) f->reject(KJ_EXCEPTION(DISCONNECTED, "leadership lost"));
    confirmedReads_.clear();
  }
  if (leader != wasLeader_) {
    wasLeader_ = leader;
    spdlog::info("raft: node {} is {} in term {}", options_.id, roleName(core_->role()),
                 core_->term());
    app_.roleChanged(leader);
  }
  if (written_ > durable_) syncBehind(!durableWaiters_.empty());
  maybeCompact();
}

kj::Promise<void> RaftNode::whenDurable(Index index) {
  if (index <= durable_) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  durableWaiters_.emplace(index, kj::mv(paf.fulfiller));
  syncBehind(true);
  return kj::mv(paf.promise);
}

void RaftNode::releaseDurable() {
  while (!durableWaiters_.empty() && durableWaiters_.begin()->first <= durable_) {
    durableWaiters_.begin()->second->fulfill();
    durableWaiters_.erase(durableWaiters_.begin());
  }
}

void RaftNode::syncNow() {
  log_.sync();
  syncs_.inc();
  durable_ = written_;
  releaseDurable();
}

void RaftNode::syncBehind(bool now) {
  if (syncRunning_ || written_ <= durable_) return;
  if (!now && options_.logSyncDelay > 0 * kj::MILLISECONDS) {
    if (syncTimerSet_) return;
    syncTimerSet_ = true;
    tasks_.add(io_.provider->getTimer().afterDelay(options_.logSyncDelay).then([this]() {
      syncTimerSet_ = false;
      syncBehind(true);
    }));
    return;
  }
  int fd = log_.duplicateTail();
  if (fd < 0) return syncNow();
  syncRunning_ = true;
  Index target = written_;
  uint64_t epoch = logEpoch_;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<int>();
  auto done = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<int>>>(kj::mv(paf.fulfiller));
  syncer_.submit([fd, done]() {
    int err = ::fdatasync(fd) == 0 ? 0 : errno;
    ::close(fd);
    (*done)->fulfill(kj::mv(err));
  });
  tasks_.add(paf.promise.then([this, target, epoch](int err) {
    syncRunning_ = false;
    if (err != 0) {
      // Never retried and forgotten (as in LogStore): stop, and recover from what is durable.
      spdlog::critical("raft log: fdatasync behind the leader failed: {}", strerror(err));
      abort();
    }
    syncs_.inc();
    behindSyncs_.inc();
    if (epoch == logEpoch_) durable_ = std::max(durable_, target);
    releaseDurable();
    if (written_ > durable_) syncBehind(!durableWaiters_.empty());
  }));
}

void RaftNode::maybeCompact() {
  if (snapshotting_) return;
  Index applied = core_->appliedIndex();
  if (applied < core_->snapshotIndex() + options_.snapshotEvery) return;
  // The copy (the whole store, compacted, and a sync of it: a second or more for a large store)
  // is written on a thread of its own, as commits go on (LMDB copies from a read transaction);
  // the log is compacted up to what it holds once it is done.
  if (snapshotThread_.joinable()) snapshotThread_.join();
  snapshotting_ = true;
  snapshotDone_ = false;
  std::string tmp = snapshotPath() + ".new";
  snapshotThread_ = std::thread([this, tmp]() {
    try {
      snapshotAt_ = app_.writeSnapshot(tmp);
    } catch (const kj::Exception& e) {
      snapshotAt_ = 0;
      snapshotError_ = e.getDescription().cStr();
    } catch (const std::exception& e) {
      snapshotAt_ = 0;
      snapshotError_ = e.what();
    }
    snapshotDone_ = true;
  });
  tasks_.add(snapshotWritten(std::chrono::steady_clock::now()));
}

kj::Promise<void> RaftNode::snapshotWritten(std::chrono::steady_clock::time_point started) {
  return io_.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).then([this, started]() {
    if (!snapshotDone_) return snapshotWritten(started);
    snapshotThread_.join();
    snapshotting_ = false;
    std::string tmp = snapshotPath() + ".new";
    Index at = snapshotAt_;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started).count();
    if (at == 0) {
      ::unlink(tmp.c_str());
      spdlog::error("raft: writing a snapshot failed after {} ms: {}; the log is kept whole",
                    ms, snapshotError_);
      return kj::Promise<void>(kj::READY_NOW);
    }
    // A snapshot from the leader installed meanwhile may have taken us past this copy.
    auto term = at > core_->snapshotIndex() ? core_->termAt(at) : std::nullopt;
    if (!term) {
      ::unlink(tmp.c_str());
      return kj::Promise<void>(kj::READY_NOW);
    }
    // The log holds everything up to the copy on disk before the copy counts: a machine
    // restarted from them never finds its state machine past its log.
    if (durable_ < at) syncNow();
    KJ_SYSCALL(::rename(tmp.c_str(), snapshotPath().c_str()));
    SnapshotMeta meta{at, *term, core_->votersAt(at)};
    log_.saveSnapshot(meta);
    core_->compact(at);
    spdlog::info("raft: snapshot at index {} written in {} ms, log compacted", at, ms);
    return kj::Promise<void>(kj::READY_NOW);
  });
}

}  // namespace cairn::raft
