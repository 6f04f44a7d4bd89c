// The leader's side of rebalancing (see meta/rebalance.h for the planner): the loads it plans
// from, the moves it runs through the repair machinery, when a rebalance ends, and the plan that
// `cairn rebalance --dry-run` prints.
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>

#include "meta/service.h"
#include "rpc/runtime.h"

namespace cairn::meta {

std::vector<rebalance::ServerLoad> MetaServer::serverLoads(Txn& t,
                                                           std::vector<rebalance::ChunkView>* out,
                                                           uint64_t* maxChunkBytes) {
  if (maxChunkBytes) *maxChunkBytes = 0;
  refreshServers(t);
  std::map<uint32_t, size_t> pos;
  std::vector<rebalance::ServerLoad> loads;
  for (auto& [id, rec] : servers_) {
    rebalance::ServerLoad l;
    l.id = id;
    l.host = rec.host;
    l.zone = rec.zone;
    l.rack = rec.rack;
    auto it = live_.find(id);
    if (it != live_.end()) l.capacityBytes = it->second.capacityBytes;
    l.eligible = std::string(stateOf(id)) == "online" && l.capacityBytes > 0;
    pos[id] = loads.size();
    loads.push_back(l);
  }
  uint64_t cs = sm_.chunkSize(t);
  uint64_t lastIno = 0;
  uint64_t fileSize = 0;
  for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
    uint64_t ino = readBe64(c.key()), index = readBe64(c.key(), 8);
    if (ino != lastIno) {
      auto r = store_.getInode(t, ino);
      fileSize = r ? r->size : 0;
      lastIno = ino;
    }
    // The bytes of the file inside this chunk: what its copies hold (holes aside).
    uint64_t start = index * cs;
    uint64_t bytes = fileSize > start ? std::min(cs, fileSize - start) : 0;
    if (maxChunkBytes) *maxChunkBytes = std::max(*maxChunkBytes, bytes);
    auto rec = Store::decodeChunk(c.value());
    bool movable = !repairing_.count(rec.id);
    for (auto s : rec.servers) {
      auto p = pos.find(s);
      if (p == pos.end() || !loads[p->second].eligible) movable = false;
      if (p != pos.end()) loads[p->second].assignedBytes += bytes;
    }
    if (out) {
      out->push_back(rebalance::ChunkView{rec.id, ino, index, bytes, rec.servers, movable});
    }
  }
  return loads;
}

void MetaServer::planRebalance(uint32_t replicas) {
  Txn t = store_.reader();
  auto setting = sm_.rebalance(t);
  if (!setting.active) return;
  if (setting.startedNs != rebalanceStarted_) {  // a new rebalance: its own progress
    rebalanceStarted_ = setting.startedNs;
    rebalanceMoves_ = rebalanceBytes_ = 0;
  }
  size_t running = rebalancing_.size();
  if (repairQueue_ > 0 || repairing_.size() >= maxRepairs_) return;  // repairs come first
  std::vector<rebalance::ChunkView> chunks;
  uint64_t maxChunk = 0;
  auto loads = serverLoads(t, &chunks, &maxChunk);
  rebalanceSpread_ = rebalance::spread(loads);
  std::vector<rebalance::Move> moves;
  if (!rebalance::balanced(loads, setting.tolerance, maxChunk))
    moves = rebalance::plan(loads, chunks, setting.tolerance, maxRepairs_ - repairing_.size());
  if (moves.empty()) {
    if (running > 0) return;  // the last moves are still committing
    for (auto& l : loads)
      if (!l.eligible && std::string(stateOf(l.id)) == "suspect") return;  // not heard from yet
    // A server that just registered (the usual reason a rebalance starts) has not sent its
    // first heartbeat, with its capacity, yet.
    auto sinceStart = std::chrono::nanoseconds(wallClockNs() - setting.startedNs);
    if (sinceStart < timeouts_.deadAfter) return;
    // Done: within tolerance, or nothing more can move within the placement rules.
    if (rebalance::balanced(loads, setting.tolerance, maxChunk)) {
      spdlog::info("rebalance: done, every server within {:.1f}% of the mean ({} moves, {} "
                   "bytes)", setting.tolerance * 100, rebalanceMoves_, rebalanceBytes_);
    } else {
      spdlog::warn("rebalance: stopping with a server {:.1f}% from the mean: no move left that keeps "
                   "the placement rules", rebalanceSpread_ * 100);
    }
    capnp::MallocMessageBuilder req;
    auto op = req.initRoot<proto::MetaRequest>().getOp().initRebalance();
    op.setActive(false);
    repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {}).ignoreResult());
    return;
  }
  std::set<uint64_t> started;  // one move per chunk at a time; the next round plans again
  for (auto& m : moves) {
    if (!started.insert(m.chunk).second) continue;
    RepairPlan p;
    p.ino = m.ino;
    p.index = m.index;
    auto rec = store_.getChunk(t, m.ino, m.index);
    if (!rec || rec->id != m.chunk || rec->servers.size() < replicas) continue;
    p.rec = *rec;
    for (auto s : rec->servers)
      if (s != m.from) p.keep.push_back(s);
    p.extra.push_back(m.from);
    p.copy = true;
    p.target = m.to;
    spdlog::info("rebalance: chunk {:016x} ({} bytes) from server {} to server {}", m.chunk,
                 m.bytes, m.from, m.to);
    uint64_t id = m.chunk;
    repairing_.insert(id);
    rebalancing_.insert(id);
    repairTasks_->add(repair(std::move(p)).attach(kj::defer([this, id]() {
      repairing_.erase(id);
      rebalancing_.erase(id);
    })));
  }
}

MetaServer::Reply MetaServer::rebalancePlanReply(double tolerance) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto r = reply->initRoot<proto::MetaReply>();
  if (!(tolerance > 0.0 && tolerance < 1.0)) {
    r.setErr(EINVAL);
    return reply;
  }
  Txn t = store_.reader();
  std::vector<rebalance::ChunkView> chunks;
  auto loads = serverLoads(t, &chunks);
  constexpr size_t MAX_PLANNED = 100000;  // a reply stays well under Cap'n Proto's limits
  auto moves = rebalance::plan(loads, chunks, tolerance, MAX_PLANNED);
  auto out = r.initMoves(moves.size());
  for (size_t i = 0; i < moves.size(); i++) {
    out[i].setChunk(moves[i].chunk);
    out[i].setIno(moves[i].ino);
    out[i].setIndex(moves[i].index);
    out[i].setFrom(moves[i].from);
    out[i].setTo(moves[i].to);
    out[i].setBytes(moves[i].bytes);
  }
  return reply;
}

void MetaServer::fillRebalance(Txn& t, const std::vector<rebalance::ServerLoad>& loads,
                               uint64_t maxChunk, proto::RebalanceStatus::Builder out) {
  auto setting = sm_.rebalance(t);
  out.setActive(setting.active);
  out.setAuto(setting.autoOnJoin);
  out.setTolerance(setting.tolerance);
  out.setStartedNs(setting.startedNs);
  out.setMovesDone(rebalanceMoves_);
  out.setBytesMoved(rebalanceBytes_);
  out.setMovesRunning(static_cast<uint32_t>(rebalancing_.size()));
  rebalanceSpread_ = rebalance::spread(loads);
  out.setSpread(rebalanceSpread_);
  out.setBalanced(rebalance::balanced(loads, setting.tolerance, maxChunk));
}

}  // namespace cairn::meta
