// The chunks of one cairn-chunk process, spread over its data directories.
// Not thread-safe: used from the server's event loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "chunk/chunk_file.h"

namespace cairn::chunk {

struct StoreUsage {
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;  // bytes allocated by chunk files
  uint64_t chunks = 0;
};

// Empty files kept in DIR/spare, made ahead on a thread of its own and recycled from removed
// chunks, so that a new chunk is a rename, not an inode allocation, while a writer waits (an
// ext4 create costs 0.5-0.7 ms on a filesystem where many files were deleted lately, it
// costs a rename 15 us). Removed chunks the pool has no room for are renamed into DIR/gone and
// unlinked on the same thread: unlinking a chunk file with data costs 0.5-1 ms here, and
// a heartbeat hands out hundreds of deletions at a time.
class SparePool {
 public:
  // `dir`: DATA/spare; `goneDir`: DATA/gone (same filesystem). Keeps at most `max` files,
  // recycled ones included.
  SparePool(std::string dir, std::string goneDir, size_t keep, size_t max);
  ~SparePool();
  SparePool(const SparePool&) = delete;
  SparePool& operator=(const SparePool&) = delete;

  // An empty spare file, or nothing when none is ready.
  std::optional<std::string> take();
  // Moves a removed chunk's file into the pool (its data freed on the pool's thread); false
  // when the pool is full and the caller should discard it.
  bool recycle(const std::string& path);
  // Moves a removed chunk's file out of the way at once (a rename) and unlinks it on the
  // pool's thread: its name is free when this returns, an open descriptor still works.
  void discard(const std::string& path);
  size_t ready();
  size_t discarding();  // renamed away, not yet unlinked

 private:
  void run();
  std::string nextName();

  std::string dir_;
  std::string goneDir_;
  size_t keep_;  // made ahead up to this many
  size_t max_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::string> ready_;  // empty files
  std::vector<std::string> dirty_;  // recycled, to be truncated
  std::vector<std::string> gone_;   // discarded, to be unlinked
  uint64_t next_ = 0;
  uint64_t nextGone_ = 0;
  std::thread thread_;
};

class ChunkStore {
 public:
  // Opens (creating when needed) every directory and scans the chunks already there.
  // `maxSpares`: files kept in each directory's spare pool.
  ChunkStore(std::vector<std::string> dirs, uint32_t maxBlocks, size_t maxSpares = 4096);

  uint32_t maxBlocks() const { return maxBlocks_; }

  // The chunk with this id, or nullptr.
  ChunkFile* find(uint64_t id);
  // The same, kept open for as long as the caller holds it (I/O on another thread).
  std::shared_ptr<ChunkFile> share(uint64_t id);
  // The chunk, created at `version` in the emptiest directory when absent.
  ChunkFile& findOrCreate(uint64_t id, uint64_t version);
  bool remove(uint64_t id);
  std::vector<std::pair<uint64_t, uint64_t>> list() const;  // (id, version)
  // The absolute path of the chunk's file, or "" when there is no such chunk.
  std::string pathFor(uint64_t id) const;
  size_t count() const { return index_.size(); }
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
  // Spare files ready for new chunks, in every directory.
  size_t spares();
  // Removed chunks' files still to be unlinked (on the pools' threads), in every directory.
  size_t discarding();

 private:
  struct Entry {
    size_t dir = 0;
    uint64_t version = 0;
    uint64_t bytes = 0;  // allocated on disk, as last counted
  };
  std::string pathOf(size_t dir, uint64_t id) const;
  ChunkFile& cache(uint64_t id, ChunkFile file);

  std::vector<std::string> dirs_;
  std::vector<std::unique_ptr<DirLock>> locks_;     // one per directory, held while open
  std::vector<std::unique_ptr<SparePool>> spares_;  // one per directory
  uint32_t maxBlocks_;
  uint64_t capacityLimit_ = 0;
  std::map<uint64_t, Entry> index_;
  uint64_t usedBytes_ = 0;  // the sum of the entries' bytes
  // Open files, most recently used first; bounded by MAX_OPEN.
  static constexpr size_t MAX_OPEN = 256;
  std::list<std::pair<uint64_t, std::shared_ptr<ChunkFile>>> open_;
  std::map<uint64_t, decltype(open_)::iterator> openIndex_;
  // Files handed out by share(): one still held elsewhere (I/O in flight on another thread) is
  // unlinked when removed, never recycled, so that a late write cannot land in a new chunk.
  std::map<uint64_t, std::weak_ptr<ChunkFile>> shared_;
};

}  // namespace cairn::chunk
