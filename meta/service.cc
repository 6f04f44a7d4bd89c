#include "meta/service.h"

#include "meta/fsck.h"

#include <capnp/serialize.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <cerrno>
#include <set>

#include "rpc/runtime.h"

namespace cairn::meta {

namespace {

const char* opName(proto::MetaRequest::Op::Which w) {
  using W = proto::MetaRequest::Op::Which;
  switch (w) {
    case W::LOOKUP: return "lookup";
    case W::GETATTR: return "getattr";
    case W::SETATTR: return "setattr";
    case W::MKNOD: return "mknod";
    case W::SYMLINK: return "symlink";
    case W::LINK: return "link";
    case W::UNLINK: return "unlink";
    case W::RMDIR: return "rmdir";
    case W::RENAME: return "rename";
    case W::READLINK: return "readlink";
    case W::READDIR: return "readdir";
    case W::STATFS: return "statfs";
    case W::SETXATTR: return "setxattr";
    case W::GETXATTR: return "getxattr";
    case W::LISTXATTR: return "listxattr";
    case W::REMOVEXATTR: return "removexattr";
    case W::CHUNK_GET: return "chunk_get";
    case W::CHUNK_LIST: return "chunk_list";
    case W::COMMIT_WRITE: return "commit_write";
    case W::REGISTER_SERVER: return "register_server";
    case W::HEARTBEAT: return "heartbeat";
    case W::STATUS: return "status";
    case W::CLUSTER_INFO: return "cluster_info";
    case W::SET_KEY_CHECK: return "set_key_check";
    case W::META_STATUS: return "meta_status";
    case W::META_ADD: return "meta_add";
    case W::META_REMOVE: return "meta_remove";
    case W::META_TRANSFER: return "meta_transfer";
    case W::FORMAT: return "format";
    case W::CHUNK_FAIL: return "chunk_fail";
    case W::CHUNK_REPAIR: return "chunk_repair";
    case W::CHUNK_CORRUPT: return "chunk_corrupt";
    case W::SERVER_DRAIN: return "server_drain";
    case W::CHUNK_ORPHANS: return "chunk_orphans";
    case W::SET_REPLICAS: return "set_replicas";
    case W::QUOTA_SET: return "quota_set";
    case W::QUOTA_GET: return "quota_get";
    case W::STATFS_AT: return "statfs_at";
    case W::META_DUMP: return "meta_dump";
    case W::FSCK_FIX: return "fsck_fix";
    case W::REBALANCE: return "rebalance";
    case W::REBALANCE_PLAN: return "rebalance_plan";
    case W::REPAIR_PAUSE: return "repair_pause";
    case W::WATCH: return "watch";
    case W::LOCK: return "lock";
    case W::LOCK_TEST: return "lock_test";
    case W::SESSION_END: return "session_end";
    case W::SESSION_START: return "session_start";
    case W::OPEN_FILE: return "open_file";
    case W::RECLAIM: return "reclaim";
    case W::PUNCH: return "punch";
    case W::OFFER_FLOOR: return "offer_floor";
    case W::SYNC: return "sync";
    case W::ID_GAP: return "id_gap";
  }
  return "unknown";
}

}  // namespace

MetaServer::MetaServer(Store& store, Metrics& metrics, ServerTimeouts timeouts, Format format)
    : store_(store),
      sm_(store),
      metrics_(metrics),
      timeouts_(timeouts),
      format_(format),
      rng_(std::random_device{}()),
      applied_(metrics.counter("cairn_meta_commands_total", "Commands applied")),
      applyLatency_(metrics.histogram("cairn_meta_apply_seconds",
                                      "Time to apply one batch of committed commands")),
      commitLatency_(metrics.histogram("cairn_meta_store_commit_seconds",
                                       "Time to commit one LMDB transaction of applied commands")),
      storeCommits_(metrics.counter("cairn_meta_store_commits_total",
                                    "LMDB commits of applied commands (each holds one or more)")) {
  // Copies made for a cairn fsck that this process did not finish serving.
  if (DIR* d = ::opendir(store_.dir().c_str())) {
    while (auto* e = ::readdir(d))
      if (std::string_view(e->d_name).starts_with("fsck-dump-"))
        ::unlink((store_.dir() + "/" + e->d_name).c_str());
    ::closedir(d);
  }
  metrics.gauge("cairn_meta_chunk_servers_online", "Chunk servers heard from recently", [this]() {
    double n = 0;
    for (auto& [id, l] : live_) n += std::string(stateOf(id)) == "online" ? 1 : 0;
    return n;
  });
}

void MetaServer::attach(raft::RaftNode& node) {
  node_ = &node;
  Txn t = store_.reader();
  for (Cursor c(t, store_.members, "", ""); c.valid(); c.next())
    node.setMember(readBe64(c.key()), std::string(c.value()));
}

MetaServer::Reply MetaServer::errorReply(int err) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  reply->initRoot<proto::MetaReply>().setErr(err);
  return reply;
}

MetaServer::Reply MetaServer::notLeader() {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  r.setErr(EAGAIN);
  auto addr = node_->leaderAddr();
  if (node_->leaderId() != node_->id()) r.setLeader(addr);
  return reply;
}

const char* MetaServer::stateOf(uint32_t id) const {
  auto it = live_.find(id);
  if (it == live_.end() || !it->second.seen) {
    // Not heard from since this server became leader: only silence for a whole dead-after
    // period makes it dead, or a new leader would start repairs (and end a rebalance) before
    // the first heartbeats arrive.
    return std::chrono::steady_clock::now() - leaderSince_ < timeouts_.deadAfter ? "suspect"
                                                                                 : "dead";
  }
  auto age = std::chrono::steady_clock::now() - it->second.lastBeat;
  if (age < timeouts_.suspectAfter) {
    auto s = servers_.find(id);
    return s != servers_.end() && s->second.draining ? "draining" : "online";
  }
  if (age < timeouts_.deadAfter) return "suspect";
  return "dead";
}

