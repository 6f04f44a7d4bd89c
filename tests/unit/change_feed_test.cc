// Tests of meta/change_feed: what each mutation makes stale, read from the state before it is
// applied, and the ring clients long-poll: in order, resumable, loss reported on overflow and
// when the feed is a different one (a new leader).
#include "meta/change_feed.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/unit/namespace_fixture.h"

namespace cairn::meta {
namespace {

using testing::Namespace;

std::vector<Change> changesFor(Namespace& ns, const std::function<void(proto::MetaRequest::Op::Builder)>& fill,
                               uint64_t client = 7) {
  capnp::MallocMessageBuilder msg;
  auto req = msg.initRoot<proto::MetaRequest>();
  req.setClientId(client);
  fill(req.getOp());
  Txn t(ns.store().env(), false);
  return ChangeFeed::changesOf(ns.store(), t, req.asReader());
}

bool hasEntry(const std::vector<Change>& cs, uint64_t parent, const std::string& name) {
  for (auto& c : cs)
    if (c.parent == parent && c.name == name) return true;
  return false;
}
bool hasInode(const std::vector<Change>& cs, uint64_t ino) {
  for (auto& c : cs)
    if (c.name.empty() && c.ino == ino) return true;
  return false;
}

TEST(ChangeFeed, RenameInvalidatesBothNamesTheirDirectoriesAndTheInodesTheyNamed) {
  Namespace ns;
  uint64_t a = ns.mkdir(ROOT_INO, "a").ino();
  uint64_t b = ns.mkdir(ROOT_INO, "b").ino();
  uint64_t x = ns.file(a, "x").ino();
  uint64_t y = ns.file(b, "y").ino();
  auto cs = changesFor(ns, [&](auto op) {
    auto r = op.initRename();
    r.setParent(a);
    r.setName("x");
    r.setNewParent(b);
    r.setNewName("y");
  });
  EXPECT_TRUE(hasEntry(cs, a, "x"));
  EXPECT_TRUE(hasEntry(cs, b, "y"));
  EXPECT_TRUE(hasInode(cs, a));
  EXPECT_TRUE(hasInode(cs, b));
  EXPECT_TRUE(hasInode(cs, x));
  EXPECT_TRUE(hasInode(cs, y)) << "the replaced file's link count changes";
  for (auto& c : cs) EXPECT_EQ(c.origin, 7u);
  EXPECT_EQ(cs.size(), 6u) << "one change per entry or inode";
  auto w = changesFor(ns, [&](auto op) { op.initCommitWrite().setIno(x); });
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(hasInode(w, x));
  EXPECT_TRUE(changesFor(ns, [&](auto op) { op.setGetattr(x); }).empty()) << "reads change nothing";
}

TEST(ChangeFeed, PagesResumeInOrderAndReportLoss) {
  ChangeFeed feed(42, 4);
  auto page = feed.since(0, 0, 10);  // a new client starts at the end, nothing lost
  EXPECT_FALSE(page.lost);
  EXPECT_TRUE(page.changes.empty());
  EXPECT_EQ(page.epoch, 42u);
  uint64_t after = page.next;
  feed.append({Change{1, 10, 0, ""}, Change{1, 0, 10, "n"}});
  page = feed.since(42, after, 10);
  ASSERT_EQ(page.changes.size(), 2u);
  EXPECT_EQ(page.changes[0].ino, 10u);
  EXPECT_EQ(page.changes[1].name, "n");
  after = page.next;
  EXPECT_TRUE(feed.since(42, after, 10).changes.empty());
  // Five more into a ring of four: the client that stopped at `after` lost one.
  for (uint64_t i = 0; i < 5; i++) feed.append({Change{1, 100 + i, 0, ""}});
  page = feed.since(42, after, 10);
  EXPECT_TRUE(page.lost);
  ASSERT_EQ(page.changes.size(), 4u);
  EXPECT_EQ(page.changes.front().ino, 101u);
  EXPECT_EQ(page.changes.back().ino, 104u);
  // At most `max` per page, and the next page goes on from there.
  auto part = feed.since(42, page.next - 4, 2);
  ASSERT_EQ(part.changes.size(), 2u);
  EXPECT_EQ(feed.since(42, part.next, 10).changes.front().ino, 103u);
  // Another feed's position (a client coming from another leader): loss, and the end.
  page = feed.since(99, 3, 10);
  EXPECT_TRUE(page.lost);
  EXPECT_TRUE(page.changes.empty());
  EXPECT_TRUE(feed.since(42, page.next, 10).changes.empty());
}


// wakes() (which looks at each change once) agrees with the page-building test it replaces:
// a watcher is answered when since() (its own changes left out) holds a change by someone else,
// or lost changes, or when it is half a ring behind in its own, over a random history of appends
// by two clients and watchers that sleep or are answered.
TEST(ChangeFeed, WakesAgreesWithPages) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; round++) {
    ChangeFeed feed(42, 16);
    const size_t max = 1 + rng() % 8;
    uint64_t client = 1 + rng() % 2;
    uint64_t after = feed.since(0, 0, max).next, checked = 0;
    int woken = 0;
    for (int step = 0; step < 200; step++) {
      size_t n = 1 + rng() % 3;
      std::vector<Change> cs;
      uint64_t origin = rng() % 5 == 0 ? 3 - client : client;  // mostly its own
      for (size_t i = 0; i < n; i++) cs.push_back(Change{origin, 100 + uint64_t(step), 0, ""});
      feed.append(cs);
      auto page = feed.since(42, after, max, client);
      for (auto& c : page.changes) ASSERT_NE(c.origin, client) << "its own are left out";
      bool behind = feed.last() >= after + std::max<uint64_t>(max, 8);
      bool expect = !page.changes.empty() || page.lost || behind;
      ASSERT_EQ(feed.wakes(42, after, client, max, checked), expect)
          << "round " << round << " step " << step;
      if (expect) {  // answered: the mount watches again from the page's end
        woken++;
        after = page.next;
        checked = 0;
      }
    }
    EXPECT_GT(woken, 0);
    EXPECT_TRUE(feed.wakes(7, after, client, max, checked)) << "another feed";
  }
}

