#include "meta/service.h"

#include <capnp/serialize.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "rpc/runtime.h"

namespace cairn::meta {

namespace {
constexpr size_t MAX_BATCH = 4096;
constexpr uint64_t LOG_KEEP = 100000;  // entries kept for followers until Raft compaction

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
  }
  return "unknown";
}
}  // namespace

MetaServer::MetaServer(Store& store, Metrics& metrics, ServerTimeouts timeouts,
                       std::string selfAddr)
    : store_(store),
      sm_(store),
      metrics_(metrics),
      timeouts_(timeouts),
      selfAddr_(std::move(selfAddr)),
      rng_(std::random_device{}()),
      commits_(metrics.counter("cairn_meta_commits_total", "LMDB commits (fsyncs) of the log")),
      batchedCommands_(metrics.counter("cairn_meta_commands_total", "Commands applied")),
      commitLatency_(metrics.histogram("cairn_meta_commit_seconds", "Time of one group commit")) {
  Txn t(store_.env(), false);
  lastIndex_ = store_.getCounter(t, "log_last");
  metrics.gauge("cairn_meta_applied_index", "Last applied log index",
                [this]() { return static_cast<double>(lastIndex_); });
  metrics.gauge("cairn_meta_chunk_servers_online", "Chunk servers heard from recently", [this]() {
    double n = 0;
    for (auto& [id, l] : live_) n += std::string(stateOf(id)) == "online" ? 1 : 0;
    return n;
  });
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
  switch (which) {
    case W::HEARTBEAT:
      return heartbeat(request);
    case W::STATUS:
      return status();
    case W::STATFS:
      return statfs();
    case W::CHUNK_GET: {
      auto g = request.getOp().getChunkGet();
      if (!g.getAllocate()) return readOnly(request);
      std::vector<uint32_t> placement;
      bool exists;
      {
        Txn t(store_.env(), false);
        exists = store_.getChunk(t, g.getIno(), g.getIndex()).has_value();
        if (!exists) placement = place(t, sm_.replicas(t));
      }
      if (exists) return readOnly(request);
      if (placement.empty()) {
        // No chunk server is online yet (just started, or all down): the client waits and
        // retries.
        auto reply = kj::heap<capnp::MallocMessageBuilder>();
        reply->initRoot<proto::MetaReply>().setErr(EAGAIN);
        return kj::mv(reply);
      }
      return propose(request, kj::mv(placement));
    }
    default:
      if (StateMachine::isMutation(request)) return propose(request, {});
      return readOnly(request);
  }
}

MetaServer::Reply MetaServer::readOnly(proto::MetaRequest::Reader request) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  Txn t(store_.env(), false);
  sm_.read(t, request, reply->initRoot<proto::MetaReply>());
  return reply;
}

kj::Promise<MetaServer::Reply> MetaServer::propose(proto::MetaRequest::Reader request,
                                                   std::vector<uint32_t> placement) {
  auto cmd = kj::heap<capnp::MallocMessageBuilder>();
  auto root = cmd->initRoot<proto::Command>();
  root.setTimeNs(wallClockNs());
  root.setRequest(request);
  auto p = root.initPlacement(placement.size());
  for (size_t i = 0; i < placement.size(); i++) p.set(i, placement[i]);
  auto paf = kj::newPromiseAndFulfiller<Reply>();
  pending_.push_back(Pending{kj::mv(cmd), kj::mv(paf.fulfiller)});
  if (!flushScheduled_) {
    flushScheduled_ = true;
    kj::evalLater([this]() { flush(); }).detach([](kj::Exception&& e) {
      spdlog::critical("group commit failed: {}", e.getDescription().cStr());
      abort();  // stop rather than acknowledge what is not durable; restart recovers
    });
  }
  return kj::mv(paf.promise);
}

void MetaServer::flush() {
  flushScheduled_ = false;
  if (pending_.empty()) return;
  std::vector<Pending> batch;
  if (pending_.size() > MAX_BATCH) {
    batch.assign(std::make_move_iterator(pending_.begin()),
                 std::make_move_iterator(pending_.begin() + MAX_BATCH));
    pending_.erase(pending_.begin(), pending_.begin() + MAX_BATCH);
    flushScheduled_ = true;
    kj::evalLater([this]() { flush(); }).detach([](kj::Exception&& e) {
      spdlog::critical("group commit failed: {}", e.getDescription().cStr());
      abort();
    });
  } else {
    batch.swap(pending_);
  }
  ScopedLatency latency(commitLatency_);
  std::vector<Reply> replies;
  replies.reserve(batch.size());
  Txn t(store_.env(), true);
  uint64_t index = lastIndex_;
  for (auto& p : batch) {
    auto cmd = p.command->getRoot<proto::Command>();
    index++;
    auto words = capnp::messageToFlatArray(*p.command);
    t.put(store_.log, be64(index),
          std::string_view(reinterpret_cast<const char*>(words.begin()), words.size() * 8));
    auto reply = kj::heap<capnp::MallocMessageBuilder>();
    sm_.apply(t, cmd.asReader(), *reply);
    replies.push_back(kj::mv(reply));
  }
  // Trim the oldest log entries (bounded work per batch).
  if (index > LOG_KEEP) {
    uint64_t first = store_.getCounter(t, "log_first", 1);
    uint64_t limit = std::min(index - LOG_KEEP, first + 2 * batch.size());
    for (uint64_t i = first; i < limit; i++) t.del(store_.log, be64(i));
    if (limit > first) store_.putCounter(t, "log_first", limit);
  }
  store_.putCounter(t, "log_last", index);
  t.commit();  // one fsync for the whole batch
  lastIndex_ = index;
  commits_.inc();
  batchedCommands_.inc(batch.size());
  for (size_t i = 0; i < batch.size(); i++) batch[i].fulfiller->fulfill(kj::mv(replies[i]));
}

std::vector<uint32_t> MetaServer::place(Txn& t, uint32_t replicas) {
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
  std::set<std::string> hosts;
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
    candidates.erase(candidates.begin() + pick);
    if (hosts.count(c.host)) continue;  // one replica per host
    hosts.insert(c.host);
    chosen.push_back(c.id);
  }
  if (!chosen.empty() && chosen.size() < replicas) {
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
  if (!known) {
    auto reply = kj::heap<capnp::MallocMessageBuilder>();
    reply->initRoot<proto::MetaReply>().setErr(ENOENT);
    return kj::mv(reply);
  }
  auto& l = live_[hb.getServer()];
  l.capacityBytes = hb.getCapacityBytes();
  l.usedBytes = hb.getUsedBytes();
  l.chunks = hb.getChunks();
  l.lastBeat = std::chrono::steady_clock::now();
  l.seen = true;
  if (hasGarbage) return propose(request, {});  // handing out garbage changes the state
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  reply->initRoot<proto::MetaReply>();
  return kj::mv(reply);
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
  st.setMetaAddr(selfAddr_);
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
          metrics_.counter("cairn_meta_errors_total", "Requests answered with an error",
                           std::string("op=\"") + name + "\",errno=\"" + std::to_string(r.getErr()) + "\"")
              .inc();
        }
        context.getResults().setReply(r.asReader());
      });
}

}  // namespace cairn::meta
