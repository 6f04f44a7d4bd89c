#include "fs/name_cache.h"

#include <algorithm>

namespace cairn::fs {

NameCache::NameCache(Clock::duration bound, size_t maxEntries)
    : bound_(bound), max_(maxEntries) {}

bool NameCache::trusted(Clock::time_point asked, Clock::time_point now) const {
  return now < std::max(asked, vouched_) + bound_;
}

void NameCache::used(Clock::time_point now) {
  lastUse_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
}

bool NameCache::usedSince(Clock::time_point since) const {
  return lastUse_.load(std::memory_order_relaxed) >= since.time_since_epoch().count();
}

bool NameCache::raced(uint64_t gen, const Key* key, uint64_t ino) const {
  return allDropped_ > gen || attrsDropped_ > gen || attrDrops_[stripeOf(ino)] > gen ||
         (key && nameDrops_[stripeOf(*key)] > gen);
}

void NameCache::insert(Key key, const struct stat& st, Clock::time_point asked) {
  if (names_.size() >= max_ && !names_.count(key)) names_.clear();
  names_[std::move(key)] = Name{st.st_ino, asked};
  insertAttr(st, asked);
}

void NameCache::insertAttr(const struct stat& st, Clock::time_point asked) {
  if (attrs_.size() >= max_ && !attrs_.count(st.st_ino)) attrs_.clear();
  attrs_[st.st_ino] = Attr{st, asked};
}

void NameCache::put(uint64_t gen, uint64_t parent, std::string_view name, const struct stat& st,
                    Clock::time_point asked) {
  if (max_ == 0) return;
  Key key{parent, std::string(name)};
  std::lock_guard<std::mutex> lock(mutex_);
  used(Clock::now());
  if (!raced(gen, &key, st.st_ino)) insert(std::move(key), st, asked);
}

void NameCache::putAttr(uint64_t gen, const struct stat& st, Clock::time_point asked) {
  if (max_ == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  used(Clock::now());
  if (!raced(gen, nullptr, st.st_ino)) insertAttr(st, asked);
}

void NameCache::putOwn(uint64_t gen, uint64_t parent, std::string_view name,
                       const struct stat& st, Clock::time_point asked) {
  Key key{parent, std::string(name)};
  std::lock_guard<std::mutex> lock(mutex_);
  bool ok = !raced(gen, &key, st.st_ino);
  uint64_t s = ++seq_;
  nameDrops_[stripeOf(key)] = s;
  attrDrops_[stripeOf(st.st_ino)] = s;
  if (max_ == 0) return;
  used(Clock::now());
  if (ok) {
    insert(std::move(key), st, asked);
  } else {
    names_.erase(key);
    attrs_.erase(st.st_ino);
  }
}

bool NameCache::entry(uint64_t parent, std::string_view name, struct stat& st,
                      Clock::time_point now) {
  if (max_ == 0) return false;
  Key key{parent, std::string(name)};
  std::lock_guard<std::mutex> lock(mutex_);
  used(now);
  auto n = names_.find(key);
  if (n == names_.end() || !trusted(n->second.asked, now)) return false;
  auto a = attrs_.find(n->second.ino);
  if (a == attrs_.end() || !trusted(a->second.asked, now)) return false;
  st = a->second.st;
  return true;
}

bool NameCache::attr(uint64_t ino, struct stat& st, Clock::time_point now) {
  if (max_ == 0) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  used(now);
  auto a = attrs_.find(ino);
  if (a == attrs_.end() || !trusted(a->second.asked, now)) return false;
  st = a->second.st;
  return true;
}

uint64_t NameCache::inoOf(uint64_t parent, std::string_view name) {
  Key key{parent, std::string(name)};
  std::lock_guard<std::mutex> lock(mutex_);
  auto n = names_.find(key);
  return n == names_.end() ? 0 : n->second.ino;
}

void NameCache::dropName(uint64_t parent, std::string_view name) {
  Key key{parent, std::string(name)};
  std::lock_guard<std::mutex> lock(mutex_);
  nameDrops_[stripeOf(key)] = ++seq_;
  names_.erase(key);
}

void NameCache::dropAttr(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mutex_);
  attrDrops_[stripeOf(ino)] = ++seq_;
  attrs_.erase(ino);
}

void NameCache::dropAttrs() {
  std::lock_guard<std::mutex> lock(mutex_);
  attrsDropped_ = ++seq_;
  if (!attrs_.empty()) attrs_ = {};  // clear() would sweep every bucket, each time
}

void NameCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  allDropped_ = ++seq_;
  if (!names_.empty()) names_ = {};
  if (!attrs_.empty()) attrs_ = {};
}

void NameCache::vouch(Clock::time_point sent) {
  std::lock_guard<std::mutex> lock(mutex_);
  vouched_ = std::max(vouched_, sent);
}

size_t NameCache::names() {
  std::lock_guard<std::mutex> lock(mutex_);
  return names_.size();
}

size_t NameCache::attrs() {
  std::lock_guard<std::mutex> lock(mutex_);
  return attrs_.size();
}

}  // namespace cairn::fs
