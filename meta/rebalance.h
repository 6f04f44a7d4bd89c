// Rebalancing: which replicas to move so that every chunk server's used fraction comes within a
// tolerance of the cluster's mean. A pure planner: the leader feeds it the servers and the chunk
// table and runs the moves it returns as repairs (copy to the new server first, then drop the old
// replica in one committed change, so no chunk ever has fewer than R copies).
//
// "Used" is what the chunk table assigns to a server (each chunk counted at the bytes its file
// holds in it), not what the disk reports: it changes the moment a move commits, while the disk
// frees the old copy only after the garbage grace period.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cairn::meta::rebalance {

struct ServerLoad {
  uint32_t id = 0;
  std::string host, zone, rack;
  uint64_t capacityBytes = 0;
  uint64_t assignedBytes = 0;
  bool eligible = false;  // online, not draining, capacity known: may give and take replicas

  double fraction() const {
    return capacityBytes == 0 ? 0.0 : double(assignedBytes) / double(capacityBytes);
  }
};

struct ChunkView {
  uint64_t id = 0, ino = 0, index = 0;
  uint64_t bytes = 0;
  std::vector<uint32_t> servers;
  bool movable = true;  // every replica online and no repair running on it
};

struct Move {
  uint64_t chunk = 0, ino = 0, index = 0;
  uint32_t from = 0, to = 0;
  uint64_t bytes = 0;
};

// The mean used fraction of the eligible servers (total assigned over total capacity).
double meanFraction(const std::vector<ServerLoad>& servers);
// The largest distance of an eligible server's used fraction from the mean, relative to the mean
// (0.1: some server is 10% above or below it; 0 for an empty cluster).
double spread(const std::vector<ServerLoad>& servers);

// Whether every eligible server is within the tolerance, or closer to the mean than a chunk of
// `chunkBytes` (the largest chunk): then no move can make it better, only different.
bool balanced(const std::vector<ServerLoad>& servers, double tolerance, uint64_t chunkBytes);

// Up to `maxMoves` moves, best first, that bring the servers towards the mean until each is
// within `tolerance` of it, relative to the mean (0.05: every used fraction within 5% of the
// mean fraction, e.g. 0.38 to 0.42 around 0.40). Relative, so that it means the same on nearly
// empty clusters and on full ones, and on servers that share one large disk. A move never puts two replicas of a chunk on one host and never
// spreads a chunk over fewer zones or racks than before; it only moves a chunk from a server
// above the mean to one below it, and never so far that the receiver ends up fuller than the
// giver. A chunk may appear in more than one move (apply them in order). `servers` is updated
// to the loads after the moves. Deterministic.
std::vector<Move> plan(std::vector<ServerLoad>& servers, const std::vector<ChunkView>& chunks,
                       double tolerance, size_t maxMoves);

}  // namespace cairn::meta::rebalance