kj::Promise<MetaServer::Reply> MetaServer::handle(proto::MetaRequest::Reader request) {
  using W = proto::MetaRequest::Op::Which;
  auto which = request.getOp().which();
  if (which == W::META_STATUS) return metaStatus();
  if (which == W::META_DUMP) {
    auto d = request.getOp().getMetaDump();
    return dump(d.getToken(), d.getOffset());
  }
  if (!node_->isLeader()) return notLeader();
  {
    Txn t = store_.reader();
    if (!sm_.isFormatted(t)) return errorReply(EAGAIN);  // the first leader is formatting
  }
  switch (which) {
    case W::HEARTBEAT:
      return heartbeat(request);
    case W::STATUS:
      return afterRead([this]() { return status(); });
    case W::STATFS:
      return afterRead([this]() { return statfs(0); });
    case W::STATFS_AT: {
      uint64_t ino = request.getOp().getStatfsAt();
      return afterRead([this, ino]() { return statfs(ino); });
    }
    case W::META_ADD:
      return metaAdd(request);
    case W::SYNC:
      return node_->whenDurable(node_->writtenIndex()).then([]() { return errorReply(0); });
    case W::WATCH:
      return watch(request);
    case W::OPEN_FILE:
      return openFile(request);
    case W::MKNOD:
      if (request.getOp().getMknod().getOpenGen() != 0) return createAndOpen(request);
      return propose(request, {});
    case W::REBALANCE_PLAN: {
      double tolerance = request.getOp().getRebalancePlan();
      return afterRead([this, tolerance]() { return rebalancePlanReply(tolerance); });
    }
    case W::META_REMOVE: {
      uint64_t id = request.getOp().getMetaRemove();
      if (id == node_->id() && node_->core().voters().size() > 1) {
        // Hand over first; the new leader removes us.
        return errorReply(EBUSY);
      }
      return waitFor(node_->proposeConfigChange(id, false));
    }
    case W::META_TRANSFER:
      node_->transferLeadership(request.getOp().getMetaTransfer());
      return errorReply(0);
    case W::FORMAT:
      return errorReply(EPERM);  // only the leader itself proposes it
    case W::CHUNK_GET: {
      auto g = request.getOp().getChunkGet();
      if (!g.getAllocate()) {
        auto copy = kj::heap<capnp::MallocMessageBuilder>();
        copy->setRoot(request);
        return afterRead([this, copy = kj::mv(copy)]() mutable {
          return readOnly(copy->getRoot<proto::MetaRequest>());
        });
      }
      std::vector<uint32_t> placement;
      bool exists;
      {
        Txn t = store_.reader();
        exists = store_.getChunk(t, g.getIno(), g.getIndex()).has_value();
        if (!exists) placement = place(t, sm_.replicas(t));
      }
      if (exists) {
        auto copy = kj::heap<capnp::MallocMessageBuilder>();
        copy->setRoot(request);
        return afterRead([this, copy = kj::mv(copy)]() mutable {
          return readOnly(copy->getRoot<proto::MetaRequest>());
        });
      }
      if (placement.empty()) {
        // No chunk server online yet (just started, or all down): the client waits and retries.
        return errorReply(EAGAIN);
      }
      return propose(request, kj::mv(placement));
    }
    default:
      if (StateMachine::isMutation(request)) return propose(request, {});
      auto copy = kj::heap<capnp::MallocMessageBuilder>();
      copy->setRoot(request);
      return afterRead([this, copy = kj::mv(copy)]() mutable {
        return readOnly(copy->getRoot<proto::MetaRequest>());
      });
  }
}

kj::Promise<MetaServer::Reply> MetaServer::dump(uint64_t token, uint64_t offset) {
  constexpr uint64_t PIECE = 4 << 20;
  auto now = std::chrono::steady_clock::now();
  for (auto it = dumps_.begin(); it != dumps_.end();) {
    if (now - it->second.lastUse > std::chrono::minutes(10)) {
      ::unlink(it->second.path.c_str());
      it = dumps_.erase(it);
    } else {
      ++it;
    }
  }
  auto piece = [this, PIECE](uint64_t token, uint64_t offset) -> Reply {
    auto it = dumps_.find(token);
    if (it == dumps_.end()) return errorReply(ENOENT);
    auto& d = it->second;
    d.lastUse = std::chrono::steady_clock::now();
    auto reply = kj::heap<capnp::MallocMessageBuilder>();
    auto out = reply->initRoot<proto::MetaReply>().initDump();
    out.setToken(token);
    out.setTotalBytes(d.size);
    uint64_t n = offset < d.size ? std::min(PIECE, d.size - offset) : 0;
    auto data = out.initData(n);
    int fd = ::open(d.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errorReply(EIO);
    ssize_t got = n == 0 ? 0 : ::pread(fd, data.begin(), n, static_cast<off_t>(offset));
    ::close(fd);
    if (got != static_cast<ssize_t>(n)) return errorReply(EIO);
    if (offset + n >= d.size) {
      ::unlink(d.path.c_str());
      dumps_.erase(it);
    }
    return reply;
  };
  if (token != 0) return piece(token, offset);
  if (dumps_.size() >= 4) return errorReply(EBUSY);
  randombytes_buf(&token, sizeof(token));
  token |= 1;
  std::string path = store_.dir() + "/fsck-dump-" + std::to_string(token) + ".mdb";
  auto paf = kj::newPromiseAndFulfiller<int>();
  auto fulfiller = std::make_shared<kj::Own<kj::PromiseFulfiller<int>>>(kj::mv(paf.fulfiller));
  const kj::Executor& loop = kj::getCurrentThreadExecutor();
  commitApplied();  // the copy holds every command applied before it was asked for
  MDB_env* env = store_.env();
  std::thread([env, path, fulfiller, &loop]() {
    int err = 0;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      err = errno;
    } else {
      err = mdb_env_copyfd2(env, fd, MDB_CP_COMPACT);
      ::close(fd);
    }
    loop.executeSync([fulfiller, err]() {
      auto f = kj::mv(*fulfiller);  // fulfilled and destroyed on the event loop's thread
      f->fulfill(int(err));
    });
  }).detach();
  return paf.promise.then([this, token, path, piece](int err) {
    struct stat st;
    if (err != 0 || ::stat(path.c_str(), &st) != 0) {
      spdlog::error("fsck dump: copying the store to {} failed: {}", path, mdb_strerror(err));
      ::unlink(path.c_str());
      return errorReply(EIO);
    }
    spdlog::info("fsck dump: a copy of the store ({} bytes) for cairn fsck", st.st_size);
    dumps_[token] = Dump{path, uint64_t(st.st_size), std::chrono::steady_clock::now()};
    return piece(token, 0);
  });
}

kj::Promise<MetaServer::Reply> MetaServer::afterRead(kj::Function<Reply()> read) {
  return node_->linearizableRead().then(
      [read = kj::mv(read)]() mutable { return read(); },
      [this](kj::Exception&&) { return notLeader(); });
}

MetaServer::Reply MetaServer::readOnly(proto::MetaRequest::Reader request) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  Txn t = store_.reader();
  sm_.read(t, request, reply->initRoot<proto::MetaReply>());
  return reply;
}

kj::Promise<MetaServer::Reply> MetaServer::propose(proto::MetaRequest::Reader request,
                                                   std::vector<uint32_t> placement) {
  capnp::MallocMessageBuilder cmd;
  auto root = cmd.initRoot<proto::Command>();
  root.setTimeNs(wallClockNs());
  root.setGcGraceNs(std::chrono::duration_cast<std::chrono::nanoseconds>(timeouts_.gcGrace).count());
  root.setRequest(request);
  auto p = root.initPlacement(placement.size());
  for (size_t i = 0; i < placement.size(); i++) p.set(i, placement[i]);
  auto words = capnp::messageToFlatArray(cmd);
  std::string data(reinterpret_cast<const char*>(words.begin()), words.size() * 8);
  return waitFor(node_->propose(data));
}

