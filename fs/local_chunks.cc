#include "fs/local_chunks.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cinttypes>
#include <climits>
#include <cstdio>

namespace cairn::fs {

namespace {
constexpr auto UNREADABLE_FOR = std::chrono::seconds(60);  // files not openable here
constexpr auto ELSEWHERE_FOR = std::chrono::seconds(600);  // a server on another host
constexpr auto NO_COPY_FOR = std::chrono::seconds(5);      // a chunk a server has no copy of
constexpr auto IDLE_FOR = std::chrono::seconds(60);        // an unused file is closed
constexpr size_t MAX_DIRS = 64;       // data directories whose lock files are kept open
constexpr size_t MAX_NO_COPY = 4096;  // remembered chunks without a copy
}  // namespace

LocalChunks::Fd::~Fd() { ::close(fd); }

LocalChunks::LocalChunks(size_t maxOpen) : maxOpen_(maxOpen), bootId_(chunk::hostBootId()) {}

LocalChunks::~LocalChunks() = default;

bool LocalChunks::mayBeLocal(const std::string& addr) {
  if (bootId_.empty()) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = remoteUntil_.find(addr);
  return it == remoteUntil_.end() || it->second <= Clock::now();
}

void LocalChunks::markRemote(const std::string& addr, std::chrono::seconds howLong) {
  remoteUntil_[addr] = Clock::now() + howLong;
}

void LocalChunks::refuse(const std::string& addr) {
  std::lock_guard<std::mutex> lock(mutex_);
  markRemote(addr, UNREADABLE_FOR);
}

std::shared_ptr<LocalChunks::Fd> LocalChunks::lockFor(const std::string& dir) {
  if (auto it = locks_.find(dir); it != locks_.end()) return it->second;
  if (locks_.size() >= MAX_DIRS) return nullptr;
  int fd = chunk::openRegularReadOnly(chunk::DirLock::pathIn(dir));
  if (fd < 0) return nullptr;
  auto held = std::make_shared<Fd>(fd);
  locks_[dir] = held;
  return held;
}

void LocalChunks::sweep(Clock::time_point now) {
  if (now - lastSweep_ < std::chrono::seconds(10)) return;
  lastSweep_ = now;
  while (!open_.empty() && now - open_.back().second.used > IDLE_FOR) drop(open_.back().first);
  for (auto it = noCopyUntil_.begin(); it != noCopyUntil_.end();)
    it = it->second <= now ? noCopyUntil_.erase(it) : std::next(it);
}

std::shared_ptr<chunk::ChunkFile> LocalChunks::open(const std::string& addr, uint64_t id,
                                                    uint64_t version, const Locate& locate) {
  if (!mayBeLocal(addr)) return nullptr;
  Key key{addr, id};
  auto now = Clock::now();
  Copy kept;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    sweep(now);
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second.used = now;
      kept = it->second->second;
      open_.splice(open_.begin(), open_, it->second);
    } else if (auto nc = noCopyUntil_.find({key, version});
               nc != noCopyUntil_.end() && nc->second > now) {
      return nullptr;
    }
  }
  if (kept.file) {
    // Its server stopped (a restarted one takes the lock again), or the file was removed: the
    // servers answer for the chunk.
    if (!chunk::DirLock::held(kept.lock->fd) || !kept.file->linked()) {
      std::lock_guard<std::mutex> lock(mutex_);
      drop(key);
      // A data directory recreated since has a lock file of its own: open it again next time.
      for (auto it = locks_.begin(); it != locks_.end(); ++it)
        if (it->second == kept.lock) {
          locks_.erase(it);
          break;
        }
      return nullptr;
    }
    uint64_t hid = 0, hversion = 0;
    bool ok = false;
    try {
      ok = kept.file->readHeader(hid, hversion);
    } catch (kj::Exception&) {
    }
    if (ok && hid == id && hversion == version) return kept.file;
    forget(addr, id);
    // A newer copy: the servers answer ESTALE and the reader asks meta for the chunk again.
    if (ok && hid == id && hversion > version) return nullptr;
    // Otherwise its version is behind ours: ask again (locate raises the server's version to
    // ours, as a read would).
  }
  Located where = locate(addr);
  std::lock_guard<std::mutex> lock(mutex_);
  if (where.path.empty()) {
    if (noCopyUntil_.size() >= MAX_NO_COPY) noCopyUntil_.clear();
    noCopyUntil_[{key, version}] = now + NO_COPY_FOR;
    return nullptr;
  }
  if (where.bootId != bootId_) {
    if (remoteUntil_.find(addr) == remoteUntil_.end())
      spdlog::info("chunk server {} is on another host: reading through it", addr);
    markRemote(addr, ELSEWHERE_FOR);
    return nullptr;
  }
  // DIR/chunks/<16 hex digits of the id>.chk, nothing else.
  char name[32];
  snprintf(name, sizeof(name), "/chunks/%016" PRIx64 ".chk", id);
  const std::string& path = where.path;
  size_t tail = strlen(name);
  if (path.size() >= PATH_MAX || path.size() <= tail || path[0] != '/' ||
      path.compare(path.size() - tail, tail, name) != 0 || path.find('\0') != std::string::npos) {
    spdlog::warn("chunk server {} named {} for chunk {:016x}: not a chunk file's path; reading "
                 "through it", addr, path, id);
    markRemote(addr, UNREADABLE_FOR);
    return nullptr;
  }
  try {
    auto file = std::make_shared<chunk::ChunkFile>(chunk::ChunkFile::openReadOnly(path));
    auto [device, inode] = file->identity();
    auto held = lockFor(path.substr(0, path.size() - tail));
    if (file->id() != id || device != where.device || inode != where.inode || !held ||
        !chunk::DirLock::held(held->fd)) {
      spdlog::info("chunk server {}: {} here is not its running copy of chunk {:016x}; reading "
                   "through it", addr, path, id);
      markRemote(addr, UNREADABLE_FOR);
      return nullptr;
    }
    if (file->version() != version) return nullptr;
    keep(key, Copy{file, held, now});
    return file;
  } catch (kj::Exception& e) {
    if (remoteUntil_.find(addr) == remoteUntil_.end())
      spdlog::info("chunk server {}: its files cannot be read from here ({}); reading through it",
                   addr, e.getDescription().cStr());
    markRemote(addr, UNREADABLE_FOR);
    return nullptr;
  }
}

void LocalChunks::keep(const Key& key, Copy copy) {
  drop(key);
  open_.emplace_front(key, std::move(copy));
  index_[key] = open_.begin();
  while (open_.size() > maxOpen_) drop(open_.back().first);  // closed once no read holds it
}

void LocalChunks::drop(const Key& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  open_.erase(it->second);
  index_.erase(it);
}

void LocalChunks::forget(const std::string& addr, uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  drop(Key{addr, id});
}

size_t LocalChunks::openCount() {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_.size();
}

}  // namespace cairn::fs