// A page leaves out the asker's own changes but moves past them, and says whether it reached the
// newest change (only then does a watch's answer vouch for the mount's caches).
TEST(ChangeFeed, PagesLeaveOutTheAskersOwnChangesAndTellWhetherTheyReachTheEnd) {
  ChangeFeed feed(42, 100);
  uint64_t start = feed.since(0, 0, 10).next;
  for (uint64_t i = 0; i < 20; i++) feed.append({Change{i % 4 == 0 ? 2u : 1u, 100 + i, 0, ""}});
  auto all = feed.since(42, start, 100, 1);
  EXPECT_EQ(all.changes.size(), 5u);  // client 2's: every fourth
  EXPECT_EQ(all.next, feed.last());
  EXPECT_TRUE(all.end);
  auto part = feed.since(42, start, 2, 1);
  ASSERT_EQ(part.changes.size(), 2u);
  EXPECT_EQ(part.changes[1].ino, 104u);
  EXPECT_FALSE(part.end) << "three more of client 2 wait";
  auto rest = feed.since(42, part.next, 100, 1);
  ASSERT_EQ(rest.changes.size(), 3u);
  EXPECT_EQ(rest.changes[0].ino, 108u);
  EXPECT_TRUE(rest.end);
  auto own = feed.since(42, start + 17, 100, 1);  // only client 1's after the last of client 2's
  EXPECT_TRUE(own.changes.empty());
  EXPECT_EQ(own.next, feed.last()) << "moved past its own changes";
  EXPECT_TRUE(own.end);
  EXPECT_EQ(feed.since(42, start, 100).changes.size(), 20u) << "no asker: every change";
}

}  // namespace
}  // namespace cairn::meta
