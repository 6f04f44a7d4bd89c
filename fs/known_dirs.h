// Directories whose every name this mount knows, so that a lookup of a new name there needs no
// round trip to meta (tar, cp -r, make and untar create thousands of names that the kernel first
// looks up, each a miss).
//
// A directory becomes known when this mount makes it (it is empty then). Our own changes of its
// names keep the set current; a change elsewhere reaches us through meta's change feed, which
// forgets the directory. The feed is asynchronous, so knowledge is bounded in time like the
// kernel's own negative entries: it lasts an entry timeout from the moment it was last proven
// exact. Proof comes with every reply to our own change: meta tells the directory's next readdir
// cookie, and every name added anywhere takes one. The cookie our change accounts for (one more
// for an add, the same for a removal) shows that nobody else added a name since we knew the
// directory, so the set is exact as of when we asked and stays known an entry timeout from then:
// a mount filling a directory keeps answering lookups of new names itself for as long as it does.
// Any other cookie means a name we do not know was added (elsewhere, or by another of our own
// changes answered out of order), and the directory is forgotten.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace cairn::fs {

class KnownDirs {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t MAX_DIRS = 4096;
  static constexpr size_t MAX_NAMES = 65536;  // per directory

  explicit KnownDirs(double validSec) : validSec_(validSec) {}

  // A directory we just made, empty, whose next cookie is `cookie` (0: unknown).
  void know(uint64_t dir, uint64_t cookie, Clock::time_point now = Clock::now());
  // True when `name` is surely absent from `dir`; `leftSec` is how long that stays sure.
  bool absent(uint64_t dir, const std::string& name, double& leftSec,
              Clock::time_point now = Clock::now());
  // Our own change of a name in `dir`: `err` its result, `dirCookie` the directory's next
  // cookie after it (0: not told), `sent` when we asked.
  void changed(uint64_t dir, const std::string& name, bool added, int err, uint64_t dirCookie,
               Clock::time_point sent);
  void forget(uint64_t dir);
  bool known(uint64_t dir, Clock::time_point now = Clock::now());

 private:
  struct Dir {
    std::unordered_set<std::string> names;
    Clock::time_point at;  // exact as of then
    uint64_t cookie = 0;   // its next cookie then (0: unknown, so never renewed)
  };
  const double validSec_;
  std::mutex mutex_;
  std::unordered_map<uint64_t, Dir> dirs_;
};

}  // namespace cairn::fs
