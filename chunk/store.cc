#include "chunk/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cinttypes>
#include <filesystem>
#include <set>

namespace cairn::chunk {

namespace {
constexpr size_t SPARES_AHEAD = 256;     // made ahead per directory

// Calls fn(number, path) for every file of `dir` named <16 hex digits>.<suffix>; false when the
// directory cannot be opened.
template <typename Fn>
bool forNumbered(const std::string& dir, const std::string& suffix, Fn&& fn) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  while (auto* ent = readdir(d)) {
    uint64_t n;
    char found[8];
    if (sscanf(ent->d_name, "%16" SCNx64 ".%6s", &n, found) == 2 && suffix == found)
      fn(n, dir + "/" + ent->d_name);
  }
  closedir(d);
  return true;
}
}  // namespace

SparePool::SparePool(std::string dir, std::string goneDir, size_t keep, size_t max)
    : dir_(std::move(dir)), goneDir_(std::move(goneDir)), keep_(keep), max_(max) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  KJ_REQUIRE(!ec, "cannot create spare directory", dir_, ec.message());
  std::filesystem::create_directories(goneDir_, ec);
  KJ_REQUIRE(!ec, "cannot create directory", goneDir_, ec.message());
  // Files discarded before a stop are unlinked now.
  forNumbered(goneDir_, "gone", [this](uint64_t n, const std::string& path) {
    nextGone_ = std::max(nextGone_, n + 1);
    gone_.push_back(path);
  });
  KJ_REQUIRE(forNumbered(dir_, "spare", [this](uint64_t n, const std::string& path) {
               next_ = std::max(next_, n + 1);
               struct stat st;
               if (stat(path.c_str(), &st) != 0) return;
               // One left with data (a crash while it was being recycled or adopted) is emptied
               // first.
               (st.st_size == 0 ? ready_ : dirty_).push_back(path);
             }),
             "cannot open spare directory", dir_, strerror(errno));
  thread_ = std::thread([this]() { run(); });
}

SparePool::~SparePool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

std::string SparePool::nextName() {
  char name[40];
  snprintf(name, sizeof(name), "/%016" PRIx64 ".spare", next_++);
  return dir_ + name;
}

std::optional<std::string> SparePool::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (ready_.size() <= keep_ / 2) wake_.notify_one();
  if (ready_.empty()) return std::nullopt;
  auto path = std::move(ready_.back());
  ready_.pop_back();
  return path;
}

bool SparePool::recycle(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (ready_.size() + dirty_.size() >= max_) return false;
  auto to = nextName();
  if (::rename(path.c_str(), to.c_str()) != 0) return false;
  dirty_.push_back(to);
  wake_.notify_one();
  return true;
}

void SparePool::discard(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  char name[40];
  snprintf(name, sizeof(name), "/%016" PRIx64 ".gone", nextGone_++);
  std::string to = goneDir_ + name;
  if (::rename(path.c_str(), to.c_str()) != 0) {
    spdlog::warn("rename {} to {}: {}; unlinking it here", path, to, strerror(errno));
    if (::unlink(path.c_str()) != 0) spdlog::warn("unlink {}: {}", path, strerror(errno));
    return;
  }
  gone_.push_back(std::move(to));
  wake_.notify_one();
}

size_t SparePool::ready() {
  std::lock_guard<std::mutex> lock(mutex_);
  return ready_.size();
}

size_t SparePool::discarding() {
  std::lock_guard<std::mutex> lock(mutex_);
  return gone_.size();
}

