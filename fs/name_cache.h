// Names and attributes this mount learnt from meta, kept after the kernel has let go of them
// (its entry and attribute timeouts ran out, or memory pressure and drop_caches evicted them), so
// that the kernel's next lookup or getattr of them is answered here instead of by meta: a stat
// of a name looked up a while ago, the lookup before each unlink of rm or find -delete, make's
// second pass over a tree.
//
// What is kept is exact as of when it was asked. It stays exact until something changes it, and
// every change reaches this mount: its own changes drop what they touch (the caller's job, see
// CairnFs), and other clients' changes come through meta's change feed, whose invalidations drop
// them here as they reach the kernel. The feed is asynchronous, so an answer from here is trusted
// only as far as the feed vouches for it: a reply to the mount's watch that meta built after a
// linearizable read (so it carries every change committed before the watch was sent) vouches
// that nothing kept here was changed elsewhere before that send time. An entry is trusted for
// `bound` (the attribute timeout) from the later of when it was asked and the last vouch:
// without a vouch, exactly as long as the kernel trusts it; with the feed answering, for as
// long as it goes on answering; with the feed cut off, what this mount may miss is bounded as
// the kernel's own caches bound it.
//
// A reply that raced a change (asked before a drop, answered after it) must not be kept: every
// drop takes a number from one sequence and leaves it on the stripe of what it dropped (a name,
// or an inode's attributes), and put() takes the sequence number read before asking and keeps
// nothing when a later drop hit a stripe of what it would keep. A put of our own change's result
// also leaves its number there, so that a reply read before the change and answered after it is
// not kept over it.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cairn::fs {

class NameCache {
 public:
  using Clock = std::chrono::steady_clock;

  // `maxEntries`: names and attributes kept (each); 0 keeps nothing.
  NameCache(Clock::duration bound, size_t maxEntries);

  // Read before asking meta; put() keeps nothing when a drop of the same name or inode came
  // after it.
  uint64_t generation() const { return seq_.load(); }
  // (parent, name) names st.st_ino, whose attributes are `st`, as asked at `asked`.
  void put(uint64_t gen, uint64_t parent, std::string_view name, const struct stat& st,
           Clock::time_point asked);
  void putAttr(uint64_t gen, const struct stat& st, Clock::time_point asked);
  // The same for the result of our own change (a name made or linked): also keeps out a reply
  // read before the change that comes back after it.
  void putOwn(uint64_t gen, uint64_t parent, std::string_view name, const struct stat& st,
              Clock::time_point asked);

  // What (parent, name) names, with its attributes, if both are kept and trusted at `now`.
  bool entry(uint64_t parent, std::string_view name, struct stat& st,
             Clock::time_point now = Clock::now());
  bool attr(uint64_t ino, struct stat& st, Clock::time_point now = Clock::now());
  // The inode (parent, name) names, if kept (trusted or not); 0 otherwise.
  uint64_t inoOf(uint64_t parent, std::string_view name);

  void dropName(uint64_t parent, std::string_view name);
  void dropAttr(uint64_t ino);
  void dropAttrs();
  void clear();

  // Every change committed elsewhere before `sent` has been applied here.
  void vouch(Clock::time_point sent);
  // Whether the cache was asked or filled since `since`: the feed is worth asking often.
  bool usedSince(Clock::time_point since) const;

  size_t names();
  size_t attrs();

 private:
  struct Key {
    uint64_t parent;
    std::string name;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<std::string>()(k.name) ^ (k.parent * 0x9E3779B97F4A7C15ull);
    }
  };
  struct Name {
    uint64_t ino;
    Clock::time_point asked;
  };
  struct Attr {
    struct stat st;
    Clock::time_point asked;
  };
  static constexpr size_t STRIPES = 4096;
  bool trusted(Clock::time_point asked, Clock::time_point now) const;
  void used(Clock::time_point now);
  // Whether a drop since `gen` touched (parent, name) or the inode (callers hold mutex_).
  bool raced(uint64_t gen, const Key* key, uint64_t ino) const;
  size_t stripeOf(const Key& key) const { return KeyHash()(key) % STRIPES; }
  static size_t stripeOf(uint64_t ino) { return (ino * 0x9E3779B97F4A7C15ull >> 40) % STRIPES; }
  void insert(Key key, const struct stat& st, Clock::time_point asked);
  void insertAttr(const struct stat& st, Clock::time_point asked);

  const Clock::duration bound_;
  const size_t max_;
  std::atomic<uint64_t> seq_{0};  // written under mutex_
  std::atomic<Clock::rep> lastUse_{0};
  std::mutex mutex_;
  Clock::time_point vouched_{};  // guarded by mutex_
  std::unordered_map<Key, Name, KeyHash> names_;
  std::unordered_map<uint64_t, Attr> attrs_;
  // The last drop on each stripe, and of everything (clear) or of every attribute.
  std::vector<uint64_t> nameDrops_ = std::vector<uint64_t>(STRIPES, 0);
  std::vector<uint64_t> attrDrops_ = std::vector<uint64_t>(STRIPES, 0);
  uint64_t allDropped_ = 0, attrsDropped_ = 0;
};

}  // namespace cairn::fs
