// The chunks of one cairn-chunk process, spread over its data directories.
// Not thread-safe: used from the server's event loop.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chunk/chunk_file.h"

namespace cairn::chunk {

struct StoreUsage {
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;  // bytes allocated by chunk files
  uint64_t chunks = 0;
};

class ChunkStore {
 public:
  // Opens (creating when needed) every directory and scans the chunks already there.
  ChunkStore(std::vector<std::string> dirs, uint32_t maxBlocks);

  uint32_t maxBlocks() const { return maxBlocks_; }

  // The chunk with this id, or nullptr.
  ChunkFile* find(uint64_t id);
  // The same, kept open for as long as the caller holds it (I/O on another thread).
  std::shared_ptr<ChunkFile> share(uint64_t id);
  // The chunk, created at `version` in the emptiest directory when absent.
  ChunkFile& findOrCreate(uint64_t id, uint64_t version);
  bool remove(uint64_t id);
  std::vector<std::pair<uint64_t, uint64_t>> list() const;  // (id, version)
  // Up to `max` chunk ids above `after`, ascending.
  std::vector<uint64_t> idsAfter(uint64_t after, size_t max) const;
  // Up to `max` (id, version) above `after`, ascending. Copies whose file has vanished from
  // disk are forgotten (and logged) instead of listed.
  std::vector<std::pair<uint64_t, uint64_t>> pageAfter(uint64_t after, size_t max);
  void noteVersion(uint64_t id, uint64_t version) { index_[id].version = version; }
  // After a write or truncation of the chunk: its allocated size is counted again (one fstat),
  // so that usage() need not look at every chunk file.
  void noteSize(uint64_t id);

  StoreUsage usage();
  // Reports at most this much capacity (0: the file systems' size), e.g. to give a server only
  // part of a shared disk.
  void limitCapacity(uint64_t bytes) { capacityLimit_ = bytes; }
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  struct Entry {
    size_t dir = 0;
    uint64_t version = 0;
    uint64_t bytes = 0;  // allocated on disk, as last counted
  };
  std::string pathOf(size_t dir, uint64_t id) const;
  ChunkFile& cache(uint64_t id, ChunkFile file);

  std::vector<std::string> dirs_;
  uint32_t maxBlocks_;
  uint64_t capacityLimit_ = 0;
  std::map<uint64_t, Entry> index_;
  uint64_t usedBytes_ = 0;  // the sum of the entries' bytes
  // Open files, most recently used first; bounded by MAX_OPEN.
  static constexpr size_t MAX_OPEN = 256;
  std::list<std::pair<uint64_t, std::shared_ptr<ChunkFile>>> open_;
  std::map<uint64_t, decltype(open_)::iterator> openIndex_;
};

}  // namespace cairn::chunk