kj::Promise<MetaServer::Reply> MetaServer::waitFor(
    std::optional<std::pair<raft::Index, raft::Term>> at) {
  if (!at) return notLeader();
  auto paf = kj::newPromiseAndFulfiller<Reply>();
  pending_[at->first] = Pending{at->second, kj::mv(paf.fulfiller)};
  return kj::mv(paf.promise);
}

void MetaServer::failPending(int err) {
  for (auto& [idx, p] : pending_) {
    auto reply = errorReply(err);
    p.fulfiller->fulfill(kj::mv(reply));
  }
  pending_.clear();
}

void MetaServer::apply(const std::vector<raft::Entry>& entries) {
  ScopedLatency latency(applyLatency_);
  struct Answer {
    const raft::Entry* entry;
    Reply reply;
    bool durable;  // answered only once the entry is on stable storage
  };
  std::vector<Answer> replies;
  std::vector<std::pair<uint64_t, std::string>> newMembers;
  Txn& t = store_.writer();
  try {
    for (auto& e : entries) {
      Reply reply = kj::heap<capnp::MallocMessageBuilder>();
      bool durable = true;
      if (e.type == raft::EntryType::NORMAL) {
        KJ_ASSERT(e.data.size() % 8 == 0, "misaligned command", e.index);
        auto words = kj::heapArray<capnp::word>(e.data.size() / 8);
        memcpy(words.begin(), e.data.data(), e.data.size());
        capnp::FlatArrayMessageReader msg(words, rpcReaderOptions());
        auto cmd = msg.getRoot<proto::Command>();
        auto changes = ChangeFeed::changesOf(store_, t, cmd.getRequest());
        sm_.apply(t, cmd, *reply);
        if (!changes.empty() && reply->getRoot<proto::MetaReply>().getErr() == 0)
          feed_.append(kj::mv(changes));
        durable = !StateMachine::mayAnswerBeforeDurable(cmd.getRequest());
        auto op = cmd.getRequest().getOp();
        if (op.isMetaAdd())
          newMembers.emplace_back(op.getMetaAdd().getId(), op.getMetaAdd().getAddr().cStr());
        if (op.isFormat())
          for (auto m : op.getFormat().getMembers())
            newMembers.emplace_back(m.getId(), m.getAddr().cStr());
        applied_.inc();
      } else {
        reply->initRoot<proto::MetaReply>();
      }
      store_.putCounter(t, "applied", e.index);
      replies.push_back(Answer{&e, kj::mv(reply), durable});
    }
  } catch (const std::exception& e) {
    // The open transaction also holds earlier commands, answered already: dropping it would
    // take back changes the clients were told are made. Stop; a restart applies the log again.
    spdlog::critical("applying Raft entries {} to {}: {}", entries.front().index,
                     entries.back().index, e.what());
    std::abort();
  }
  uncommitted_ += entries.size();
  scheduleCommit();
  for (auto& [id, addr] : newMembers) node_->setMember(id, addr);
  wakeWatchers();
  for (auto& [e, reply, durable] : replies) {
    auto it = pending_.find(e->index);
    if (it == pending_.end()) continue;
    if (it->second.term == e->term && durable && node_->durableIndex() < e->index) {
      heldAnswers_.add(node_->whenDurable(e->index).then(
          [f = kj::mv(it->second.fulfiller), reply = kj::mv(reply)]() mutable {
            f->fulfill(kj::mv(reply));
          }));
    } else if (it->second.term == e->term) {
      it->second.fulfiller->fulfill(kj::mv(reply));
    } else {
      // Our proposal was replaced by another leader's entry: the client retries, and the
      // retry is answered from the reply memory if it did commit after all.
      it->second.fulfiller->fulfill(errorReply(EAGAIN));
    }
    pending_.erase(it);
  }
}

void MetaServer::scheduleCommit() {
  if (!io_) {  // replaying the log at start, before any request is served
    commitApplied();
    return;
  }
  if (commitScheduled_ && uncommitted_ < MAX_UNCOMMITTED) return;
  commitScheduled_ = true;
  // Never from inside apply(): a request being served up the stack may read in the open
  // transaction.
  auto delay = uncommitted_ >= MAX_UNCOMMITTED ? 0 * kj::MILLISECONDS : COMMIT_DELAY;
  heldAnswers_.add(io_->provider->getTimer().afterDelay(delay).then([this]() {
    if (commitScheduled_) commitApplied();
  }));
}

void MetaServer::commitApplied() {
  commitScheduled_ = false;
  if (uncommitted_ == 0) return;
  ScopedLatency latency(commitLatency_);
  try {
    store_.commitWrites();
  } catch (const std::exception& e) {
    // What it held was answered: the Raft log still has it, and a restart applies it again.
    spdlog::critical("committing {} applied commands to the store: {}", uncommitted_, e.what());
    std::abort();
  }
  storeCommits_.inc();
  uncommitted_ = 0;
}

raft::Index MetaServer::appliedIndex() {
  Txn t = store_.reader();
  return store_.getCounter(t, "applied");
}

raft::Index MetaServer::writeSnapshot(const std::string& path) { return store_.copyTo(path); }

void MetaServer::installSnapshot(const std::string& path) {
  failPending(EAGAIN);
  store_.replaceWith(path);
  Txn t = store_.reader();
  for (Cursor c(t, store_.members, "", ""); c.valid(); c.next())
    node_->setMember(readBe64(c.key()), std::string(c.value()));
}

