// Tests of meta/fsck: the namespace checks of cairn fsck, run on a store built by the real state
// machine and then damaged by hand, and the repairs the state machine applies for them. The
// link-count pass works over windows of inode numbers to bound its memory; the tests run it with
// windows far smaller than the store so that every window boundary is crossed.
#include "meta/fsck.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/unit/namespace_fixture.h"

namespace cairn::meta {
namespace {

using testing::Namespace;
using testing::Op;

struct Result {
  std::vector<fsck::Finding> findings;
  std::multiset<std::string> kinds() const {
    std::multiset<std::string> k;
    for (auto& f : findings) k.insert(f.kind);
    return k;
  }
};

Result check(Namespace& ns, uint64_t window = 1u << 21) {
  Result r;
  Txn t(ns.store().env(), false);
  fsck::Options o;
  o.window = window;
  fsck::Checker checker(ns.store(), [&](fsck::Finding f) { r.findings.push_back(f); }, o);
  checker.checkNamespace(t);
  checker.resolvePaths(t, r.findings);
  return r;
}

// A small tree: /a/b/c (directories), files in each, a hard link, a symlink, a file with chunks.
struct Tree {
  uint64_t a, b, c, f1, f2, big;
};

Tree build(Namespace& ns) {
  Tree t;
  t.a = ns.mkdir(ROOT_INO, "a").ino();
  t.b = ns.mkdir(t.a, "b").ino();
  t.c = ns.mkdir(t.b, "c").ino();
  t.f1 = ns.file(t.a, "f1").ino();
  t.f2 = ns.file(t.c, "f2").ino();
  for (int i = 0; i < 30; i++) ns.file(t.b, "n" + std::to_string(i));
  EXPECT_EQ(ns.link(t.f1, t.c, "f1-link").err(), 0);
  ns.apply([&](Op op) {
    auto s = op.initSymlink();
    s.setParent(t.a);
    s.setName("sym");
    s.setTarget("f1");
  });
  t.big = ns.file(ROOT_INO, "big").ino();
  EXPECT_EQ(ns.allocate(t.big, 0, {1, 2}).err(), 0);
  EXPECT_EQ(ns.allocate(t.big, 1, {1, 2}).err(), 0);
  EXPECT_EQ(ns.setSize(t.big, 2 * testing::CHUNK_BYTES).err(), 0);
  return t;
}

// Damage as a bug or a bad disk could make it: an entry whose inode is gone (/a/b/n3), an inode
// without entry (/a/b/n4, returned), a wrong link count (/a/b/c/f2), a chunk past the end of
// its file (/big). Bypasses the state machine.
uint64_t damage(Namespace& ns, const Tree& tree) {
  Txn t(ns.store().env(), true);
  auto& s = ns.store();
  auto d = s.getDentry(t, tree.b, "n3");
  t.del(s.inodes, be64(d->ino));
  auto e = s.getDentry(t, tree.b, "n4");
  t.del(s.dentries, be64(tree.b) + std::string("n4"));
  t.del(s.cookies, be64(tree.b) + be64(e->cookie));
  auto f2 = s.getInode(t, tree.f2);
  f2->nlink = 3;
  s.putInode(t, tree.f2, *f2);
  auto big = s.getInode(t, tree.big);
  big->size = 100;
  s.putInode(t, tree.big, *big);
  t.commit();
  return e->ino;
}

void registerServers(Namespace& ns) {
  for (int i = 1; i <= 2; i++) {
    ns.apply([&](Op op) {
      auto r = op.initRegisterServer();
      r.setUuid("uuid-" + std::to_string(i));
      r.setAddr("127.0.0.1:" + std::to_string(7000 + i));
      r.setHost("h" + std::to_string(i));
    });
  }
}

TEST(FsckNamespace, AStoreBuiltByTheStateMachineIsClean) {
  // Proves there are no false alarms: every rule the checker tests holds for a namespace made
  // only by state machine operations (including hard links, symlinks, chunks), whatever the
  // window size of the link-count pass.
  Namespace ns;
  registerServers(ns);
  build(ns);
  for (uint64_t window : {1ull << 21, 7ull, 1ull}) {
    auto r = check(ns, window);
    for (auto& f : r.findings) ADD_FAILURE() << f.kind << " " << f.path << ": " << f.detail;
  }
}

TEST(FsckNamespace, EveryKindOfDamageIsFoundWithItsPath) {
  // Proves each damage is reported as its own kind and with the path of what it affects, and
  // that small windows find exactly the same problems as one window over every inode.
  Namespace ns;
  registerServers(ns);
  auto tree = build(ns);
  damage(ns, tree);
  {
    // And a wrong link count on a directory.
    Txn t(ns.store().env(), true);
    auto c = ns.store().getInode(t, tree.c);
    c->nlink = 7;
    ns.store().putInode(t, tree.c, *c);
    t.commit();
  }
  auto whole = check(ns);
  auto small = check(ns, 3);
  EXPECT_EQ(whole.kinds(), small.kinds());
  std::map<std::string, std::set<std::string>> paths;
  for (auto& f : whole.findings) paths[f.kind].insert(f.path);
  EXPECT_EQ(paths["dangling-entry"], std::set<std::string>{"/a/b/n3"});
  EXPECT_EQ(paths["orphan-inode"].size(), 1u);
  EXPECT_EQ(paths["wrong-nlink"], (std::set<std::string>{"/a/b/c/f2", "/a/b/c"}));
  EXPECT_EQ(paths["chunk-past-eof"], std::set<std::string>{"/big"});
  EXPECT_EQ(whole.kinds().count("inode-count"), 1u);
  EXPECT_EQ(whole.findings.size(), 6u);
}

TEST(FsckNamespace, ADirectoryCycleIsReportedOnce) {
  // Proves that parents leading in a circle (a -> b -> c -> a, never the root) are found, once
  // for the whole cycle, together with the wrong parent pointer that made it.
  Namespace ns;
  registerServers(ns);
  auto tree = build(ns);
  {
    Txn t(ns.store().env(), true);
    auto a = ns.store().getInode(t, tree.a);
    a->parent = tree.c;
    ns.store().putInode(t, tree.a, *a);
    t.commit();
  }
  for (uint64_t window : {1ull << 21, 4ull}) {
    auto r = check(ns, window);
    EXPECT_EQ(r.kinds().count("directory-cycle"), 1u);
    EXPECT_EQ(r.kinds().count("dir-parent-mismatch"), 1u);
    EXPECT_EQ(r.findings.size(), 2u);
  }
}

TEST(FsckNamespace, RepairsAppliedThroughTheStateMachineLeaveACleanStore) {
  // Proves the fixes (as cairn fsck --repair sends them) restore every rule, that an orphan is
  // linked into /lost+found, and that a fix whose premise changed meanwhile is refused.
  Namespace ns;
  registerServers(ns);
  auto tree = build(ns);
  uint64_t orphan = damage(ns, tree);
  using K = proto::MetaRequest::FsckFixKind;
  auto found = check(ns);
  // A stale fix first: the link count it expects is not the one stored.
  auto stale = ns.apply([&](Op op) {
    auto x = op.initFsckFix();
    x.setKind(K::SET_NLINK);
    x.setIno(tree.f2);
    x.setExpect(2);
    x.setValue(1);
  });
  EXPECT_EQ(stale.err(), ESTALE);
  for (const char* kind : {"dangling-entry", "inode-count", "orphan-inode", "wrong-nlink",
                           "chunk-past-eof"}) {
    for (auto& f : found.findings) {
      if (f.kind != kind) continue;
      auto r = ns.apply([&](Op op) { EXPECT_TRUE(fsck::fixOp(f, op.initFsckFix())); });
      EXPECT_EQ(r.err(), 0) << f.kind << " " << f.path;
    }
  }
  auto after = check(ns, 5);
  for (auto& f : after.findings) ADD_FAILURE() << "left: " << f.kind << " " << f.path;
  auto lf = ns.lookup(ROOT_INO, "lost+found");
  ASSERT_EQ(lf.err(), 0);
  EXPECT_EQ(ns.lookup(lf.ino(), "#" + std::to_string(orphan)).ino(), orphan);
  EXPECT_EQ(ns.lookup(tree.b, "n3").err(), ENOENT);
}

}  // namespace
}  // namespace cairn::meta
