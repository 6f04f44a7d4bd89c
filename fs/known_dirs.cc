#include "fs/known_dirs.h"

#include <algorithm>

namespace cairn::fs {

void KnownDirs::know(uint64_t dir, uint64_t cookie, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (dirs_.size() >= MAX_DIRS) dirs_.clear();
  dirs_[dir] = Dir{{}, now, cookie};
}

bool KnownDirs::absent(uint64_t dir, const std::string& name, double& leftSec,
                       Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = dirs_.find(dir);
  if (it == dirs_.end()) return false;
  leftSec = validSec_ - std::chrono::duration<double>(now - it->second.at).count();
  if (leftSec < 0.01) {
    dirs_.erase(it);
    return false;
  }
  return it->second.names.count(name) == 0;
}

bool KnownDirs::known(uint64_t dir, Clock::time_point now) {
  double left;
  return absent(dir, std::string(), left, now);  // no name is empty
}

void KnownDirs::changed(uint64_t dir, const std::string& name, bool added, int err,
                        uint64_t dirCookie, Clock::time_point sent) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = dirs_.find(dir);
  if (it == dirs_.end()) return;
  auto& d = it->second;
  if (err != 0 || d.names.size() >= MAX_NAMES) {
    dirs_.erase(it);
    return;
  }
  if (added) {
    d.names.insert(name);
  } else {
    d.names.erase(name);
  }
  if (dirCookie == 0 || d.cookie == 0) return;  // no proof: known until its time runs out
  if (dirCookie != d.cookie + (added ? 1 : 0)) {
    dirs_.erase(it);
    return;
  }
  d.cookie = dirCookie;
  d.at = std::max(d.at, sent);
}

void KnownDirs::forget(uint64_t dir) {
  std::lock_guard<std::mutex> lock(mutex_);
  dirs_.erase(dir);
}

}  // namespace cairn::fs