void MetaServer::roleChanged(bool leader) {
  if (!leader) {
    failPending(EAGAIN);
    for (auto& w : watchers_)
      if (w.fulfiller->isWaiting()) w.fulfiller->fulfill();  // answered: not the leader
    watchers_.clear();
    sessions_.clear();
    live_.clear();
    handedOut_.clear();
    orphanSeen_.clear();
    repairQueue_ = 0;  // only the leader plans repairs
    return;
  }
  leaderSince_ = std::chrono::steady_clock::now();
  if (rebuilt_) {
    // Our machine went down: the log we restarted from may lack its last entries, answered
    // before the sync behind them (a create's inode, an allocated chunk). Their ids must not
    // come back for other files.
    rebuilt_ = false;
    constexpr uint64_t GAP = uint64_t(1) << 24;
    spdlog::warn("meta: the store was rebuilt after the machine went down: inode and chunk ids "
                 "jump {} ahead", GAP);
    capnp::MallocMessageBuilder req;
    req.initRoot<proto::MetaRequest>().getOp().setIdGap(GAP);
    repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {}).ignoreResult());
  }
  // A feed of its own for this leadership: clients watching see a new epoch and tell this
  // leader their open files again.
  feed_ = ChangeFeed(newEpoch(), 65536);
  {
    // Clients holding locks get a whole session timeout to reach this leader; one that never
    // does (it died meanwhile) loses its locks then.
    Txn t = store_.reader();
    for (auto client : sm_.lockHolders(t)) {
      auto& s = sessions_[client];
      s.host = "?";
      s.mount = "(holds locks; not heard from by this leader yet)";
      s.lastSeen = leaderSince_;
    }
    // Sessions of the previous leader: until each tells us its open files (or expires),
    // no unlinked file is reclaimed.
    for (auto& info : sm_.sessions(t)) {
      auto& s = sessions_[info.client];
      s.host = info.host;
      s.mount = info.mount + " (not heard from by this leader yet)";
      s.lastSeen = leaderSince_;
      s.synced = false;
      s.stored = true;
    }
    reclaiming_ = false;
  }
  bool formatted;
  {
    Txn t = store_.reader();
    formatted = sm_.isFormatted(t);
  }
  if (!formatted) {
    // The first leader of a new cluster formats it, through the log like any change.
    capnp::MallocMessageBuilder req;
    auto r = req.initRoot<proto::MetaRequest>();
    auto f = r.getOp().initFormat();
    f.setChunkSizeBytes(format_.chunkSizeBytes);
    f.setReplicas(format_.replicas);
    unsigned char raw[16];
    randombytes_buf(raw, sizeof(raw));
    f.setClusterId(toHex(raw, sizeof(raw)));
    auto members = node_->members();
    auto out = f.initMembers(members.size());
    size_t i = 0;
    for (auto& [id, addr] : members) {
      out[i].setId(id);
      out[i].setAddr(addr);
      i++;
    }
    spdlog::info("formatting a new cluster (chunk size {} MiB, {} replicas)",
                 format_.chunkSizeBytes >> 20, format_.replicas);
    propose(r.asReader(), {}).detach([](kj::Exception&& e) {
      spdlog::error("format failed: {}", e.getDescription().cStr());
    });
  }
}

kj::Promise<MetaServer::Reply> MetaServer::metaAdd(proto::MetaRequest::Reader request) {
  // Record the new member's address, then add it as a voter.
  uint64_t id = request.getOp().getMetaAdd().getId();
  return propose(request, {}).then([this, id](Reply reply) -> kj::Promise<Reply> {
    if (reply->getRoot<proto::MetaReply>().getErr() != 0) return kj::mv(reply);
    return waitFor(node_->proposeConfigChange(id, true));
  });
}

void MetaServer::AnswerErrors::taskFailed(kj::Exception&& e) {
  spdlog::warn("an answer waiting for the log sync: {}", e.getDescription().cStr());
}

void MetaServer::RepairErrors::taskFailed(kj::Exception&& e) {
  spdlog::warn("repair: {}", e.getDescription().cStr());
}

void MetaServer::startRepairs(kj::AsyncIoContext& io, const ClusterSecret& secret,
                              uint64_t rateBytesPerSec, size_t maxConcurrent) {
  io_ = &io;
  secret_ = &secret;
  repairRate_ = rateBytesPerSec;
  maxRepairs_ = std::max<size_t>(1, maxConcurrent);
  repairTasks_ = kj::heap<kj::TaskSet>(repairErrors_);
  repairedChunks_ = &metrics_.counter("cairn_meta_repaired_chunks_total", "Chunks re-replicated");
  metrics_.gauge("cairn_meta_repairs_running", "Chunk repairs in progress",
                 [this]() { return double(repairing_.size()); });
  metrics_.gauge("cairn_meta_repair_queue",
                 "Chunks waiting for a copy, a trim or a move off a draining server",
                 [this]() { return double(repairQueue_); });
  repairedBytes_ = &metrics_.counter("cairn_meta_repaired_bytes_total",
                                     "Bytes copied between chunk servers by repairs");
  rebalanceMovesTotal_ = &metrics_.counter("cairn_meta_rebalance_moves_total",
                                            "Replicas moved by rebalancing");
  rebalanceBytesTotal_ = &metrics_.counter("cairn_meta_rebalance_bytes_total",
                                           "Bytes copied between chunk servers by rebalancing");
  metrics_.gauge("cairn_meta_rebalance_active", "1 while a rebalance runs", [this]() {
    Txn t = store_.reader();
    return sm_.rebalance(t).active ? 1.0 : 0.0;
  });
  metrics_.gauge("cairn_meta_rebalance_spread",
                 "Largest distance of a chunk server's used fraction from the mean (leader)",
                 [this]() { return rebalanceSpread_; });
  repairTasks_->add(repairLoop());
}

kj::Promise<void> MetaServer::repairLoop() {
  return io_->provider->getTimer().afterDelay(1 * kj::SECONDS).then([this]() {
    if (node_->isLeader()) {
      planRepairs();
      expireSessions();
      reclaimUnlinked();
      raiseOfferFloor();
    } else {
      offerMarks_.clear();
    }
    return repairLoop();
  });
}

void MetaServer::raiseOfferFloor() {
  auto now = std::chrono::steady_clock::now();
  auto window = std::max<std::chrono::steady_clock::duration>(std::chrono::seconds(10),
                                                              timeouts_.gcGrace / 2);
  uint64_t next, floor;
  {
    Txn t = store_.reader();
    next = store_.getCounter(t, "next_chunk");
    floor = store_.getCounter(t, "offer_floor");
  }
  offerMarks_.emplace_back(now, next);
  // The newest mark at least a window old: every id below it was offered before then.
  uint64_t target = 0;
  while (!offerMarks_.empty() && now - offerMarks_.front().first >= window) {
    target = offerMarks_.front().second;
    offerMarks_.pop_front();
  }
  if (target <= floor || raisingFloor_ || !repairTasks_) return;
  raisingFloor_ = true;
  capnp::MallocMessageBuilder req;
  req.initRoot<proto::MetaRequest>().getOp().setOfferFloor(target);
  repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {})
                        .then([this](Reply) { raisingFloor_ = false; },
                              [this](kj::Exception&&) { raisingFloor_ = false; }));
}

void MetaServer::refreshServers(Txn& t) {
  servers_.clear();
  for (Cursor c(t, store_.servers, "", ""); c.valid(); c.next()) {
    uint32_t id = static_cast<uint32_t>(readBe64(c.key()));
    if (auto r = store_.getServer(t, id)) servers_.emplace(id, *r);
  }
}

namespace {
bool contains(const std::vector<uint32_t>& v, uint32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}
}  // namespace

std::vector<uint32_t> MetaServer::chooseKeep(const std::vector<uint32_t>& good,
                                             uint32_t replicas) {
  // Emptiest first, then greedily the most spread: a new zone, else a new rack, else a new host.
  auto fullness = [this](uint32_t s) {
    auto it = live_.find(s);
    if (it == live_.end() || it->second.capacityBytes == 0) return 1.0;
    return double(it->second.usedBytes) / double(it->second.capacityBytes);
  };
  std::vector<uint32_t> order = good;
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return fullness(a) < fullness(b); });
  std::vector<uint32_t> keep;
  std::set<std::string> zones, racks, hosts;
  for (int tier = 0; tier < 4 && keep.size() < replicas; tier++) {
    for (auto s : order) {
      if (keep.size() >= replicas) break;
      if (contains(keep, s)) continue;
      auto& r = servers_[s];
      bool ok = tier == 3 || (!hosts.count(r.host) && (tier >= 2 || !racks.count(r.zone + "/" + r.rack)) &&
                              (tier >= 1 || !zones.count(r.zone)));
      if (!ok) continue;
      keep.push_back(s);
      zones.insert(r.zone);
      racks.insert(r.zone + "/" + r.rack);
      hosts.insert(r.host);
    }
  }
  return keep;
}

