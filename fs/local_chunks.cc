#include "fs/local_chunks.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <climits>

namespace cairn::fs {

namespace {
constexpr auto REMOTE_FOR = std::chrono::seconds(60);
constexpr size_t MAX_DIRS = 64;  // data directories whose lock files are kept open
}  // namespace

LocalChunks::~LocalChunks() {
  for (auto& [dir, fd] : locks_) ::close(fd);
}

bool LocalChunks::mayBeLocal(const std::string& addr) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = remoteUntil_.find(addr);
  return it == remoteUntil_.end() || it->second <= std::chrono::steady_clock::now();
}

void LocalChunks::markRemote(const std::string& addr) {
  remoteUntil_[addr] = std::chrono::steady_clock::now() + REMOTE_FOR;
}

int LocalChunks::lockFor(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return -1;
  std::string chunks = path.substr(0, slash);
  auto up = chunks.rfind('/');
  if (up == std::string::npos || chunks.substr(up + 1) != "chunks") return -1;
  std::string dir = chunks.substr(0, up);
  if (auto it = locks_.find(dir); it != locks_.end()) return it->second;
  if (locks_.size() >= MAX_DIRS) return -1;
  std::string lockPath = chunk::DirLock::pathIn(dir);
  int fd = ::open(lockPath.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  locks_[dir] = fd;
  return fd;
}

std::shared_ptr<chunk::ChunkFile> LocalChunks::open(const std::string& addr, uint64_t id,
                                                    uint64_t version, const Locate& locate) {
  if (!mayBeLocal(addr)) return nullptr;
  Key key{addr, id};
  Copy kept{nullptr, -1};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      kept = it->second->second;
      open_.splice(open_.begin(), open_, it->second);
    }
  }
  if (kept.file) {
    // Its server stopped (a restarted one takes the lock again): it may no longer be in the
    // chain, so its copy is not read here; the servers answer for it.
    if (!chunk::DirLock::held(kept.lockFd)) {
      forget(addr, id);
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
    // Otherwise the file was recycled or its version is behind ours: ask again (locate raises
    // the server's version to ours, as a read would).
  }
  std::string path = locate(addr);
  if (path.empty()) return nullptr;
  if (path[0] != '/' || path.size() >= PATH_MAX || path.find('\0') != std::string::npos) {
    spdlog::warn("chunk server {} named an unusable path for chunk {:016x}", addr, id);
    std::lock_guard<std::mutex> lock(mutex_);
    markRemote(addr);
    return nullptr;
  }
  try {
    auto file = std::make_shared<chunk::ChunkFile>(chunk::ChunkFile::openReadOnly(path));
    std::lock_guard<std::mutex> lock(mutex_);
    if (file->id() != id) {
      spdlog::warn("{} holds chunk {:016x}, not {:016x} as server {} said; reading through it",
                   path, file->id(), id, addr);
      markRemote(addr);
      return nullptr;
    }
    int lockFd = lockFor(path);
    if (lockFd < 0 || !chunk::DirLock::held(lockFd)) {
      spdlog::info("chunk server {}: no running server holds the directory of {} here; reading "
                   "through it", addr, path);
      markRemote(addr);
      return nullptr;
    }
    if (file->version() != version) return nullptr;
    keep(key, Copy{file, lockFd});
    return file;
  } catch (kj::Exception& e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (remoteUntil_.find(addr) == remoteUntil_.end())
      spdlog::info("chunk server {}: its files cannot be read from here ({}); reading through it",
                   addr, e.getDescription().cStr());
    markRemote(addr);
    return nullptr;
  }
}

void LocalChunks::keep(const Key& key, Copy copy) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    open_.erase(it->second);
    index_.erase(it);
  }
  open_.emplace_front(key, std::move(copy));
  index_[key] = open_.begin();
  while (open_.size() > maxOpen_) {
    index_.erase(open_.back().first);
    open_.pop_back();  // closed once no read holds it
  }
}

void LocalChunks::forget(const std::string& addr, uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(Key{addr, id});
  if (it == index_.end()) return;
  open_.erase(it->second);
  index_.erase(it);
}

size_t LocalChunks::openCount() {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_.size();
}

}  // namespace cairn::fs
