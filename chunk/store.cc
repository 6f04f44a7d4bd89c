#include "chunk/store.h"

#include <dirent.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cinttypes>
#include <filesystem>
#include <set>

namespace cairn::chunk {

ChunkStore::ChunkStore(std::vector<std::string> dirs, uint32_t maxBlocks)
    : dirs_(std::move(dirs)), maxBlocks_(maxBlocks) {
  KJ_REQUIRE(!dirs_.empty(), "at least one data directory is needed");
  for (size_t d = 0; d < dirs_.size(); d++) {
    auto sub = dirs_[d] + "/chunks";
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    KJ_REQUIRE(!ec, "cannot create data directory", sub, ec.message());
    DIR* dir = opendir(sub.c_str());
    KJ_REQUIRE(dir != nullptr, "cannot open data directory", sub, strerror(errno));
    while (auto* ent = readdir(dir)) {
      uint64_t id;
      char suffix[8];
      if (sscanf(ent->d_name, "%16" SCNx64 ".%4s", &id, suffix) != 2 || std::string(suffix) != "chk")
        continue;
      try {
        auto f = ChunkFile::open(sub + "/" + ent->d_name);
        if (f.id() != id) {
          spdlog::error("skipping chunk file {}/{}: its header says chunk {:016x}", sub,
                        ent->d_name, f.id());
          continue;
        }
        index_[id] = Entry{d, f.version(), f.allocatedBytes()};
        usedBytes_ += index_[id].bytes;
      } catch (kj::Exception& e) {
        spdlog::error("skipping unreadable chunk file {}/{}: {}", sub, ent->d_name,
                      e.getDescription().cStr());
      }
    }
    closedir(dir);
  }
  spdlog::info("chunk store: {} chunks in {} directories", index_.size(), dirs_.size());
}

std::string ChunkStore::pathOf(size_t dir, uint64_t id) const {
  char name[32];
  snprintf(name, sizeof(name), "%016" PRIx64 ".chk", id);
  return dirs_[dir] + "/chunks/" + name;
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
  return open_.front().second;  // find() put it first
}

ChunkFile& ChunkStore::findOrCreate(uint64_t id, uint64_t version) {
  if (auto* f = find(id)) return *f;
  // The directory with the most free space.
  size_t best = 0;
  uint64_t bestFree = 0;
  for (size_t d = 0; d < dirs_.size(); d++) {
    struct statvfs vfs;
    if (statvfs(dirs_[d].c_str(), &vfs) == 0) {
      uint64_t free = uint64_t(vfs.f_bavail) * vfs.f_frsize;
      if (free > bestFree) {
        bestFree = free;
        best = d;
      }
    }
  }
  auto f = ChunkFile::create(pathOf(best, id), id, version, maxBlocks_);
  index_[id] = Entry{best, version, 0};
  return cache(id, std::move(f));
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
  auto path = pathOf(e->second.dir, id);
  if (::unlink(path.c_str()) != 0) spdlog::warn("unlink {}: {}", path, strerror(errno));
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