void MetaServer::planRepairs() {
  std::vector<RepairPlan> todo;
  uint32_t replicas;
  {
    Txn t = store_.reader();
    if (!sm_.isFormatted(t)) return;
    refreshServers(t);
    replicas = sm_.replicas(t);
    for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
      auto rec = Store::decodeChunk(c.value());
      std::vector<uint32_t> live, good;
      bool anyDead = false, anyDraining = false;
      for (auto s : rec.servers) {
        std::string st = stateOf(s);
        if (st == "online" || st == "draining") live.push_back(s);
        if (st == "online") good.push_back(s);
        anyDraining |= st == "draining";
        anyDead |= st == "dead";
      }
      if (live.empty()) continue;  // lost until a server holding it returns
      RepairPlan p;
      p.ino = readBe64(c.key());
      p.index = readBe64(c.key(), 8);
      p.rec = rec;
      if (good.size() < replicas) {
        // Copy once a replica is dead (not merely suspect) or draining, or the chunk was born
        // short.
        if (!anyDead && !anyDraining && rec.servers.size() >= replicas) continue;
        p.copy = true;
        p.keep = good;
      } else if (good.size() > replicas || anyDead || anyDraining) {
        p.keep = chooseKeep(good, replicas);  // drop surplus, dead and draining replicas
      } else {
        continue;
      }
      for (auto s : live)
        if (!contains(p.keep, s)) p.extra.push_back(s);
      todo.push_back(std::move(p));
    }
  }
  repairQueue_ = todo.size();
  {
    Txn t = store_.reader();
    if (sm_.repairsPaused(t)) return;
  }
  struct PlanRebalanceAfter {
    MetaServer* self;
    uint32_t replicas;
    ~PlanRebalanceAfter() { self->planRebalance(replicas); }
  } planRebalanceAfter{this, replicas};
  // Fewest good copies first; trims (which lose nothing if late) last.
  std::stable_sort(todo.begin(), todo.end(), [](const RepairPlan& a, const RepairPlan& b) {
    if (a.copy != b.copy) return a.copy;
    return a.keep.size() < b.keep.size();
  });
  for (auto& p : todo) {
    if (repairing_.size() >= maxRepairs_) break;
    if (repairing_.count(p.rec.id)) continue;
    repairing_.insert(p.rec.id);
    uint64_t id = p.rec.id;
    repairTasks_->add(repair(std::move(p)).attach(kj::defer([this, id]() {
      repairing_.erase(id);
    })));
  }
}

kj::Promise<int> MetaServer::chunkCall(const std::string& addr,
                                       kj::Function<kj::Promise<int>(proto::Chunk::Client)> fn) {
  auto& p = chunkPeers_[addr];
  if (!p) p = std::make_unique<Peer>(*io_, *secret_, addr, proto::Role::SERVER);
  Peer* peer = p.get();
  return peer->get()
      .then([fn = kj::mv(fn)](capnp::Capability::Client cap) mutable {
        return fn(cap.castAs<proto::Chunk>());
      })
      .catch_([peer](kj::Exception&& e) {
        peer->reset();
        return int(EIO);
      });
}

