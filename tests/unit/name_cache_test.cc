// Tests of fs/name_cache: names and attributes are trusted for the bound from when they were
// asked, or from the change feed's last vouch when that is later; a drop that came while meta
// answered keeps the answer out; drops take what they name and nothing else.
#include "fs/name_cache.h"

#include <gtest/gtest.h>

using cairn::fs::NameCache;
using namespace std::chrono_literals;

namespace {
constexpr uint64_t DIR = 42;

struct stat attrOf(uint64_t ino, mode_t mode = S_IFREG | 0644, nlink_t links = 1) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = mode;
  st.st_nlink = links;
  st.st_size = static_cast<off_t>(ino * 10);
  return st;
}
}  // namespace

TEST(NameCache, TrustedForTheBoundFromTheAskWithoutAVouch) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  c.put(c.generation(), DIR, "a", attrOf(7), t0);
  struct stat st {};
  ASSERT_TRUE(c.entry(DIR, "a", st, t0 + 900ms));
  EXPECT_EQ(st.st_ino, 7u);
  EXPECT_EQ(st.st_size, 70);
  EXPECT_FALSE(c.entry(DIR, "a", st, t0 + 1001ms));
  EXPECT_FALSE(c.entry(DIR, "b", st, t0)) << "another name";
  EXPECT_FALSE(c.entry(DIR + 1, "a", st, t0)) << "the same name in another directory";
  EXPECT_TRUE(c.attr(7, st, t0 + 900ms));
  EXPECT_FALSE(c.attr(7, st, t0 + 1001ms));
}

TEST(NameCache, EachVouchOfTheFeedExtendsTheTrustFromItsSendTime) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  c.put(c.generation(), DIR, "a", attrOf(7), t0);
  struct stat st {};
  // Ten seconds of watches, each sent 400 ms after the last and vouching on its answer.
  for (int i = 1; i <= 25; i++) {
    auto sent = t0 + i * 400ms;
    c.vouch(sent);
    EXPECT_TRUE(c.entry(DIR, "a", st, sent + 900ms)) << i;
  }
  auto last = t0 + 25 * 400ms;
  EXPECT_FALSE(c.entry(DIR, "a", st, last + 1001ms)) << "the feed went quiet: trust lapses";
  c.vouch(t0);  // an older vouch (answers out of order) moves nothing back
  EXPECT_TRUE(c.entry(DIR, "a", st, last + 999ms));
}

TEST(NameCache, AnAnswerThatRacedADropOfItIsNotKept) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  struct stat st {};
  uint64_t gen = c.generation();  // asked...
  c.dropName(DIR, "a");            // ... a change of the name arrives ...
  c.put(gen, DIR, "a", attrOf(7), t0);  // ... and the (maybe older) answer
  EXPECT_FALSE(c.entry(DIR, "a", st, t0));
  gen = c.generation();
  c.dropAttr(7);  // of the inode the answer names
  c.put(gen, DIR, "a", attrOf(7), t0);
  EXPECT_FALSE(c.entry(DIR, "a", st, t0));
  gen = c.generation();
  c.dropAttr(7);
  c.putAttr(gen, attrOf(7), t0);
  EXPECT_FALSE(c.attr(7, st, t0));
  gen = c.generation();
  c.clear();
  c.put(gen, DIR, "a", attrOf(7), t0);
  EXPECT_FALSE(c.entry(DIR, "a", st, t0));
  gen = c.generation();
  c.dropAttrs();  // a name of an inode not known went
  c.putAttr(gen, attrOf(7), t0);
  EXPECT_FALSE(c.attr(7, st, t0));

  // Drops of other names and inodes (other threads' changes) do not keep an answer out.
  gen = c.generation();
  for (uint64_t i = 100; i < 110; i++) {
    c.dropName(DIR, std::to_string(i));
    c.dropAttr(i);
  }
  c.put(gen, DIR, "a", attrOf(7), t0);
  EXPECT_TRUE(c.entry(DIR, "a", st, t0));
}

