#include "meta/locks.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstring>

namespace cairn::meta::locks {

namespace {

bool overlaps(const Lock& a, const Lock& b) { return a.start < b.end && b.start < a.end; }

// Record layout: client u64, owner u64, start u64, end u64, pid u32, flags u8 (1 write, 2 flock).
constexpr size_t RECORD = 8 * 4 + 4 + 1;

void sortLocks(std::vector<Lock>& held) {
  std::sort(held.begin(), held.end(), [](const Lock& a, const Lock& b) {
    if (a.client != b.client) return a.client < b.client;
    if (a.owner != b.owner) return a.owner < b.owner;
    if (a.flock != b.flock) return a.flock < b.flock;
    return a.start < b.start;
  });
}

}  // namespace

std::optional<Lock> conflict(const std::vector<Lock>& held, const Lock& want) {
  for (auto& l : held) {
    if (l.flock != want.flock || l.sameOwner(want) || !overlaps(l, want)) continue;
    if (l.write || want.write) return l;
  }
  return std::nullopt;
}

void unlock(std::vector<Lock>& held, const Lock& range) {
  std::vector<Lock> out;
  for (auto& l : held) {
    if (!l.sameOwner(range) || !overlaps(l, range)) {
      out.push_back(l);
      continue;
    }
    if (l.start < range.start) {  // the part before the range stays
      Lock head = l;
      head.end = range.start;
      out.push_back(head);
    }
    if (range.end < l.end) {  // and the part after it
      Lock tail = l;
      tail.start = range.end;
      out.push_back(tail);
    }
  }
  held = std::move(out);
  sortLocks(held);
}

void set(std::vector<Lock>& held, const Lock& want) {
  KJ_REQUIRE(want.start < want.end, "empty lock range");
  unlock(held, want);
  // Merge with the owner's adjacent locks of the same type.
  Lock merged = want;
  std::vector<Lock> out;
  for (auto& l : held) {
    if (l.sameOwner(want) && l.write == want.write &&
        (l.end == merged.start || merged.end == l.start)) {
      merged.start = std::min(merged.start, l.start);
      merged.end = std::max(merged.end, l.end);
      continue;
    }
    out.push_back(l);
  }
  out.push_back(merged);
  held = std::move(out);
  sortLocks(held);
}

void releaseClient(std::vector<Lock>& held, uint64_t client) {
  std::erase_if(held, [client](const Lock& l) { return l.client == client; });
}

std::string encode(const std::vector<Lock>& held) {
  std::string s;
  s.reserve(held.size() * RECORD);
  for (auto& l : held) {
    char rec[RECORD];
    memcpy(rec, &l.client, 8);
    memcpy(rec + 8, &l.owner, 8);
    memcpy(rec + 16, &l.start, 8);
    memcpy(rec + 24, &l.end, 8);
    memcpy(rec + 32, &l.pid, 4);
    rec[36] = static_cast<char>((l.write ? 1 : 0) | (l.flock ? 2 : 0));
    s.append(rec, RECORD);
  }
  return s;
}

std::vector<Lock> decode(std::string_view v) {
  KJ_ASSERT(v.size() % RECORD == 0, "lock record of the wrong size", v.size());
  std::vector<Lock> out(v.size() / RECORD);
  for (size_t i = 0; i < out.size(); i++) {
    const char* rec = v.data() + i * RECORD;
    auto& l = out[i];
    memcpy(&l.client, rec, 8);
    memcpy(&l.owner, rec + 8, 8);
    memcpy(&l.start, rec + 16, 8);
    memcpy(&l.end, rec + 24, 8);
    memcpy(&l.pid, rec + 32, 4);
    l.write = (rec[36] & 1) != 0;
    l.flock = (rec[36] & 2) != 0;
  }
  return out;
}

}  // namespace cairn::meta::locks
