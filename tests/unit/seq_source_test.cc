// Tests of rpc/meta_client's SeqSource: the mark every request carries (ackedBelow) is the
// lowest sequence number still waiting for its reply, so meta never forgets a reply that may
// still be asked for.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "rpc/meta_client.h"

using cairn::SeqSource;

TEST(SeqSource, TheMarkIsTheLowestOutstandingNumber) {
  SeqSource s;
  EXPECT_EQ(s.ackedBelow(), 1u);
  uint64_t a = s.take(), b = s.take(), c = s.take();
  EXPECT_EQ(a, 1u);
  EXPECT_EQ(c, 3u);
  EXPECT_EQ(s.ackedBelow(), 1u);
  s.done(b);
  EXPECT_EQ(s.ackedBelow(), 1u) << "1 still waits";
  s.done(a);
  EXPECT_EQ(s.ackedBelow(), 3u);
  s.done(c);
  EXPECT_EQ(s.ackedBelow(), 4u) << "none waits: the next number";
}

TEST(SeqSource, RandomOrdersNeverMarkAnOutstandingNumber) {
  std::mt19937 rng(7);
  SeqSource s;
  std::set<uint64_t> open;
  for (int i = 0; i < 5000; i++) {
    if (open.empty() || rng() % 2) {
      open.insert(s.take());
    } else {
      auto it = open.begin();
      std::advance(it, rng() % open.size());
      s.done(*it);
      open.erase(it);
    }
    uint64_t mark = s.ackedBelow();
    ASSERT_TRUE(open.empty() || mark == *open.begin()) << i;
  }
}
