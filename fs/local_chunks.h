// Copies of chunks that live on this host, read from their files instead of through their chunk
// server (as HDFS's short-circuit reads do). A chunk server names the file of its copy
// (Chunk.locate, over the same authenticated connection as every request); the mount opens it
// read-only and reads records and blocks itself: no request per read, no copy through the
// server's memory and its socket. The blocks are still opened and authenticated here like any
// others, so a copy that changes under the reader, or rots, fails its check and is read again
// through the servers, which check, report and repair as always.
//
// A copy is read only while the server that owns it runs (it holds the lock of its data
// directory, chunk::DirLock): a dead server's copy may be one the chain has since left behind.
// A copy is used only at exactly the version the reader's chunk location names (the header is
// read again before each read: a server raises versions in place); any other version goes to
// the servers, which answer ESTALE or raise theirs. A server whose file cannot be opened here
// (another host, another mount namespace, no permission) is asked again only after a minute.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "chunk/chunk_file.h"

namespace cairn::fs {

class LocalChunks {
 public:
  // At most `maxOpen` files are kept open (two descriptors each).
  explicit LocalChunks(size_t maxOpen = 128) : maxOpen_(maxOpen) {}
  ~LocalChunks();

  // Asks server `addr` where its copy of chunk `id` at `version` lies: the path, or "" when it
  // has none (or does not answer).
  using Locate = std::function<std::string(const std::string& addr)>;

  // `addr`'s copy of chunk `id`, opened here and at `version` now; nullptr when there is none
  // this host can read.
  std::shared_ptr<chunk::ChunkFile> open(const std::string& addr, uint64_t id, uint64_t version,
                                         const Locate& locate);
  // Whether `addr` may have copies this host can read (not refused lately).
  bool mayBeLocal(const std::string& addr);
  // `addr` is not asked again for a minute (it failed to answer where its copies lie).
  void refuse(const std::string& addr) {
    std::lock_guard<std::mutex> lock(mutex_);
    markRemote(addr);
  }
  // Drops the kept file of `addr`'s copy of chunk `id` (it failed a read or a check).
  void forget(const std::string& addr, uint64_t id);
  size_t openCount();

 private:
  using Key = std::pair<std::string, uint64_t>;
  struct Copy {
    std::shared_ptr<chunk::ChunkFile> file;
    int lockFd;  // of its data directory's lock (in locks_)
  };
  void keep(const Key& key, Copy copy);  // with mutex_ held
  // The descriptor of the lock of the data directory that holds `path` (DIR/chunks/NAME), or -1
  // when the path is not laid out so or the lock cannot be opened. With mutex_ held.
  int lockFor(const std::string& path);
  void markRemote(const std::string& addr);  // with mutex_ held

  const size_t maxOpen_;
  std::mutex mutex_;
  // Open files, most recently used first.
  std::list<std::pair<Key, Copy>> open_;
  std::map<Key, decltype(open_)::iterator> index_;
  std::map<std::string, std::chrono::steady_clock::time_point> remoteUntil_;
  std::map<std::string, int> locks_;  // data directory -> its lock file, open read-only
};

}  // namespace cairn::fs