void SparePool::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  bool makingFailed = false;
  for (;;) {
    wake_.wait(lock, [this]() {
      return stop_ || !dirty_.empty() || !gone_.empty() || ready_.size() < keep_ / 2;
    });
    if (stop_) return;
    // One file at a time, most urgent first: recycled files to empty, spares while the pool is
    // short (a writer waits for one), then discarded files to unlink.
    while (!stop_) {
      if (!dirty_.empty()) {
        auto path = std::move(dirty_.back());
        dirty_.pop_back();
        lock.unlock();
        bool ok = ::truncate(path.c_str(), 0) == 0;
        if (!ok) {
          spdlog::warn("spare {}: truncate: {}", path, strerror(errno));
          ::unlink(path.c_str());
        }
        lock.lock();
        if (ok) ready_.push_back(std::move(path));
      } else if (!makingFailed && ready_.size() < keep_) {
        auto path = nextName();
        lock.unlock();
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int err = errno;
        if (fd >= 0) ::close(fd);
        lock.lock();
        if (fd < 0) {
          spdlog::warn("spare {}: {}; new chunks are created directly", path, strerror(err));
          makingFailed = true;  // a full disk or a read-only one: try again in a while
        } else {
          ready_.push_back(std::move(path));
        }
      } else if (!gone_.empty()) {
        auto path = std::move(gone_.back());
        gone_.pop_back();
        lock.unlock();
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
          spdlog::warn("unlink {}: {}", path, strerror(errno));
        lock.lock();
      } else {
        break;
      }
    }
    if (makingFailed && !stop_) {
      // Not in a tight loop: wait a while before making spares again.
      wake_.wait_for(lock, std::chrono::seconds(5), [this]() { return stop_; });
      makingFailed = false;
    }
  }
}

ChunkStore::ChunkStore(std::vector<std::string> dirs, uint32_t maxBlocks, size_t maxSpares)
    : dirs_(std::move(dirs)), maxBlocks_(maxBlocks) {
  KJ_REQUIRE(!dirs_.empty(), "at least one data directory is needed");
  for (size_t d = 0; d < dirs_.size(); d++) {
    auto sub = dirs_[d] + "/chunks";
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    KJ_REQUIRE(!ec, "cannot create data directory", sub, ec.message());
    locks_.push_back(std::make_unique<DirLock>(dirs_[d]));
    bool opened = forNumbered(sub, "chk", [&](uint64_t id, const std::string& path) {
      try {
        auto f = ChunkFile::open(path);
        if (f.id() != id) {
          spdlog::error("skipping chunk file {}: its header says chunk {:016x}", path, f.id());
          return;
        }
        index_[id] = Entry{d, f.version(), f.allocatedBytes()};
        usedBytes_ += index_[id].bytes;
      } catch (kj::Exception& e) {
        spdlog::error("skipping unreadable chunk file {}: {}", path, e.getDescription().cStr());
      }
    });
    KJ_REQUIRE(opened, "cannot open data directory", sub, strerror(errno));
    spares_.push_back(std::make_unique<SparePool>(dirs_[d] + "/spare", dirs_[d] + "/gone",
                                                  SPARES_AHEAD, maxSpares));
  }
  spdlog::info("chunk store: {} chunks in {} directories", index_.size(), dirs_.size());
}

std::string ChunkStore::pathOf(size_t dir, uint64_t id) const {
  char name[32];
  snprintf(name, sizeof(name), "%016" PRIx64 ".chk", id);
  return dirs_[dir] + "/chunks/" + name;
}

std::string ChunkStore::pathFor(uint64_t id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return "";
  std::error_code ec;
  auto abs = std::filesystem::absolute(pathOf(it->second.dir, id), ec);
  return ec ? "" : abs.lexically_normal().string();
}

ChunkFile& ChunkStore::cache(uint64_t id, ChunkFile file) {
  open_.emplace_front(id, std::make_shared<ChunkFile>(std::move(file)));
  openIndex_[id] = open_.begin();
  while (open_.size() > MAX_OPEN) {
    openIndex_.erase(open_.back().first);
    open_.pop_back();
  }
  return *open_.front().second;
}

ChunkFile* ChunkStore::find(uint64_t id) {
  auto it = openIndex_.find(id);
  if (it != openIndex_.end()) {
    open_.splice(open_.begin(), open_, it->second);
    return open_.front().second.get();
  }
  auto e = index_.find(id);
  if (e == index_.end()) return nullptr;
  return &cache(id, ChunkFile::open(pathOf(e->second.dir, id)));
}

std::shared_ptr<ChunkFile> ChunkStore::share(uint64_t id) {
  if (!find(id)) return nullptr;
  if (shared_.size() > 4 * MAX_OPEN) std::erase_if(shared_, [](auto& e) { return e.second.expired(); });
  shared_[id] = open_.front().second;  // find() put it first
  return open_.front().second;
}

