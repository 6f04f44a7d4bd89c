#include "meta/service.h"

#include <capnp/serialize.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
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
                                      "Time to apply one batch of committed commands")) {
  metrics.gauge("cairn_meta_chunk_servers_online", "Chunk servers heard from recently", [this]() {
    double n = 0;
    for (auto& [id, l] : live_) n += std::string(stateOf(id)) == "online" ? 1 : 0;
    return n;
  });
}

void MetaServer::attach(raft::RaftNode& node) {
  node_ = &node;
  Txn t(store_.env(), false);
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
  if (it == live_.end() || !it->second.seen) return "dead";
  auto age = std::chrono::steady_clock::now() - it->second.lastBeat;
  if (age < timeouts_.suspectAfter) return "online";
  if (age < timeouts_.deadAfter) return "suspect";
  return "dead";
}

kj::Promise<MetaServer::Reply> MetaServer::handle(proto::MetaRequest::Reader request) {
  using W = proto::MetaRequest::Op::Which;
  auto which = request.getOp().which();
  if (which == W::META_STATUS) return metaStatus();
  if (!node_->isLeader()) return notLeader();
  {
    Txn t(store_.env(), false);
    if (!sm_.isFormatted(t)) return errorReply(EAGAIN);  // the first leader is formatting
  }
  switch (which) {
    case W::HEARTBEAT:
      return heartbeat(request);
    case W::STATUS:
      return afterRead([this]() { return status(); });
    case W::STATFS:
      return afterRead([this]() { return statfs(); });
    case W::META_ADD:
      return metaAdd(request);
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
        Txn t(store_.env(), false);
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

kj::Promise<MetaServer::Reply> MetaServer::afterRead(kj::Function<Reply()> read) {
  return node_->linearizableRead().then(
      [read = kj::mv(read)]() mutable { return read(); },
      [this](kj::Exception&&) { return notLeader(); });
}

MetaServer::Reply MetaServer::readOnly(proto::MetaRequest::Reader request) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  Txn t(store_.env(), false);
  sm_.read(t, request, reply->initRoot<proto::MetaReply>());
  return reply;
}

kj::Promise<MetaServer::Reply> MetaServer::propose(proto::MetaRequest::Reader request,
                                                   std::vector<uint32_t> placement) {
  capnp::MallocMessageBuilder cmd;
  auto root = cmd.initRoot<proto::Command>();
  root.setTimeNs(wallClockNs());
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
  std::vector<std::pair<const raft::Entry*, Reply>> replies;
  std::vector<std::pair<uint64_t, std::string>> newMembers;
  {
    Txn t(store_.env(), true);
    for (auto& e : entries) {
      Reply reply = kj::heap<capnp::MallocMessageBuilder>();
      if (e.type == raft::EntryType::NORMAL) {
        KJ_ASSERT(e.data.size() % 8 == 0, "misaligned command", e.index);
        auto words = kj::heapArray<capnp::word>(e.data.size() / 8);
        memcpy(words.begin(), e.data.data(), e.data.size());
        capnp::FlatArrayMessageReader msg(words, rpcReaderOptions());
        auto cmd = msg.getRoot<proto::Command>();
        sm_.apply(t, cmd, *reply);
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
      replies.emplace_back(&e, kj::mv(reply));
    }
    t.commit();
  }
  for (auto& [id, addr] : newMembers) node_->setMember(id, addr);
  for (auto& [e, reply] : replies) {
    auto it = pending_.find(e->index);
    if (it == pending_.end()) continue;
    if (it->second.term == e->term) {
      it->second.fulfiller->fulfill(kj::mv(reply));
    } else {
      // Our proposal was replaced by another leader's entry: the client retries, and the
      // retry is answered from the reply memory if it did commit after all.
      it->second.fulfiller->fulfill(errorReply(EAGAIN));
    }
    pending_.erase(it);
  }
}

raft::Index MetaServer::appliedIndex() {
  Txn t(store_.env(), false);
  return store_.getCounter(t, "applied");
}

void MetaServer::writeSnapshot(const std::string& path) { store_.copyTo(path); }

void MetaServer::installSnapshot(const std::string& path) {
  failPending(EAGAIN);
  store_.replaceWith(path);
  Txn t(store_.env(), false);
  for (Cursor c(t, store_.members, "", ""); c.valid(); c.next())
    node_->setMember(readBe64(c.key()), std::string(c.value()));
}

void MetaServer::roleChanged(bool leader) {
  if (!leader) {
    failPending(EAGAIN);
    live_.clear();
    return;
  }
  bool formatted;
  {
    Txn t(store_.env(), false);
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
  repairTasks_->add(repairLoop());
}

kj::Promise<void> MetaServer::repairLoop() {
  return io_->provider->getTimer().afterDelay(1 * kj::SECONDS).then([this]() {
    if (node_->isLeader()) planRepairs();
    return repairLoop();
  });
}

void MetaServer::planRepairs() {
  if (repairing_.size() >= maxRepairs_) return;
  struct Candidate {
    uint64_t ino, index;
    ChunkRecord rec;
    std::vector<uint32_t> live;
  };
  std::vector<Candidate> todo;
  uint32_t replicas;
  {
    Txn t(store_.env(), false);
    if (!sm_.isFormatted(t)) return;
    replicas = sm_.replicas(t);
    for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
      auto rec = Store::decodeChunk(c.value());
      if (repairing_.count(rec.id)) continue;
      std::vector<uint32_t> live;
      bool anyDead = false;
      for (auto s : rec.servers) {
        std::string st = stateOf(s);
        if (st == "online") live.push_back(s);
        if (st == "dead") anyDead = true;
      }
      // Repair once a replica is dead (not merely suspect), or the chunk was born short.
      if (live.empty() || live.size() >= replicas) continue;
      if (!anyDead && rec.servers.size() >= replicas) continue;
      todo.push_back(Candidate{readBe64(c.key()), readBe64(c.key(), 8), rec, live});
    }
  }
  std::stable_sort(todo.begin(), todo.end(),
                   [](const Candidate& a, const Candidate& b) { return a.live.size() < b.live.size(); });
  for (auto& c : todo) {
    if (repairing_.size() >= maxRepairs_) break;
    repairing_.insert(c.rec.id);
    uint64_t id = c.rec.id;
    repairTasks_->add(repair(c.ino, c.index, c.rec, c.live).attach(kj::defer([this, id]() {
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

kj::Promise<void> MetaServer::repair(uint64_t ino, uint64_t index, ChunkRecord rec,
                                     std::vector<uint32_t> live) {
  std::map<uint32_t, std::string> addrs;
  uint32_t target = 0;
  {
    Txn t(store_.env(), false);
    std::set<std::string> hosts;
    for (auto s : rec.servers) {
      if (auto r = store_.getServer(t, s)) {
        addrs[s] = r->addr;
        hosts.insert(r->host);
      }
    }
    // Never place the new copy on a server that still has to delete an old copy of this chunk
    // (its pending garbage deletion would remove the new copy).
    if (auto g = t.get(store_.garbage, be64(rec.id))) {
      for (auto s : Store::decodeServers(*g))
        if (auto r = store_.getServer(t, s)) hosts.insert(r->host);
    }
    auto chosen = place(t, 1, hosts);
    if (chosen.empty()) return kj::READY_NOW;  // nowhere to put a new copy yet
    target = chosen[0];
    addrs[target] = store_.getServer(t, target)->addr;
  }
  uint64_t newVersion = rec.version + 1;
  spdlog::info("repair: chunk {:016x} ({} of {} copies live) -> server {} at version {}", rec.id,
               live.size(), rec.servers.size(), target, newVersion);
  // 1. Fence: the live copies move to the new version, so writers with the old one get ESTALE
  //    and come back to meta (which answers the new chain once the repair commits).
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
  auto commit = [this, ino, index, rec, newVersion](std::vector<uint32_t> servers) {
    capnp::MallocMessageBuilder req;
    auto op = req.initRoot<proto::MetaRequest>().getOp().initChunkRepair();
    op.setIno(ino);
    op.setIndex(index);
    op.setId(rec.id);
    op.setVersion(rec.version);
    op.setNewVersion(newVersion);
    auto out = op.initServers(servers.size());
    for (size_t i = 0; i < servers.size(); i++) out.set(i, servers[i]);
    return propose(req.getRoot<proto::MetaRequest>().asReader(), {});
  };
  return kj::joinPromises(fences.finish())
      .then([this, rec, live, addrs, target, newVersion](kj::Array<int> results) mutable {
        std::vector<uint32_t> fenced;
        for (size_t i = 0; i < live.size(); i++)
          if (results[i] == 0) fenced.push_back(live[i]);
        if (fenced.empty()) return kj::Promise<std::pair<int, std::vector<uint32_t>>>(
            std::make_pair(int(EIO), fenced));
        // 2. Copy server to server, throttled.
        uint64_t id = rec.id;
        std::string targetAddr = addrs[target];
        uint64_t rate = repairRate_;
        return chunkCall(addrs[fenced[0]],
                         [id, newVersion, targetAddr, rate](proto::Chunk::Client c) {
                           auto req = c.replicateRequest();
                           req.getChunk().setId(id);
                           req.getChunk().setVersion(newVersion);
                           req.setTarget(targetAddr);
                           req.setRateBytesPerSec(rate);
                           return req.send().then([](auto r) { return int(r.getErr()); });
                         })
            .then([fenced](int err) { return std::make_pair(err, fenced); });
      })
      .then([this, commit, target, rec](std::pair<int, std::vector<uint32_t>> r) mutable {
        auto servers = r.second;
        if (r.first == 0) servers.push_back(target);
        if (servers.empty()) return kj::Promise<void>(kj::READY_NOW);
        // 3. Commit the new replica set (without the target when the copy failed: the fenced
        //    copies are at the new version either way, and meta must say so).
        return commit(servers).then([this, r, rec](Reply reply) {
          int err = reply->getRoot<proto::MetaReply>().getErr();
          if (err == 0 && r.first == 0) {
            repairedChunks_->inc();
            spdlog::info("repair: chunk {:016x} done", rec.id);
          } else {
            spdlog::warn("repair: chunk {:016x}: copy {} commit {}", rec.id, r.first, err);
          }
        });
      });
}

std::vector<uint32_t> MetaServer::place(Txn& t, uint32_t replicas,
                                        const std::set<std::string>& excludeHosts) {
  // Candidates: online servers; at most one per host label; weighted by free space.
  struct Candidate {
    uint32_t id;
    std::string host;
    double weight;
  };
  std::vector<Candidate> candidates;
  for (auto& [id, l] : live_) {
    if (std::string(stateOf(id)) != "online") continue;
    auto rec = store_.getServer(t, id);
    if (!rec) continue;
    double free = l.capacityBytes > l.usedBytes ? double(l.capacityBytes - l.usedBytes) : 0;
    candidates.push_back(Candidate{id, rec->host, free + 1.0});
  }
  std::vector<uint32_t> chosen;
  std::set<std::string> hosts = excludeHosts;
  while (chosen.size() < replicas && !candidates.empty()) {
    double total = 0;
    for (auto& c : candidates) total += c.weight;
    double x = std::uniform_real_distribution<double>(0, total)(rng_);
    size_t pick = 0;
    for (; pick + 1 < candidates.size(); pick++) {
      x -= candidates[pick].weight;
      if (x <= 0) break;
    }
    auto c = candidates[pick];
    candidates.erase(candidates.begin() + static_cast<long>(pick));
    if (hosts.count(c.host)) continue;  // one replica per host
    hosts.insert(c.host);
    chosen.push_back(c.id);
  }
  if (excludeHosts.empty() && !chosen.empty() && chosen.size() < replicas) {
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
    Txn t(store_.env(), false);
    known = store_.getServer(t, hb.getServer()).has_value();
    hasGarbage = known && !sm_.garbageFor(t, hb.getServer(), 1).empty();
  }
  if (!known) return errorReply(ENOENT);
  auto& l = live_[hb.getServer()];
  l.capacityBytes = hb.getCapacityBytes();
  l.usedBytes = hb.getUsedBytes();
  l.chunks = hb.getChunks();
  l.lastBeat = std::chrono::steady_clock::now();
  l.seen = true;
  if (hasGarbage) return propose(request, {});  // handing out garbage changes the state
  return errorReply(0);
}

MetaServer::Reply MetaServer::statfs() {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  Txn t(store_.env(), false);
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
  return reply;
}

MetaServer::Reply MetaServer::status() {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  Txn t(store_.env(), false);
  auto st = r.initStatus();
  uint32_t replicas = sm_.replicas(t);
  st.setReplicas(replicas);
  st.setMetaAddr(node_->leaderAddr());
  std::vector<std::pair<uint32_t, ServerRecord>> servers;
  for (Cursor c(t, store_.servers, "", ""); c.valid(); c.next()) {
    uint32_t id = static_cast<uint32_t>(readBe64(c.key()));
    if (auto s = store_.getServer(t, id)) servers.emplace_back(id, *s);
  }
  auto out = st.initServers(servers.size());
  for (size_t i = 0; i < servers.size(); i++) {
    auto& [id, rec] = servers[i];
    out[i].setId(id);
    out[i].setAddr(rec.addr);
    out[i].setHost(rec.host);
    out[i].setState(stateOf(id));
    auto it = live_.find(id);
    if (it != live_.end()) {
      out[i].setCapacityBytes(it->second.capacityBytes);
      out[i].setUsedBytes(it->second.usedBytes);
      out[i].setChunks(it->second.chunks);
    }
  }
  uint64_t total = 0, under = 0, lost = 0;
  for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
    auto rec = Store::decodeChunk(c.value());
    total++;
    uint32_t alive = 0;
    for (auto s : rec.servers) alive += std::string(stateOf(s)) != "dead" ? 1 : 0;
    if (alive == 0) {
      lost++;
    } else if (alive < replicas) {
      under++;
    }
  }
  st.setChunksTotal(total);
  st.setUnderReplicated(under);
  st.setLost(lost);
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

kj::Promise<void> MetaServiceImpl::call(CallContext context) {
  auto request = context.getParams().getRequest();
  const char* name = opName(request.getOp().which());
  auto& latency = metrics_.histogram("cairn_meta_request_seconds", "Meta request latency",
                                     std::string("op=\"") + name + "\"");
  auto timer = kj::heap<ScopedLatency>(latency);
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
