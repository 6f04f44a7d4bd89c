// cairn rebalance: even out the chunk servers' used space. The moves run in the meta leader (a
// replicated setting says a rebalance is on), so the command may be interrupted and run again to
// follow it; a new leader goes on where the old one stopped.
#include "tools/rebalance.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>

namespace cairn::tool {

namespace {

struct ServerRow {
  uint32_t id = 0;
  std::string host, state;
  uint64_t capacity = 0, assigned = 0;
};

struct Snapshot {
  std::map<uint32_t, ServerRow> servers;
  bool active = false, autoOn = false;
  double tolerance = 0, spread = 0;
  uint64_t movesDone = 0, bytesMoved = 0;
  uint32_t running = 0;
  bool paused = false;
  bool balanced = false;
};

Snapshot snapshot(Tool& tool) {
  auto req = newMetaRequest();
  req->getRoot<proto::MetaRequest>().getOp().setStatus();
  auto reply = tool.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  KJ_REQUIRE(r.getErr() == 0 && r.isStatus(), "meta did not answer the status request",
             strerror(r.getErr()));
  auto st = r.getStatus();
  Snapshot s;
  for (auto sv : st.getServers()) {
    ServerRow row{sv.getId(), sv.getHost().cStr(), sv.getState().cStr(), sv.getCapacityBytes(),
                  sv.getAssignedBytes()};
    s.servers[row.id] = row;
  }
  auto rb = st.getRebalance();
  s.active = rb.getActive();
  s.autoOn = rb.getAuto();
  s.tolerance = rb.getTolerance();
  s.spread = rb.getSpread();
  s.movesDone = rb.getMovesDone();
  s.bytesMoved = rb.getBytesMoved();
  s.running = rb.getMovesRunning();
  s.balanced = rb.getBalanced();
  s.paused = st.getRepairsPaused();
  return s;
}

double fraction(uint64_t assigned, uint64_t capacity) {
  return capacity == 0 ? 0.0 : double(assigned) / double(capacity);
}

int setRebalance(Tool& tool, kj::Function<void(proto::MetaRequest::RebalanceOp::Builder)> fill) {
  auto req = newMetaRequest();
  fill(req->getRoot<proto::MetaRequest>().getOp().initRebalance());
  auto reply = tool.call(kj::mv(req));
  return reply->getRoot<proto::MetaReply>().getErr();
}

int dryRun(Tool& tool, const RebalanceArgs& a) {
  Snapshot before = snapshot(tool);
  auto req = newMetaRequest();
  req->getRoot<proto::MetaRequest>().getOp().setRebalancePlan(a.tolerance);
  auto reply = tool.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return fail(std::string("rebalance: ") + strerror(r.getErr()), 2);
  auto moves = r.getMoves();
  std::map<uint32_t, int64_t> delta;
  uint64_t bytes = 0;
  for (auto m : moves) {
    delta[m.getFrom()] -= int64_t(m.getBytes());
    delta[m.getTo()] += int64_t(m.getBytes());
    bytes += m.getBytes();
  }
  if (a.json) {
    std::ostringstream o;
    o << "{\"tolerance\":" << a.tolerance << ",\"moves\":[";
    for (size_t i = 0; i < moves.size(); i++) {
      auto m = moves[i];
      o << (i ? "," : "") << "{\"chunk\":" << m.getChunk() << ",\"ino\":" << m.getIno()
        << ",\"index\":" << m.getIndex() << ",\"from\":" << m.getFrom() << ",\"to\":" << m.getTo()
        << ",\"bytes\":" << m.getBytes() << "}";
    }
    o << "],\"bytes\":" << bytes << ",\"servers\":[";
    bool first = true;
    for (auto& [id, s] : before.servers) {
      o << (first ? "" : ",") << "{\"id\":" << id << ",\"host\":" << jsonString(s.host)
        << ",\"state\":" << jsonString(s.state) << ",\"capacity_bytes\":" << s.capacity
        << ",\"assigned_bytes\":" << s.assigned
        << ",\"assigned_after\":" << int64_t(s.assigned) + delta[id] << "}";
      first = false;
    }
    o << "]}";
    std::cout << o.str() << std::endl;
    return 0;
  }
  printf("plan: %zu moves, %s to copy (every server within %.1f%% of the mean)\n", size_t(moves.size()),
         human(bytes).c_str(), a.tolerance * 100);
  printf("  %-4s %-16s %-9s %12s %10s %10s\n", "ID", "HOST", "STATE", "CAPACITY", "USED NOW",
         "AFTER");
  for (auto& [id, s] : before.servers) {
    printf("  %-4u %-16s %-9s %12s %9.1f%% %9.1f%%\n", id, s.host.c_str(), s.state.c_str(),
           human(s.capacity).c_str(), fraction(s.assigned, s.capacity) * 100,
           fraction(uint64_t(int64_t(s.assigned) + delta[id]), s.capacity) * 100);
  }
  size_t shown = std::min<size_t>(moves.size(), 50);
  if (shown > 0) printf("\n  %-18s %-8s %-6s %-6s %s\n", "CHUNK", "INODE", "FROM", "TO", "BYTES");
  for (size_t i = 0; i < shown; i++) {
    auto m = moves[i];
    printf("  %016llx   %-8llu %-6u %-6u %s\n", (unsigned long long)m.getChunk(),
           (unsigned long long)m.getIno(), m.getFrom(), m.getTo(), human(m.getBytes()).c_str());
  }
  if (moves.size() > shown) printf("  ... and %zu more (--json lists all)\n", moves.size() - shown);
  return 0;
}

}  // namespace

int rebalanceCmd(Tool& tool, const RebalanceArgs& a) {
  if (!a.autoMode.empty()) {
    bool on = a.autoMode == "on";
    int err = setRebalance(tool, [&](auto op) {
      op.setSetAuto(true);
      op.setAuto(on);
      op.setTolerance(a.tolerance);
    });
    if (err != 0) return fail(std::string("rebalance --auto: ") + strerror(err), 2);
    printf("automatic rebalancing %s%s\n", on ? "on" : "off",
           on ? ": a rebalance starts whenever a new chunk server joins" : "");
    return 0;
  }
  if (a.stop) {
    int err = setRebalance(tool, [](auto op) { op.setActive(false); });
    if (err != 0) return fail(std::string("rebalance --stop: ") + strerror(err), 2);
    printf("rebalance stopped (moves under way finish)\n");
    return 0;
  }
  if (a.dryRun) return dryRun(tool, a);

  int err = setRebalance(tool, [&](auto op) {
    op.setActive(true);
    op.setTolerance(a.tolerance);
  });
  if (err != 0) return fail(std::string("rebalance: ") + strerror(err), 2);
  Snapshot s = snapshot(tool);
  printf("rebalance running in meta (tolerance %.1f%%, the farthest server is %.1f%% from the mean)%s\n",
         s.tolerance * 100, s.spread * 100,
         s.paused ? "; repairs are paused: it waits for cairn repair resume" : "");
  if (a.noWait) {
    printf("follow it with `cairn status`; stop it with `cairn rebalance --stop`\n");
    return 0;
  }
  ProgressBar bar(!a.json);
  double start = monotonicSeconds();
  double firstSpread = s.spread;
  while (true) {
    s = snapshot(tool);
    // Progress: how much of the spread above the tolerance is gone.
    double gap0 = std::max(1e-9, firstSpread - s.tolerance);
    double gone = std::max(0.0, std::min(gap0, firstSpread - s.spread));
    bar.update("rebalance", uint64_t(gone / gap0 * 1000), 1000, "");
    if (!s.active) break;
    if (monotonicSeconds() - start > a.timeoutSec) {
      bar.finish();
      return fail("rebalance still running after " + std::to_string(a.timeoutSec) +
                      " s (it goes on in meta; see cairn status)", 1);
    }
    usleep(1000 * 1000);
  }
  bar.finish();
  printf("rebalance finished: %llu replicas moved (%s) in %.0f s; the farthest server is %.1f%% from the mean "
         "(tolerance %.1f%%)\n",
         (unsigned long long)s.movesDone, human(s.bytesMoved).c_str(), monotonicSeconds() - start,
         s.spread * 100, s.tolerance * 100);
  for (auto& [id, row] : s.servers)
    printf("  server %-4u %-16s %5.1f%% of %s\n", id, row.host.c_str(),
           fraction(row.assigned, row.capacity) * 100, human(row.capacity).c_str());
  if (!s.balanced) {
    fprintf(stderr, "cairn: rebalance stopped outside the tolerance: no move left that keeps the "
                    "placement rules (or it was stopped)\n");
    return 1;
  }
  if (s.spread > s.tolerance)
    printf("(as even as the chunks allow: moving any one more would overshoot)\n");
  return 0;
}

}  // namespace cairn::tool