kj::Promise<void> MetaServer::repair(RepairPlan plan) {
  std::map<uint32_t, std::string> addrs;
  uint32_t target = 0;
  uint32_t replicas;
  {
    Txn t = store_.reader();
    replicas = sm_.replicas(t);
    std::set<std::string> avoid;
    for (auto s : plan.rec.servers) {
      if (auto r = store_.getServer(t, s)) {
        addrs[s] = r->addr;
        avoid.insert(r->host);
      }
    }
    if (plan.target != 0) {
      // A rebalance move: its target, if it may still take the copy.
      auto r = store_.getServer(t, plan.target);
      bool hostFree = r && !avoid.count(r->host);
      for (auto& [s, ids] : handedOut_)
        if (s == plan.target && ids.count(plan.rec.id)) hostFree = false;
      if (auto g = t.get(store_.garbage, be64(plan.rec.id)))
        if (contains(Store::decodeGarbage(*g).servers, plan.target)) hostFree = false;
      if (!hostFree || std::string(stateOf(plan.target)) != "online") return kj::READY_NOW;
      target = plan.target;
      addrs[target] = r->addr;
    } else if (plan.copy) {
      // Never place the new copy on a server that still has to delete an old copy of this
      // chunk (its pending garbage deletion would remove the new copy).
      if (auto g = t.get(store_.garbage, be64(plan.rec.id))) {
        for (auto s : Store::decodeGarbage(*g).servers)
          if (auto r = store_.getServer(t, s)) avoid.insert(r->host);
      }
      for (auto& [s, ids] : handedOut_)
        if (ids.count(plan.rec.id))
          if (auto r = store_.getServer(t, s)) avoid.insert(r->host);
      auto chosen = place(t, 1, plan.keep, avoid);
      if (chosen.empty()) return kj::READY_NOW;  // nowhere to put a new copy yet
      target = chosen[0];
      addrs[target] = store_.getServer(t, target)->addr;
    }
  }
  auto rec = plan.rec;
  uint64_t newVersion = rec.version + 1;
  if (plan.copy) {
    spdlog::info("repair: chunk {:016x} ({} good of {} copies, {} to move) -> server {} at version {}",
                 rec.id, plan.keep.size(), rec.servers.size(), plan.extra.size(), target,
                 newVersion);
  } else {
    spdlog::info("repair: chunk {:016x} keeps {} of {} copies at version {}", rec.id,
                 plan.keep.size(), rec.servers.size(), newVersion);
  }
  // 1. Fence: the live copies move to the new version, so writers with the old one get ESTALE
  //    and come back to meta (which answers the new chain once the repair commits).
  std::vector<uint32_t> live = plan.keep;
  live.insert(live.end(), plan.extra.begin(), plan.extra.end());
  auto fences = kj::heapArrayBuilder<kj::Promise<int>>(live.size());
  for (auto s : live) {
    uint64_t id = rec.id;
    fences.add(chunkCall(addrs[s], [id, newVersion](proto::Chunk::Client c) {
      auto req = c.setVersionRequest();
      req.getChunk().setId(id);
      req.getChunk().setVersion(newVersion);
      return req.send().then([](auto r) { return int(r.getErr()); });
    }));
  }
  auto commit = [this, plan, newVersion](std::vector<uint32_t> servers) {
    capnp::MallocMessageBuilder req;
    auto op = req.initRoot<proto::MetaRequest>().getOp().initChunkRepair();
    op.setIno(plan.ino);
    op.setIndex(plan.index);
    op.setId(plan.rec.id);
    op.setVersion(plan.rec.version);
    op.setNewVersion(newVersion);
    auto out = op.initServers(servers.size());
    for (size_t i = 0; i < servers.size(); i++) out.set(i, servers[i]);
    return propose(req.getRoot<proto::MetaRequest>().asReader(), {});
  };
  struct Outcome {
    int copyErr = 0;
    uint64_t bytes = 0;
    std::vector<uint32_t> fenced;
  };
  uint64_t rate = repairRate_ / std::max<size_t>(1, maxRepairs_);
  return kj::joinPromises(fences.finish())
      .then([this, rec, live, addrs, target, newVersion, rate](kj::Array<int> results) mutable {
        Outcome o;
        for (size_t i = 0; i < live.size(); i++)
          if (results[i] == 0) o.fenced.push_back(live[i]);
        if (target == 0 || o.fenced.empty()) {
          o.copyErr = target == 0 ? 0 : EIO;
          return kj::Promise<Outcome>(kj::mv(o));
        }
        // 2. Copy server to server, throttled.
        uint64_t id = rec.id;
        std::string targetAddr = addrs[target];
        auto bytes = kj::heap<uint64_t>(0);
        auto* bytesPtr = bytes.get();
        return chunkCall(addrs[o.fenced[0]],
                         [id, newVersion, targetAddr, rate, bytesPtr](proto::Chunk::Client c) {
                           auto req = c.replicateRequest();
                           req.getChunk().setId(id);
                           req.getChunk().setVersion(newVersion);
                           req.setTarget(targetAddr);
                           req.setRateBytesPerSec(rate);
                           return req.send().then([bytesPtr](auto r) {
                             *bytesPtr = r.getBytes();
                             return int(r.getErr());
                           });
                         })
            .then([o = kj::mv(o), bytes = kj::mv(bytes)](int err) mutable {
              o.copyErr = err;
              o.bytes = *bytes;
              return kj::mv(o);
            });
      })
      .then([this, commit, target, plan, replicas](Outcome o) mutable {
        // 3. Commit the good copies (+ the new one), keeping dropped ones only as needed to
        //    stay at R: no replica count goes down before the copy that replaces it exists.
        //    Fenced copies are at the new version either way, and meta must say so.
        std::vector<uint32_t> servers;
        for (auto s : plan.keep)
          if (contains(o.fenced, s)) servers.push_back(s);
        if (target != 0 && o.copyErr == 0) servers.push_back(target);
        for (auto s : plan.extra)
          if (servers.size() < replicas && contains(o.fenced, s)) servers.push_back(s);
        if (servers.empty()) return kj::Promise<void>(kj::READY_NOW);
        return commit(servers).then([this, o, plan, target](Reply reply) {
          int err = reply->getRoot<proto::MetaReply>().getErr();
          if (err == 0 && o.copyErr == 0) {
            if (plan.target != 0) {
              rebalanceMoves_++;
              rebalanceBytes_ += o.bytes;
              rebalanceMovesTotal_->inc();
              rebalanceBytesTotal_->inc(o.bytes);
            } else if (target != 0) {
              repairedChunks_->inc();
              repairedCount_++;
              repairedBytes_->inc(o.bytes);
              repairedBytesTotal_ += o.bytes;
              recentRepairs_.emplace_back(std::chrono::steady_clock::now(), o.bytes);
            }
            spdlog::info("repair: chunk {:016x} done", plan.rec.id);
          } else {
            spdlog::warn("repair: chunk {:016x}: copy {} commit {}", plan.rec.id, o.copyErr, err);
          }
        });
      });
}

std::vector<uint32_t> MetaServer::place(Txn& t, uint32_t replicas,
                                        const std::vector<uint32_t>& existing,
                                        const std::set<std::string>& avoidHosts) {
  // Candidates: online (not draining) servers on hosts not used yet; among them those in a new
  // zone are preferred, then those in a new rack; weighted by free space within the best tier.
  refreshServers(t);
  struct Candidate {
    uint32_t id;
    ServerRecord rec;
    double weight;
  };
  std::vector<Candidate> candidates;
  for (auto& [id, l] : live_) {
    if (std::string(stateOf(id)) != "online") continue;
    auto it = servers_.find(id);
    if (it == servers_.end()) continue;
    double free = l.capacityBytes > l.usedBytes ? double(l.capacityBytes - l.usedBytes) : 0;
    candidates.push_back(Candidate{id, it->second, free + 1.0});
  }
  std::set<std::string> hosts = avoidHosts, zones, racks;
  for (auto s : existing) {
    auto it = servers_.find(s);
    if (it == servers_.end()) continue;
    hosts.insert(it->second.host);
    zones.insert(it->second.zone);
    racks.insert(it->second.zone + "/" + it->second.rack);
  }
  std::vector<uint32_t> chosen;
  while (chosen.size() < replicas) {
    std::erase_if(candidates, [&](const Candidate& c) { return hosts.count(c.rec.host) > 0; });
    if (candidates.empty()) break;
    auto tierOf = [&](const Candidate& c) {
      if (!zones.count(c.rec.zone)) return 0;
      if (!racks.count(c.rec.zone + "/" + c.rec.rack)) return 1;
      return 2;
    };
    int best = 2;
    for (auto& c : candidates) best = std::min(best, tierOf(c));
    double total = 0;
    for (auto& c : candidates)
      if (tierOf(c) == best) total += c.weight;
    double x = std::uniform_real_distribution<double>(0, total)(rng_);
    size_t pick = candidates.size();
    for (size_t i = 0; i < candidates.size(); i++) {
      if (tierOf(candidates[i]) != best) continue;
      pick = i;
      x -= candidates[i].weight;
      if (x <= 0) break;
    }
    auto c = candidates[pick];
    chosen.push_back(c.id);
    hosts.insert(c.rec.host);
    zones.insert(c.rec.zone);
    racks.insert(c.rec.zone + "/" + c.rec.rack);
  }
  if (existing.empty() && avoidHosts.empty() && !chosen.empty() && chosen.size() < replicas) {
    spdlog::warn("only {} distinct hosts online for {} replicas: chunk is under-replicated",
                 chosen.size(), replicas);
  }
  return chosen;
}

