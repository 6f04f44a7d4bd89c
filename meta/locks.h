// File locks held by meta for every client: POSIX record locks (fcntl F_SETLK) and whole-file
// flock locks, each kind in its own space as on Linux. A lock belongs to an owner: the client (its
// session) and the lock owner the kernel names (a process's files for POSIX locks, an open file
// for flock). Pure functions over one inode's locks; the state machine stores them in the
// `locks` table and applies them in committed commands, so locks survive a leader change; a
// client whose session ends loses all of its locks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::meta::locks {

constexpr uint64_t TO_EOF = UINT64_MAX;  // `end` of a lock that reaches past any end of file

struct Lock {
  uint64_t client = 0;  // session (the mount's client id)
  uint64_t owner = 0;   // lock owner within that client
  uint32_t pid = 0;     // for F_GETLK replies (the pid on its own host)
  bool write = false;   // exclusive (F_WRLCK, LOCK_EX) or shared
  bool flock = false;   // flock(2) lock, else POSIX record lock
  uint64_t start = 0;
  uint64_t end = TO_EOF;  // exclusive

  bool sameOwner(const Lock& o) const {
    return client == o.client && owner == o.owner && flock == o.flock;
  }
  bool operator==(const Lock&) const = default;
};

// The first lock of another owner, of the same kind, that overlaps `want` and conflicts with it
// (one of the two is a write lock).
std::optional<Lock> conflict(const std::vector<Lock>& held, const Lock& want);

// Sets `want` for its owner (the owner's locks in its range are replaced, a lock of the same type
// next to or over it merges), as fcntl does. Call only when conflict() found none.
void set(std::vector<Lock>& held, const Lock& want);
// Removes the owner's locks of that kind in [start, end) (splitting a lock around the range).
void unlock(std::vector<Lock>& held, const Lock& range);
// Removes every lock of `client`.
void releaseClient(std::vector<Lock>& held, uint64_t client);

std::string encode(const std::vector<Lock>& held);
std::vector<Lock> decode(std::string_view v);

}  // namespace cairn::meta::locks
