// Tests of fs/known_dirs: a directory this mount made answers lookups of absent names for an
// entry timeout, renewed by each reply to our own change that shows no name added elsewhere
// (the directory's next cookie is the one our change accounts for), and forgotten otherwise.
#include "fs/known_dirs.h"

#include <gtest/gtest.h>

using cairn::fs::KnownDirs;
using namespace std::chrono_literals;

namespace {
constexpr uint64_t DIR = 42, FIRST = 3;  // a directory's first cookie, as meta gives it

bool absent(KnownDirs& k, const std::string& name, KnownDirs::Clock::time_point now) {
  double left;
  return k.absent(DIR, name, left, now);
}
}  // namespace

TEST(KnownDirs, ANewDirectoryKnowsEveryNameForTheTimeoutOnly) {
  KnownDirs k(1.0);
  auto t0 = KnownDirs::Clock::now();
  k.know(DIR, FIRST, t0);
  double left = 0;
  EXPECT_TRUE(k.absent(DIR, "a", left, t0 + 400ms));
  EXPECT_NEAR(left, 0.6, 0.01);
  EXPECT_FALSE(absent(k, "a", t0 + 1001ms));
  EXPECT_FALSE(k.known(DIR, t0 + 10ms)) << "an expired directory is forgotten";
  EXPECT_FALSE(absent(k, "a", t0)) << "another directory is not known";
  k.know(DIR + 1, FIRST, t0);
  EXPECT_FALSE(absent(k, "a", t0));
}

TEST(KnownDirs, OwnChangesWithTheExpectedCookieKeepItKnownPastTheTimeout) {
  KnownDirs k(1.0);
  auto t0 = KnownDirs::Clock::now();
  k.know(DIR, FIRST, t0);
  uint64_t next = FIRST;
  // Ten seconds of creates and removals, one every 500 ms, each answered with the next cookie.
  for (int i = 0; i < 20; i++) {
    auto sent = t0 + i * 500ms;
    std::string name = "f" + std::to_string(i);
    ASSERT_TRUE(absent(k, name, sent)) << i;
    k.changed(DIR, name, true, 0, ++next, sent);
    EXPECT_FALSE(absent(k, name, sent + 1ms)) << "a name we added is present";
    if (i % 4 == 3) {
      k.changed(DIR, name, false, 0, next, sent + 2ms);  // a removal takes no cookie
      EXPECT_TRUE(absent(k, name, sent + 3ms)) << "a name we removed is absent";
    }
  }
  EXPECT_TRUE(absent(k, "new", t0 + 10400ms));
  EXPECT_FALSE(absent(k, "new", t0 + 10600ms)) << "a timeout from the last proof, no longer";
}

TEST(KnownDirs, ACookieOurChangeDoesNotAccountForForgetsTheDirectory) {
  auto t0 = KnownDirs::Clock::now();
  {
    KnownDirs k(1.0);  // a name added elsewhere before our create: two cookies taken
    k.know(DIR, FIRST, t0);
    k.changed(DIR, "mine", true, 0, FIRST + 2, t0);
    EXPECT_FALSE(k.known(DIR, t0 + 1ms));
  }
  {
    KnownDirs k(1.0);  // a name added elsewhere before our removal
    k.know(DIR, FIRST, t0);
    k.changed(DIR, "a", true, 0, FIRST + 1, t0);
    k.changed(DIR, "a", false, 0, FIRST + 2, t0 + 1ms);
    EXPECT_FALSE(k.known(DIR, t0 + 2ms));
  }
  {
    KnownDirs k(1.0);  // two creates of ours answered out of order
    k.know(DIR, FIRST, t0);
    k.changed(DIR, "b", true, 0, FIRST + 2, t0);
    EXPECT_FALSE(k.known(DIR, t0 + 1ms));
  }
  {
    KnownDirs k(1.0);  // a failed change: what it did is unknown
    k.know(DIR, FIRST, t0);
    k.changed(DIR, "c", true, EIO, 0, t0);
    EXPECT_FALSE(k.known(DIR, t0 + 1ms));
  }
}

TEST(KnownDirs, WithoutACookieNamesStayRightButNothingIsRenewed) {
  KnownDirs k(1.0);
  auto t0 = KnownDirs::Clock::now();
  k.know(DIR, FIRST, t0);
  k.changed(DIR, "a", true, 0, 0, t0 + 500ms);  // a reply that tells no cookie (a rename's)
  EXPECT_FALSE(absent(k, "a", t0 + 600ms));
  EXPECT_TRUE(absent(k, "b", t0 + 600ms));
  EXPECT_FALSE(k.known(DIR, t0 + 1001ms));
  KnownDirs u(1.0);
  u.know(DIR, 0, t0);  // a directory whose cookie meta did not tell
  u.changed(DIR, "a", true, 0, 1, t0 + 500ms);
  EXPECT_FALSE(u.known(DIR, t0 + 1001ms));
}

TEST(KnownDirs, ForgetAndBounds) {
  KnownDirs k(1.0);
  auto t0 = KnownDirs::Clock::now();
  k.know(DIR, FIRST, t0);
  k.forget(DIR);
  EXPECT_FALSE(k.known(DIR, t0));
  k.know(DIR, FIRST, t0);
  uint64_t next = FIRST;
  for (size_t i = 0; i < KnownDirs::MAX_NAMES; i++)
    k.changed(DIR, std::to_string(i), true, 0, ++next, t0);
  EXPECT_TRUE(k.known(DIR, t0));
  k.changed(DIR, "one more", true, 0, ++next, t0);
  EXPECT_FALSE(k.known(DIR, t0)) << "a directory past the name bound is forgotten";
}