kj::Promise<MetaServer::Reply> MetaServer::heartbeat(proto::MetaRequest::Reader request) {
  auto hb = request.getOp().getHeartbeat();
  bool known;
  bool hasGarbage;
  {
    Txn t = store_.reader();
    known = store_.getServer(t, hb.getServer()).has_value();
    auto grace = std::chrono::duration_cast<std::chrono::nanoseconds>(timeouts_.gcGrace).count();
    hasGarbage = known && !sm_.garbageFor(t, hb.getServer(), 1, wallClockNs(), grace).empty();
    if (known) checkInventory(t, hb.getServer(), hb.getInventoryAfter(), hb.getInventory());
  }
  if (!known) return errorReply(ENOENT);
  handedOut_.erase(hb.getServer());  // it acted on the previous reply before sending this beat
  auto& l = live_[hb.getServer()];
  l.capacityBytes = hb.getCapacityBytes();
  l.usedBytes = hb.getUsedBytes();
  l.chunks = hb.getChunks();
  l.scrubPass = hb.getScrub().getPassChunks();
  l.scrubDone = hb.getScrub().getDoneChunks();
  l.scrubLastEnd = hb.getScrub().getLastPassEnd();
  l.scrubCorrupt = hb.getScrub().getCorruptFound();
  l.lastBeat = std::chrono::steady_clock::now();
  l.seen = true;
  if (hasGarbage) {
    // Handing out garbage changes the state.
    uint32_t server = hb.getServer();
    return propose(request, {}).then([this, server](Reply reply) {
      auto& ids = handedOut_[server];
      for (auto id : reply->getRoot<proto::MetaReply>().getGarbage()) ids.insert(id);
      return kj::mv(reply);
    });
  }
  return errorReply(0);
}

void MetaServer::checkInventory(Txn& t, uint32_t server, uint64_t after,
                                capnp::List<uint64_t>::Reader ids) {
  // A copy is an orphan when no chunk record lists this server for it and no deletion is
  // pending: left behind by a repair that did not commit, a deletion whose notice was lost, or
  // a server that was away. It is deleted only after a whole grace period as an orphan.
  auto now = std::chrono::steady_clock::now();
  auto& seen = orphanSeen_[server];
  std::set<uint64_t> listed(ids.begin(), ids.end());
  uint64_t last = ids.size() == 0 ? UINT64_MAX : ids[ids.size() - 1];
  if (ids.size() < 4096) last = UINT64_MAX;  // the last page: everything after it is gone
  for (auto it = seen.upper_bound(after); it != seen.end() && it->first <= last;)
    it = listed.count(it->first) ? std::next(it) : seen.erase(it);
  std::vector<uint64_t> ready;
  uint64_t floor = store_.getCounter(t, "offer_floor");
  uint64_t next = store_.getCounter(t, "next_chunk");
  for (auto id : ids) {
    // An id offered with a create lately (at or above the floor, and recorded nowhere yet) may
    // still be bound by its creator's commit: not an orphan yet.
    bool orphan = !repairing_.count(id) &&
                  !(id >= floor && id < next && !t.get(store_.owners, be64(id)));
    if (orphan) {
      if (auto owner = t.get(store_.owners, be64(id))) {
        auto c = store_.getChunk(t, readBe64(*owner), readBe64(*owner, 8));
        if (c && c->id == id && contains(c->servers, server)) orphan = false;
      }
    }
    if (orphan) {
      if (auto g = t.get(store_.garbage, be64(id)))
        if (contains(Store::decodeGarbage(*g).servers, server)) orphan = false;
    }
    if (!orphan) {
      seen.erase(id);
      continue;
    }
    auto [it, inserted] = seen.emplace(id, now);
    if (!inserted && now - it->second >= timeouts_.gcGrace) ready.push_back(id);
  }
  if (ready.empty() || !repairTasks_) return;
  for (auto id : ready) seen.erase(id);
  spdlog::info("gc: {} orphaned copies on chunk server {} (first {:016x}): deleting", ready.size(),
               server, ready[0]);
  capnp::MallocMessageBuilder req;
  auto op = req.initRoot<proto::MetaRequest>().getOp().initChunkOrphans();
  op.setServer(server);
  auto out = op.initIds(ready.size());
  for (size_t i = 0; i < ready.size(); i++) out.set(i, ready[i]);
  repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {}).ignoreResult());
}

MetaServer::Reply MetaServer::statfs(uint64_t ino) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  Txn t = store_.reader();
  uint32_t replicas = std::max<uint32_t>(1, sm_.replicas(t));
  uint64_t capacity = 0, used = 0;
  for (auto& [id, l] : live_) {
    if (std::string(stateOf(id)) == "dead") continue;
    capacity += l.capacityBytes;
    used += l.usedBytes;
  }
  auto s = r.initStatfs();
  s.setBlockSize(4096);
  s.setTotalBytes(capacity / replicas);
  s.setFreeBytes((capacity > used ? capacity - used : 0) / replicas);
  uint64_t inodes = store_.getCounter(t, "inodes");
  s.setFiles(inodes);
  s.setFreeFiles((1ull << 40) - inodes);
  // Inside a directory with a quota (a volume), the quota is the size: df shows the claim.
  if (ino != 0) {
    if (auto q = sm_.quotaAt(t, ino)) {
      auto& rec = q->second;
      if (rec.limitBytes != 0) {
        uint64_t free = rec.limitBytes > rec.usedBytes ? rec.limitBytes - rec.usedBytes : 0;
        s.setTotalBytes(rec.limitBytes);
        s.setFreeBytes(std::min<uint64_t>(free, s.getFreeBytes()));
      }
      if (rec.limitInodes != 0) {
        s.setFiles(rec.usedInodes);  // used + free = the limit
        s.setFreeFiles(rec.limitInodes > rec.usedInodes ? rec.limitInodes - rec.usedInodes : 0);
      }
    }
  }
  return reply;
}

