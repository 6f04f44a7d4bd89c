// Tests of meta/locks: POSIX record lock rules (conflicts only between owners and only with a
// writer, same-owner replacement, merging and splitting) and flock's separate space.
#include "meta/locks.h"

#include <gtest/gtest.h>

using namespace cairn::meta::locks;

namespace {
Lock lk(uint64_t client, uint64_t owner, bool write, uint64_t start, uint64_t end,
        bool flock = false) {
  Lock l;
  l.client = client;
  l.owner = owner;
  l.write = write;
  l.start = start;
  l.end = end;
  l.flock = flock;
  return l;
}
}  // namespace

TEST(Locks, ReadersShareWritersExcludeOnlyWhereRangesOverlap) {
  std::vector<Lock> held;
  set(held, lk(1, 1, false, 0, 100));
  EXPECT_FALSE(conflict(held, lk(2, 1, false, 50, 150))) << "two readers";
  EXPECT_TRUE(conflict(held, lk(2, 1, true, 50, 150))) << "a writer over a reader";
  EXPECT_FALSE(conflict(held, lk(2, 1, true, 100, 200))) << "adjacent, not overlapping";
  EXPECT_FALSE(conflict(held, lk(1, 1, true, 0, 100))) << "the owner itself never conflicts";
  EXPECT_TRUE(conflict(held, lk(1, 2, true, 0, 10))) << "another owner of the same client does";
  EXPECT_FALSE(conflict(held, lk(2, 1, true, 0, TO_EOF, true))) << "flock is a separate space";
}

TEST(Locks, TheOwnersLocksAreReplacedMergedAndSplit) {
  std::vector<Lock> held;
  set(held, lk(1, 1, true, 0, 100));
  set(held, lk(1, 1, true, 100, 200));  // adjacent, same type: one lock
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].start, 0u);
  EXPECT_EQ(held[0].end, 200u);
  set(held, lk(1, 1, false, 50, 60));  // a read lock inside: write, read, write
  ASSERT_EQ(held.size(), 3u);
  EXPECT_TRUE(held[0].write);
  EXPECT_FALSE(held[1].write);
  EXPECT_EQ(held[1].start, 50u);
  EXPECT_TRUE(held[2].write);
  EXPECT_EQ(held[2].start, 60u);
  unlock(held, lk(1, 1, false, 0, 55));
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0].start, 55u);
  EXPECT_EQ(held[0].end, 60u);
  unlock(held, lk(1, 1, false, 0, TO_EOF));
  EXPECT_TRUE(held.empty());
}

TEST(Locks, ReleasingAClientDropsAllOfItsLocksOnly) {
  std::vector<Lock> held;
  set(held, lk(1, 1, true, 0, 10));
  set(held, lk(1, 2, false, 20, 30));
  set(held, lk(2, 1, false, 20, 30));
  set(held, lk(1, 1, true, 0, TO_EOF, true));
  releaseClient(held, 1);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].client, 2u);
  EXPECT_EQ(decode(encode(held)), held);
}