ChunkFile& ChunkStore::findOrCreate(uint64_t id, uint64_t version) {
  if (auto* f = find(id)) return *f;
  // The directory with the most free space.
  size_t best = 0;
  uint64_t bestFree = 0;
  for (size_t d = 0; d < dirs_.size() && dirs_.size() > 1; d++) {
    struct statvfs vfs;
    if (statvfs(dirs_[d].c_str(), &vfs) == 0) {
      uint64_t free = uint64_t(vfs.f_bavail) * vfs.f_frsize;
      if (free > bestFree) {
        bestFree = free;
        best = d;
      }
    }
  }
  auto path = pathOf(best, id);
  std::optional<ChunkFile> f;
  if (auto spare = spares_[best]->take()) {
    try {
      f = ChunkFile::adopt(*spare, path, id, version, maxBlocks_);
    } catch (kj::Exception& e) {
      spdlog::warn("chunk {:016x}: spare {} not used: {}", id, *spare, e.getDescription().cStr());
      ::unlink(spare->c_str());
    }
  }
  if (!f) f = ChunkFile::create(path, id, version, maxBlocks_);
  index_[id] = Entry{best, version, 0};
  return cache(id, std::move(*f));
}

size_t ChunkStore::spares() {
  size_t n = 0;
  for (auto& p : spares_) n += p->ready();
  return n;
}

size_t ChunkStore::discarding() {
  size_t n = 0;
  for (auto& p : spares_) n += p->discarding();
  return n;
}

void ChunkStore::noteSize(uint64_t id) {
  auto e = index_.find(id);
  auto* f = find(id);
  if (e == index_.end() || f == nullptr) return;
  uint64_t now = f->allocatedBytes();
  usedBytes_ = usedBytes_ - std::min(usedBytes_, e->second.bytes) + now;
  e->second.bytes = now;
}

bool ChunkStore::remove(uint64_t id) {
  auto e = index_.find(id);
  if (e == index_.end()) return false;
  auto it = openIndex_.find(id);
  if (it != openIndex_.end()) {
    open_.erase(it->second);
    openIndex_.erase(it);
  }
  bool held = false;
  if (auto sh = shared_.find(id); sh != shared_.end()) {
    held = !sh->second.expired();
    shared_.erase(sh);
  }
  auto path = pathOf(e->second.dir, id);
  auto& pool = *spares_[e->second.dir];
  if (held || !pool.recycle(path)) pool.discard(path);
  usedBytes_ -= std::min(usedBytes_, e->second.bytes);
  index_.erase(e);
  return true;
}

std::vector<uint64_t> ChunkStore::idsAfter(uint64_t after, size_t max) const {
  std::vector<uint64_t> out;
  for (auto it = index_.upper_bound(after); it != index_.end() && out.size() < max; ++it)
    out.push_back(it->first);
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> ChunkStore::pageAfter(uint64_t after, size_t max) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto it = index_.upper_bound(after); it != index_.end() && out.size() < max;) {
    auto path = pathOf(it->second.dir, it->first);
    if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
      // Removed behind our back (by hand, or a disk problem): an open descriptor may still read
      // it, but it is gone, and saying otherwise would hide the loss from fsck.
      spdlog::error("chunk {:016x}: its file {} is gone from disk; forgetting the copy",
                    it->first, path);
      if (auto o = openIndex_.find(it->first); o != openIndex_.end()) {
        open_.erase(o->second);
        openIndex_.erase(o);
      }
      usedBytes_ -= std::min(usedBytes_, it->second.bytes);
      it = index_.erase(it);
      continue;
    }
    out.emplace_back(it->first, it->second.version);
    ++it;
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> ChunkStore::list() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto& [id, e] : index_) out.emplace_back(id, e.version);
  return out;
}

StoreUsage ChunkStore::usage() {
  StoreUsage u;
  std::set<dev_t> seen;
  for (auto& d : dirs_) {
    struct stat st;
    struct statvfs vfs;
    if (stat(d.c_str(), &st) != 0 || statvfs(d.c_str(), &vfs) != 0) continue;
    if (!seen.insert(st.st_dev).second) continue;  // two directories on one filesystem
    u.capacityBytes += uint64_t(vfs.f_blocks) * vfs.f_frsize;
  }
  u.usedBytes = usedBytes_;
  u.chunks = index_.size();
  if (capacityLimit_ != 0) u.capacityBytes = std::min(u.capacityBytes, capacityLimit_);
  return u;
}

}  // namespace cairn::chunk
