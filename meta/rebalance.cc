#include "meta/rebalance.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace cairn::meta::rebalance {

double meanFraction(const std::vector<ServerLoad>& servers) {
  double assigned = 0, capacity = 0;
  for (auto& s : servers) {
    if (!s.eligible) continue;
    assigned += double(s.assignedBytes);
    capacity += double(s.capacityBytes);
  }
  return capacity == 0 ? 0.0 : assigned / capacity;
}

double spread(const std::vector<ServerLoad>& servers) {
  double mean = meanFraction(servers), worst = 0;
  if (mean <= 0) return 0;
  for (auto& s : servers)
    if (s.eligible && s.capacityBytes > 0) worst = std::max(worst, std::fabs(s.fraction() - mean));
  return worst / mean;
}

bool balanced(const std::vector<ServerLoad>& servers, double tolerance, uint64_t chunkBytes) {
  double mean = meanFraction(servers);
  for (auto& s : servers) {
    if (!s.eligible || s.capacityBytes == 0) continue;
    double target = mean * double(s.capacityBytes);
    double off = std::fabs(double(s.assignedBytes) - target);
    if (off > tolerance * target && off >= double(chunkBytes)) return false;
  }
  return true;
}

namespace {

// Whether replacing `from` by `to` in a chunk's replica list keeps the placement rules: distinct
// hosts, and no fewer distinct zones and racks than before.
bool keepsPlacement(const std::vector<uint32_t>& replicas, uint32_t from, const ServerLoad& to,
                    const std::map<uint32_t, const ServerLoad*>& byId) {
  std::set<std::string> zonesBefore, racksBefore, zonesAfter, racksAfter, hostsAfter;
  for (auto r : replicas) {
    auto it = byId.find(r);
    if (it == byId.end()) return false;
    const ServerLoad& s = *it->second;
    zonesBefore.insert(s.zone);
    racksBefore.insert(s.zone + "/" + s.rack);
    if (r == from) continue;
    if (r == to.id) return false;  // already holds a copy
    zonesAfter.insert(s.zone);
    racksAfter.insert(s.zone + "/" + s.rack);
    hostsAfter.insert(s.host);
  }
  if (hostsAfter.count(to.host)) return false;
  zonesAfter.insert(to.zone);
  racksAfter.insert(to.zone + "/" + to.rack);
  return zonesAfter.size() >= zonesBefore.size() && racksAfter.size() >= racksBefore.size();
}

}  // namespace

std::vector<Move> plan(std::vector<ServerLoad>& servers, const std::vector<ChunkView>& chunks,
                       double tolerance, size_t maxMoves) {
  std::vector<Move> moves;
  std::map<uint32_t, const ServerLoad*> byId;
  std::map<uint32_t, size_t> pos;
  for (size_t i = 0; i < servers.size(); i++) {
    byId[servers[i].id] = &servers[i];
    pos[servers[i].id] = i;
  }
  // Each eligible server's movable chunks, largest first (fewer moves for the same effect).
  std::vector<std::vector<size_t>> held(servers.size());
  for (size_t c = 0; c < chunks.size(); c++) {
    if (!chunks[c].movable || chunks[c].bytes == 0) continue;
    for (auto s : chunks[c].servers) {
      auto it = pos.find(s);
      if (it != pos.end() && servers[it->second].eligible) held[it->second].push_back(c);
    }
  }
  for (auto& list : held)
    std::stable_sort(list.begin(), list.end(),
                     [&](size_t a, size_t b) { return chunks[a].bytes > chunks[b].bytes; });
  const double mean = meanFraction(servers);
  // Replica lists as the moves so far leave them. A chunk may move more than once (each move goes
  // from a server above the mean to one below it and leaves the receiver no fuller than the
  // giver, so the loads only ever get closer together and the loop ends).
  std::vector<std::vector<uint32_t>> replicas(chunks.size());
  for (size_t c = 0; c < chunks.size(); c++) replicas[c] = chunks[c].servers;
  std::vector<size_t> order;
  for (size_t i = 0; i < servers.size(); i++)
    if (servers[i].eligible && servers[i].capacityBytes > 0) order.push_back(i);

  while (moves.size() < maxMoves) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return servers[a].fraction() > servers[b].fraction();
    });
    if (order.size() < 2) break;
    const double allowed = tolerance * mean;  // the tolerance is relative to the mean
    double high = servers[order.front()].fraction() - mean;
    double low = mean - servers[order.back()].fraction();
    if (high <= allowed && low <= allowed) break;
    bool found = false;
    // Fullest givers first, emptiest receivers first; at least one of the pair out of tolerance.
    for (size_t gi = 0; gi < order.size() && !found; gi++) {
      ServerLoad& giver = servers[order[gi]];
      if (giver.fraction() <= mean) break;
      for (size_t ri = order.size(); ri-- > 0 && !found;) {
        ServerLoad& taker = servers[order[ri]];
        if (taker.fraction() >= mean) break;
        if (giver.fraction() - mean <= allowed && mean - taker.fraction() <= allowed) continue;
        auto& list = held[order[gi]];
        for (size_t k = 0; k < list.size(); k++) {
          size_t c = list[k];
          const ChunkView& ch = chunks[c];
          auto& reps = replicas[c];
          auto at = std::find(reps.begin(), reps.end(), giver.id);
          if (at == reps.end()) continue;  // moved away earlier in this plan
          double b = double(ch.bytes);
          // The receiver must not end up fuller than the giver: that would only move the problem.
          if ((double(giver.assignedBytes) - b) / double(giver.capacityBytes) <
              (double(taker.assignedBytes) + b) / double(taker.capacityBytes))
            continue;
          if (!keepsPlacement(reps, giver.id, taker, byId)) continue;
          moves.push_back(Move{ch.id, ch.ino, ch.index, giver.id, taker.id, ch.bytes});
          *at = taker.id;
          held[order[ri]].push_back(c);
          list.erase(list.begin() + static_cast<std::ptrdiff_t>(k));
          giver.assignedBytes -= ch.bytes;
          taker.assignedBytes += ch.bytes;
          found = true;
          break;
        }
      }
    }
    if (!found) break;  // nothing more can move within the rules
  }
  return moves;
}

}  // namespace cairn::meta::rebalance
