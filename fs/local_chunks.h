// Copies of chunks that live on this host, read from their files instead of through their chunk
// server (as HDFS's short-circuit reads do). A chunk server names the file of its copy
// (Chunk.locate, over the same authenticated connection as every request); the mount opens it
// read-only and reads records and blocks itself: no request per read, no copy through the
// server's memory and its socket. The blocks are still opened and authenticated here like any
// others, so a copy that changes under the reader, or rots, fails its check and is read again
// through the servers, which check, report and repair as always.
//
// Only the replica a read through the servers would ask first is read so (the caller sees to
// that), so that what is read is what that server would answer: a copy the chain has left
// behind is read exactly when the server would serve it. Beyond that, a copy is read only
//   - on the host it is on: locate answers with the host's boot id and the file's device and
//     inode numbers, and the file opened here must match them (two hosts may use the same data
//     path for the same chunk id);
//   - while the server that owns it runs (it holds the lock of its data directory,
//     chunk::DirLock): a dead server's copy may be one the chain has since left behind;
//   - while the file still has its name (a removed chunk's file stays readable while open);
//   - at exactly the version the reader's chunk location names (the header is read again before
//     each read: a server raises versions in place); any other version goes to the servers,
//     which answer ESTALE or raise theirs.
// The file must be DIR/chunks/<id>.chk, opened with no symbolic link followed in any component
// and only if it is a regular file. A server on another host is not asked again for 10
// minutes; one whose files cannot be opened here (another mount namespace, no permission) for
// a minute; a chunk a server has no copy of for 5 s. Files unused for a minute are closed.
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
  explicit LocalChunks(size_t maxOpen = 128);
  ~LocalChunks();

  // What a server says of its copy (Chunk.locate); path "" when it has none.
  struct Located {
    std::string path, bootId;
    uint64_t device = 0, inode = 0;
  };
  using Locate = std::function<Located(const std::string& addr)>;

  // `addr`'s copy of chunk `id`, opened here and at `version` now; nullptr when there is none
  // this host can read.
  std::shared_ptr<chunk::ChunkFile> open(const std::string& addr, uint64_t id, uint64_t version,
                                         const Locate& locate);
  // Whether `addr` may have copies this host can read (not refused lately).
  bool mayBeLocal(const std::string& addr);
  // `addr` is not asked again for a minute (it failed to answer where its copies lie).
  void refuse(const std::string& addr);
  // Drops the kept file of `addr`'s copy of chunk `id` (it failed a read or a check).
  void forget(const std::string& addr, uint64_t id);
  size_t openCount();

 private:
  using Key = std::pair<std::string, uint64_t>;
  using Clock = std::chrono::steady_clock;
  struct Fd {  // a descriptor closed with its last holder
    int fd;
    explicit Fd(int f) : fd(f) {}
    ~Fd();
  };
  struct Copy {
    std::shared_ptr<chunk::ChunkFile> file;
    std::shared_ptr<Fd> lock;  // its data directory's lock file
    Clock::time_point used;
  };
  // With mutex_ held:
  void keep(const Key& key, Copy copy);
  void drop(const Key& key);
  // The lock file of the data directory DIR of `path` (DIR/chunks/NAME); nullptr when it cannot
  // be opened here.
  std::shared_ptr<Fd> lockFor(const std::string& dir);
  void markRemote(const std::string& addr, std::chrono::seconds howLong);
  void sweep(Clock::time_point now);  // closes files unused for a minute

  const size_t maxOpen_;
  const std::string bootId_;  // this host's
  std::mutex mutex_;
  // Open files, most recently used first.
  std::list<std::pair<Key, Copy>> open_;
  std::map<Key, decltype(open_)::iterator> index_;
  std::map<std::string, Clock::time_point> remoteUntil_;
  std::map<std::pair<Key, uint64_t>, Clock::time_point> noCopyUntil_;  // (key, version)
  std::map<std::string, std::shared_ptr<Fd>> locks_;  // data directory -> its lock file
  Clock::time_point lastSweep_;
};

}  // namespace cairn::fs