TEST(NameCache, OurOwnChangeKeepsOutAnOlderAnswerThatComesBackAfterIt) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  struct stat st {};
  uint64_t lookupGen = c.generation();  // another thread asks for the file's attributes
  uint64_t linkGen = c.generation();    // we link the file: its link count becomes 2
  c.putOwn(linkGen, DIR, "b", attrOf(7, S_IFREG | 0644, 2), t0);
  ASSERT_TRUE(c.entry(DIR, "b", st, t0));
  EXPECT_EQ(st.st_nlink, 2u);
  c.putAttr(lookupGen, attrOf(7, S_IFREG | 0644, 1), t0);  // read before the link
  ASSERT_TRUE(c.attr(7, st, t0));
  EXPECT_EQ(st.st_nlink, 2u);
  // Our change raced another drop of the same name: nothing is kept of either.
  uint64_t gen = c.generation();
  c.dropName(DIR, "c");
  c.putOwn(gen, DIR, "c", attrOf(8), t0);
  EXPECT_FALSE(c.entry(DIR, "c", st, t0));
}

TEST(NameCache, DropsTakeWhatTheyName) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  c.put(c.generation(), DIR, "a", attrOf(7), t0);
  c.put(c.generation(), DIR, "b", attrOf(8, S_IFREG | 0644, 2), t0);
  c.put(c.generation(), DIR, "d", attrOf(9, S_IFDIR | 0755, 3), t0);
  struct stat st {};
  EXPECT_EQ(c.inoOf(DIR, "a"), 7u);
  c.dropName(DIR, "a");
  EXPECT_FALSE(c.entry(DIR, "a", st, t0));
  EXPECT_EQ(c.inoOf(DIR, "a"), 0u);
  EXPECT_TRUE(c.attr(7, st, t0)) << "the inode's attributes stay (it may have other names)";
  c.dropAttr(8);
  EXPECT_FALSE(c.entry(DIR, "b", st, t0)) << "a name without its attributes answers nothing";
  EXPECT_EQ(c.inoOf(DIR, "b"), 8u);
  c.put(c.generation(), DIR, "b", attrOf(8, S_IFREG | 0644, 2), t0);
  EXPECT_TRUE(c.entry(DIR, "b", st, t0));
  c.dropAttrs();
  EXPECT_FALSE(c.attr(7, st, t0));
  EXPECT_FALSE(c.entry(DIR, "d", st, t0));
  c.put(c.generation(), DIR, "d", attrOf(9, S_IFDIR | 0755, 3), t0);
  c.clear();
  EXPECT_EQ(c.names(), 0u);
  EXPECT_EQ(c.attrs(), 0u);
}

TEST(NameCache, StaysWithinItsSizeAndZeroKeepsNothing) {
  NameCache c(1s, 50);
  auto t0 = NameCache::Clock::now();
  for (uint64_t i = 1; i <= 1000; i++) c.put(c.generation(), DIR, std::to_string(i), attrOf(i), t0);
  EXPECT_LE(c.names(), 50u);
  EXPECT_LE(c.attrs(), 50u);
  struct stat st {};
  EXPECT_TRUE(c.entry(DIR, "1000", st, t0)) << "the newest is kept";
  NameCache off(1s, 0);
  off.put(off.generation(), DIR, "a", attrOf(7), t0);
  EXPECT_FALSE(off.entry(DIR, "a", st, t0));
}

TEST(NameCache, TellsWhetherItWasUsedLately) {
  NameCache c(1s, 100);
  auto t0 = NameCache::Clock::now();
  EXPECT_FALSE(c.usedSince(t0 - 10s));
  struct stat st {};
  c.entry(DIR, "a", st, t0);  // a miss is a use too: the cache is wanted
  EXPECT_TRUE(c.usedSince(t0 - 10s));
  EXPECT_FALSE(c.usedSince(t0 + 1s));
}