MetaServer::Reply MetaServer::status() {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  Txn t = store_.reader();
  refreshServers(t);
  auto st = r.initStatus();
  uint32_t replicas = sm_.replicas(t);
  st.setReplicas(replicas);
  st.setMetaAddr(node_->leaderAddr());
  std::map<uint32_t, uint64_t> perServer;
  uint64_t total = 0, under = 0, lost = 0, over = 0;
  for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
    auto rec = Store::decodeChunk(c.value());
    total++;
    uint32_t alive = 0;
    for (auto s : rec.servers) {
      perServer[s]++;
      alive += std::string(stateOf(s)) != "dead" ? 1 : 0;
    }
    if (alive == 0) {
      lost++;
    } else if (alive < replicas) {
      under++;
    } else if (alive > replicas) {
      over++;
    }
  }
  uint64_t garbage = 0;
  for (Cursor c(t, store_.garbage, "", ""); c.valid(); c.next())
    garbage += Store::decodeGarbage(c.value()).servers.size();
  auto out = st.initServers(servers_.size());
  size_t i = 0;
  for (auto& [id, rec] : servers_) {
    out[i].setId(id);
    out[i].setAddr(rec.addr);
    out[i].setHost(rec.host);
    out[i].setZone(rec.zone);
    out[i].setRack(rec.rack);
    out[i].setDraining(rec.draining);
    out[i].setState(stateOf(id));
    out[i].setReplicas(perServer[id]);
    auto it = live_.find(id);
    if (it != live_.end()) {
      out[i].setCapacityBytes(it->second.capacityBytes);
      out[i].setUsedBytes(it->second.usedBytes);
      out[i].setChunks(it->second.chunks);
      auto sp = out[i].initScrub();
      sp.setPassChunks(it->second.scrubPass);
      sp.setDoneChunks(it->second.scrubDone);
      sp.setLastPassEnd(it->second.scrubLastEnd);
      sp.setCorruptFound(it->second.scrubCorrupt);
    }
    i++;
  }
  st.setChunksTotal(total);
  st.setUnderReplicated(under);
  st.setLost(lost);
  st.setOverReplicated(over);
  st.setGarbagePending(garbage);
  st.setRepairsRunning(static_cast<uint32_t>(repairing_.size()));
  st.setRepairQueue(repairQueue_);
  st.setRepairedChunks(repairedCount_);
  st.setRepairedBytes(repairedBytesTotal_);
  auto now = std::chrono::steady_clock::now();
  std::erase_if(recentRepairs_, [&](auto& e) { return now - e.first > std::chrono::minutes(1); });
  uint64_t recent = 0;
  for (auto& e : recentRepairs_) recent += e.second;
  st.setRepairBytesPerSec(recent / 60);
  st.setRepairsPaused(sm_.repairsPaused(t));
  {
    uint64_t maxChunk = 0;
    auto loads = serverLoads(t, nullptr, &maxChunk);  // one more pass over the chunk table
    fillRebalance(t, loads, maxChunk, st.initRebalance());
    uint64_t corrupt = 0;
    for (auto& [id, l] : live_) corrupt += l.scrubCorrupt;
    st.setCorruptFound(corrupt);
    for (auto s : st.getServers())
      for (auto& l : loads)
        if (l.id == s.getId()) s.setAssignedBytes(l.assignedBytes);
  }
  st.setMetaMembers(static_cast<uint32_t>(node_->core().voters().size()));
  {
    auto clients = st.initClients(static_cast<unsigned>(sessions_.size()));
    size_t i = 0;
    auto now = std::chrono::steady_clock::now();
    for (auto& [id, session] : sessions_) {
      clients[i].setId(id);
      clients[i].setHost(session.host);
      clients[i].setMount(session.mount);
      clients[i].setIdleMs(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(now - session.lastSeen).count()));
      clients[i].setOpenFiles(session.open.size());
      i++;
    }
    st.setUnlinkedOpen(fsck::tableEntries(t, store_.unlinked));
  }
  return reply;
}

MetaServer::Reply MetaServer::metaStatus() {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  auto s = r.initMetaStatus();
  const auto& core = node_->core();
  auto members = node_->members();
  s.setId(node_->id());
  s.setAddr(members[node_->id()]);
  s.setRole(raft::roleName(core.role()));
  s.setTerm(core.term());
  s.setCommit(core.commitIndex());
  s.setApplied(core.appliedIndex());
  s.setLeader(core.leader());
  s.setLastIndex(core.lastIndex());
  s.setSnapshotIndex(core.snapshotIndex());
  auto voters = core.voters();
  auto out = s.initMembers(voters.size());
  auto matches = s.initMatches(voters.size());
  for (size_t i = 0; i < voters.size(); i++) {
    out[i].setId(voters[i]);
    out[i].setAddr(members[voters[i]]);
    matches.set(i, voters[i] == node_->id() ? core.lastIndex() : core.matchOf(voters[i]));
  }
  return reply;
}

bool MetaServiceImpl::allowed(proto::Role role, proto::MetaRequest::Op::Which op) {
  using W = proto::MetaRequest::Op::Which;
  using R = proto::Role;
  switch (op) {
    case W::META_ADD:
    case W::META_REMOVE:
    case W::META_TRANSFER:
    case W::SERVER_DRAIN:
    case W::SET_REPLICAS:
    case W::META_DUMP:
    case W::FSCK_FIX:
    case W::REBALANCE:
    case W::REBALANCE_PLAN:
    case W::REPAIR_PAUSE:
    case W::CHUNK_ORPHANS:
      return role == R::ADMIN;
    case W::REGISTER_SERVER:
    case W::HEARTBEAT:
      return role == R::SERVER;
    case W::FORMAT:
    case W::CHUNK_REPAIR:
    case W::SESSION_END:
    case W::SESSION_START:
    case W::RECLAIM:
    case W::OFFER_FLOOR:
    case W::ID_GAP:
      return false;  // only meta's leader proposes these, straight into its log
    default:
      return true;
  }
}

kj::Promise<void> MetaServiceImpl::call(CallContext context) {
  auto request = context.getParams().getRequest();
  const char* name = opName(request.getOp().which());
  if (!allowed(role_, request.getOp().which())) {
    spdlog::warn("refused {} from a connection authenticated as role {}", name,
                 static_cast<int>(role_));
    capnp::MallocMessageBuilder reply;
    reply.initRoot<proto::MetaReply>().setErr(EPERM);
    context.getResults().setReply(reply.getRoot<proto::MetaReply>().asReader());
    return kj::READY_NOW;
  }
  auto& latency = latency_[static_cast<uint16_t>(request.getOp().which())];
  if (!latency)
    latency = &metrics_.histogram("cairn_meta_request_seconds", "Meta request latency",
                                  std::string("op=\"") + name + "\"");
  auto timer = kj::heap<ScopedLatency>(*latency);
  return server_.handle(request).then(
      [context, timer = kj::mv(timer), this, name](MetaServer::Reply reply) mutable {
        auto r = reply->getRoot<proto::MetaReply>();
        if (r.getErr() != 0 && r.getErr() != ENOENT && r.getErr() != EAGAIN) {
          metrics_
              .counter("cairn_meta_errors_total", "Requests answered with an error",
                       std::string("op=\"") + name + "\",errno=\"" + std::to_string(r.getErr()) +
                           "\"")
              .inc();
        }
        context.getResults().setReply(r.asReader());
      });
}

kj::Promise<void> MetaPeerImpl::raft(RaftContext context) {
  auto list = context.getParams().getMessages();
  KJ_REQUIRE(list.size() <= 100000, "too many raft messages in one call");
  std::vector<raft::Message> messages;
  messages.reserve(list.size());
  for (auto m : list) {
    auto msg = raft::fromWire(m);
    node_.learnMember(msg.from, m.getFromAddr().cStr());
    // Snapshots only arrive through snapshotChunk, where the data is written locally first.
    KJ_REQUIRE(msg.type != raft::MessageType::SNAPSHOT, "snapshot outside snapshotChunk");
    messages.push_back(kj::mv(msg));
  }
  node_.receive(kj::mv(messages));
  return kj::READY_NOW;
}

kj::Promise<void> MetaPeerImpl::snapshotChunk(SnapshotChunkContext context) {
  auto p = context.getParams();
  auto header = raft::fromWire(p.getHeader());
  KJ_REQUIRE(header.type == raft::MessageType::SNAPSHOT && header.snapshot.has_value(),
             "snapshot piece without a snapshot header");
  node_.receiveSnapshotChunk(header, p.getOffset(), p.getData(), p.getLast());
  return kj::READY_NOW;
}

}  // namespace cairn::meta
