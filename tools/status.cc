// cairn status: the cluster's health in one verdict (healthy, degraded, unavailable) with the
// reasons, then the meta quorum, the chunk servers, capacity, chunks, repair, scrub and
// rebalance progress. Exit code 0 only when healthy.
#include "tools/status.h"

#include <kj/debug.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

namespace cairn::tool {

int statusCmd(Tool& tool, bool json) {
  // Every meta server's own view first (those that answer), then the cluster from the leader.
  std::vector<std::string> metaAddrs = tool.addrs;
  struct MetaView {
    std::string addr;
    bool up = false;
    uint64_t id = 0, term = 0, commit = 0, applied = 0, lastIndex = 0;
    std::string role = "unreachable";
  };
  std::vector<MetaView> metas;
  uint64_t leaderLast = 0;
  for (auto& a : metaAddrs) {
    MetaView v;
    v.addr = a;
    KJ_IF_MAYBE(r, tool.metaStatusOf(a)) {
      auto s = (*r)->getRoot<proto::MetaReply>().getMetaStatus();
      v.up = true;
      v.id = s.getId();
      v.role = s.getRole().cStr();
      v.term = s.getTerm();
      v.commit = s.getCommit();
      v.applied = s.getApplied();
      v.lastIndex = s.getLastIndex();
      if (v.role == "leader") leaderLast = v.commit;
    }
    metas.push_back(v);
  }
  bool anyUp = std::any_of(metas.begin(), metas.end(), [](const MetaView& m) { return m.up; });
  if (!anyUp) {
    // Without any meta server the cluster cannot answer; say so now rather than retry for long.
    std::string all;
    for (auto& a : metaAddrs) all += (all.empty() ? "" : ",") + a;
    return fail("no meta server answered (" + all + "): the cluster is unavailable", 2);
  }
  size_t metasUp = 0;
  bool leaderUp = false;
  for (auto& m : metas) {
    metasUp += m.up ? 1 : 0;
    leaderUp |= m.role == "leader";
  }
  auto unavailable = [&](const std::string& why) {
    if (json) {
      std::ostringstream o;
      o << "{\"meta\":[";
      for (size_t i = 0; i < metas.size(); i++)
        o << (i ? "," : "") << "{\"id\":" << metas[i].id << ",\"addr\":" << jsonString(metas[i].addr)
          << ",\"role\":" << jsonString(metas[i].role) << ",\"term\":" << metas[i].term << "}";
      o << "],\"verdict\":\"unavailable\",\"reasons\":[" << jsonString(why) << "]}";
      std::cout << o.str() << std::endl;
    } else {
      printf("cluster: unavailable:\n  - %s\n\nmeta servers\n", why.c_str());
      for (auto& m : metas)
        printf("  %-4llu %-22s %-13s term %llu\n", (unsigned long long)m.id, m.addr.c_str(),
               m.role.c_str(), (unsigned long long)m.term);
    }
    return 2;
  };
  if (!leaderUp) {
    return unavailable("no meta server is leader: " + std::to_string(metasUp) + " of " +
                       std::to_string(metas.size()) +
                       " answer, too few for a quorum or an election is under way");
  }
  kj::Own<capnp::MallocMessageBuilder> reply;
  try {
    auto req = newMetaRequest();
    req->getRoot<proto::MetaRequest>().getOp().setStatus();
    reply = tool.call(kj::mv(req));
  } catch (kj::Exception& e) {
    return unavailable(std::string("the meta leader did not answer: ") + e.getDescription().cStr());
  }
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return unavailable(std::string("status: ") + strerror(r.getErr()));
  auto st = r.getStatus();
  uint64_t capacity = 0, used = 0;
  for (auto s : st.getServers()) {
    std::string state = s.getState().cStr();
    if (state == "online" || state == "draining") {
      capacity += s.getCapacityBytes();
      used += s.getUsedBytes();
    }
  }
  auto rb = st.getRebalance();
  size_t online = 0;
  for (auto s : st.getServers()) {
    std::string state = s.getState().cStr();
    online += state == "online" || state == "draining" ? 1 : 0;
  }
  std::string verdict = "healthy";
  std::vector<std::string> why;
  if (st.getLost() > 0) {
    verdict = "unavailable";
    why.push_back(std::to_string(st.getLost()) + " chunks have no live replica");
  } else {
    if (st.getUnderReplicated() > 0)
      why.push_back(std::to_string(st.getUnderReplicated()) + " chunks under-replicated");
    if (online < st.getServers().size())
      why.push_back(std::to_string(st.getServers().size() - online) + " chunk servers not online");
    if (metasUp < metas.size() || metasUp < st.getMetaMembers())
      why.push_back(std::to_string(metasUp) + " of " +
                    std::to_string(std::max<size_t>(metas.size(), st.getMetaMembers())) +
                    " meta servers answer (the quorum holds while a majority does)");
    if (capacity > 0 && double(used) / double(capacity) > 0.9)
      why.push_back("the chunk servers are " + std::to_string(int(100.0 * used / capacity)) +
                    "% full");
    if (st.getRepairsPaused()) why.push_back("repairs paused by an operator (cairn repair resume)");
    if (!why.empty()) verdict = "degraded";
  }
  if (json) {
    std::ostringstream o;
    // Shape: {"meta":[{"id","addr","role",...}],"chunk_servers":[...],"chunks":{...},
    // "replicas":R,"verdict":V,"reasons":[...]}; scripts rely on these keys.
    o << "{\"meta\":[";
    for (size_t i = 0; i < metas.size(); i++) {
      auto& m = metas[i];
      uint64_t lag = m.up && leaderLast > m.applied ? leaderLast - m.applied : 0;
      o << (i ? "," : "") << "{\"id\":" << m.id << ",\"addr\":" << jsonString(m.addr)
        << ",\"role\":" << jsonString(m.role) << ",\"term\":" << m.term
        << ",\"commit\":" << m.commit << ",\"applied\":" << m.applied << ",\"lag\":" << lag
        << "}";
    }
    o << "],\"chunk_servers\":[";
    bool first = true;
    for (auto s : st.getServers()) {
      o << (first ? "" : ",") << "{\"id\":" << s.getId() << ",\"addr\":"
        << jsonString(s.getAddr().cStr()) << ",\"host\":" << jsonString(s.getHost().cStr())
        << ",\"zone\":" << jsonString(s.getZone().cStr())
        << ",\"rack\":" << jsonString(s.getRack().cStr())
        << ",\"state\":" << jsonString(s.getState().cStr())
        << ",\"draining\":" << (s.getDraining() ? "true" : "false")
        << ",\"replicas\":" << s.getReplicas()
        << ",\"capacity_bytes\":" << s.getCapacityBytes() << ",\"used_bytes\":" << s.getUsedBytes()
        << ",\"assigned_bytes\":" << s.getAssignedBytes()
        << ",\"chunks\":" << s.getChunks() << ",\"scrub\":{\"pass_chunks\":"
        << s.getScrub().getPassChunks() << ",\"done_chunks\":" << s.getScrub().getDoneChunks()
        << ",\"last_pass_end\":" << s.getScrub().getLastPassEnd()
        << ",\"corrupt_found\":" << s.getScrub().getCorruptFound() << "}}";
      first = false;
    }
    o << "],\"chunks\":{\"total\":" << st.getChunksTotal()
      << ",\"under_replicated\":" << st.getUnderReplicated() << ",\"lost\":" << st.getLost()
      << ",\"over_replicated\":" << st.getOverReplicated()
      << ",\"garbage_pending\":" << st.getGarbagePending()
      << "},\"repair\":{\"running\":" << st.getRepairsRunning()
      << ",\"queue\":" << st.getRepairQueue() << ",\"repaired_chunks\":" << st.getRepairedChunks()
      << ",\"repaired_bytes\":" << st.getRepairedBytes()
      << ",\"bytes_per_sec\":" << st.getRepairBytesPerSec()
      << ",\"paused\":" << (st.getRepairsPaused() ? "true" : "false")
      << "},\"rebalance\":{\"active\":" << (rb.getActive() ? "true" : "false")
      << ",\"auto\":" << (rb.getAuto() ? "true" : "false") << ",\"tolerance\":" << rb.getTolerance()
      << ",\"spread\":" << rb.getSpread() << ",\"moves_done\":" << rb.getMovesDone()
      << ",\"bytes_moved\":" << rb.getBytesMoved() << ",\"moves_running\":" << rb.getMovesRunning()
      << "},\"capacity\":{\"total_bytes\":" << capacity << ",\"used_bytes\":" << used
      << "},\"corrupt_found\":" << st.getCorruptFound()
      << ",\"meta_members\":" << st.getMetaMembers() << ",\"meta_answering\":" << metasUp
      << ",\"clients\":[";
    for (size_t i = 0; i < st.getClients().size(); i++) {
      auto c = st.getClients()[i];
      char id[20];
      snprintf(id, sizeof(id), "%016llx", (unsigned long long)c.getId());
      o << (i ? "," : "") << "{\"id\":" << jsonString(id) << ",\"host\":"
        << jsonString(c.getHost().cStr()) << ",\"mount\":" << jsonString(c.getMount().cStr())
        << ",\"idle_ms\":" << c.getIdleMs() << ",\"open_files\":" << c.getOpenFiles() << "}";
    }
    o << "],\"unlinked_open\":" << st.getUnlinkedOpen() << ",\"replicas\":" << st.getReplicas() << ",\"verdict\":" << jsonString(verdict)
      << ",\"reasons\":[";
    for (size_t i = 0; i < why.size(); i++) o << (i ? "," : "") << jsonString(why[i]);
    o << "]}";
    std::cout << o.str() << std::endl;
  } else {
    printf("cluster: %s%s\n", verdict.c_str(), why.empty() ? "" : ":");
    for (auto& w : why) printf("  - %s\n", w.c_str());
    printf("\nmeta servers\n  %-4s %-22s %-13s %8s %10s %10s %8s\n", "ID", "ADDRESS", "ROLE",
           "TERM", "COMMIT", "APPLIED", "LAG");
    for (auto& m : metas) {
      uint64_t lag = m.up && leaderLast > m.applied ? leaderLast - m.applied : 0;
      printf("  %-4llu %-22s %-13s %8llu %10llu %10llu %8llu\n", (unsigned long long)m.id,
             m.addr.c_str(), m.role.c_str(), (unsigned long long)m.term,
             (unsigned long long)m.commit, (unsigned long long)m.applied,
             (unsigned long long)lag);
    }
    printf("\nchunk servers\n  %-4s %-22s %-18s %-9s %12s %12s %8s\n", "ID", "ADDRESS",
           "ZONE/RACK/HOST", "STATE", "CAPACITY", "USED", "REPLICAS");
    for (auto s : st.getServers()) {
      std::string where = std::string(s.getZone().cStr()) + "/" + s.getRack().cStr() + "/" +
                          s.getHost().cStr();
      printf("  %-4u %-22s %-18s %-9s %12s %12s %8llu%s\n", s.getId(), s.getAddr().cStr(),
             where.c_str(), s.getState().cStr(), human(s.getCapacityBytes()).c_str(),
             human(s.getUsedBytes()).c_str(), (unsigned long long)s.getReplicas(),
             s.getDraining() && s.getReplicas() == 0 ? "  (drained: can be removed)" : "");
    }
    printf("\nchunks: %llu total, %llu under-replicated, %llu over-replicated, %llu lost "
           "(replicas %u); %llu copies awaiting deletion\n",
           (unsigned long long)st.getChunksTotal(), (unsigned long long)st.getUnderReplicated(),
           (unsigned long long)st.getOverReplicated(), (unsigned long long)st.getLost(),
           st.getReplicas(), (unsigned long long)st.getGarbagePending());
    printf("scrub:");
    for (auto sv : st.getServers()) {
      auto sc = sv.getScrub();
      std::string last = "no full pass yet";
      if (sc.getLastPassEnd() > 0) {
        long ago = long(time(nullptr) - sc.getLastPassEnd());
        last = "last full pass " + std::to_string(ago < 0 ? 0 : ago) + " s ago";
      }
      std::string now = sc.getPassChunks() > 0
                            ? std::to_string(sc.getDoneChunks()) + "/" +
                                  std::to_string(sc.getPassChunks()) + " copies verified, "
                            : "";
      printf(" [%u] %s%s%s", sv.getId(), now.c_str(), last.c_str(),
             sc.getCorruptFound() ? (", " + std::to_string(sc.getCorruptFound()) + " damaged").c_str() : "");
    }
    printf("\n");
    printf("repair: %u running, %llu queued; %llu chunks (%s) repaired by this leader, %s/s over "
           "the last minute\n",
           st.getRepairsRunning(), (unsigned long long)st.getRepairQueue(),
           (unsigned long long)st.getRepairedChunks(), human(st.getRepairedBytes()).c_str(),
           human(st.getRepairBytesPerSec()).c_str());
    if (st.getRepairsPaused()) printf("repair: PAUSED (cairn repair resume)\n");
    printf("capacity: %s of %s used (%.1f%%); %llu damaged copies found by scrubbers since their "
           "servers started\n",
           human(used).c_str(), human(capacity).c_str(),
           capacity ? 100.0 * double(used) / double(capacity) : 0.0,
           (unsigned long long)st.getCorruptFound());
    printf("clients: %u mounts with a live session", st.getClients().size());
    for (auto c : st.getClients())
      printf(" [%s:%s, %llu open]", c.getHost().cStr(), c.getMount().cStr(),
             (unsigned long long)c.getOpenFiles());
    printf("\n");
    if (st.getUnlinkedOpen() > 0)
      printf("files unlinked while open: %llu (reclaimed after their last close)\n",
             (unsigned long long)st.getUnlinkedOpen());
    if (rb.getActive()) {
      printf("rebalance: running, %llu replicas moved (%s), %u moving, farthest server %.1f%% from the "
             "mean (tolerance %.1f%%)\n",
             (unsigned long long)rb.getMovesDone(), human(rb.getBytesMoved()).c_str(),
             rb.getMovesRunning(), rb.getSpread() * 100, rb.getTolerance() * 100);
    } else {
      printf("rebalance: off (farthest server %.1f%% from the mean; automatic on join: %s)\n",
             rb.getSpread() * 100, rb.getAuto() ? "on" : "off");
    }
  }
  return verdict == "healthy" ? 0 : verdict == "degraded" ? 1 : 2;
}

}  // namespace cairn::tool
