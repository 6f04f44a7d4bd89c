// Tests of meta/state_machine: the filesystem namespace applied from logged commands, driven
// directly on a temporary LMDB store (no Raft, no RPC). Each command is built the way the leader
// builds it: time, the client's request and any placement travel inside the Command.
#include "meta/state_machine.h"
#include "tests/unit/namespace_fixture.h"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <kj/exception.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace cairn::meta {
namespace {

using testing::CHUNK_BYTES;
using testing::Namespace;
using testing::Op;
using testing::Reply;

constexpr uint32_t RENAME_NOREPLACE_FLAG = 1;
constexpr uint32_t RENAME_EXCHANGE_FLAG = 2;
constexpr uint32_t XATTR_CREATE_FLAG = 1;
constexpr uint32_t XATTR_REPLACE_FLAG = 2;

class StateMachineTest : public ::testing::Test {
 protected:
  Namespace ns;
};

TEST_F(StateMachineTest, MknodCreatesFilesAndDirectoriesThatLookupFinds) {
  // Proves that mknod creates a regular file and a directory with the requested type and
  // owner, and that lookup by (parent, name) finds each, also "." and "..", and nothing else.
  auto f = ns.file(ROOT_INO, "a");
  ASSERT_EQ(f.err(), 0);
  EXPECT_TRUE(S_ISREG(f.attr().getMode()));
  EXPECT_EQ(f.attr().getNlink(), 1u);
  EXPECT_EQ(f.attr().getUid(), 1000u);
  auto d = ns.mkdir(ROOT_INO, "d");
  ASSERT_EQ(d.err(), 0);
  EXPECT_TRUE(S_ISDIR(d.attr().getMode()));
  EXPECT_EQ(d.attr().getNlink(), 2u);
  EXPECT_NE(f.ino(), d.ino());

  auto l = ns.lookup(ROOT_INO, "a");
  ASSERT_EQ(l.err(), 0);
  EXPECT_EQ(l.ino(), f.ino());
  EXPECT_EQ(ns.lookup(ROOT_INO, "d").ino(), d.ino());
  EXPECT_EQ(ns.lookup(d.ino(), ".").ino(), d.ino());
  EXPECT_EQ(ns.lookup(d.ino(), "..").ino(), ROOT_INO);
  EXPECT_EQ(ns.lookup(ROOT_INO, "missing").err(), ENOENT);
  EXPECT_EQ(ns.lookup(f.ino(), "x").err(), ENOTDIR);
  EXPECT_EQ(ns.file(f.ino(), "x").err(), ENOTDIR);
  EXPECT_EQ(ns.file(12345, "x").err(), ENOENT);
}

TEST_F(StateMachineTest, ExclusiveCreateOfAnExistingNameFailsWithEEXIST) {
  // Proves O_EXCL semantics: an exclusive create of an existing name fails and changes nothing,
  // while a non-exclusive create of an existing file opens it (same inode).
  auto f = ns.file(ROOT_INO, "a");
  ASSERT_EQ(f.err(), 0);
  EXPECT_EQ(ns.mknod(ROOT_INO, "a", S_IFREG | 0600, true).err(), EEXIST);
  EXPECT_EQ(ns.mkdir(ROOT_INO, "a").err(), EEXIST);
  auto again = ns.mknod(ROOT_INO, "a", S_IFREG | 0600, false);
  ASSERT_EQ(again.err(), 0);
  EXPECT_EQ(again.ino(), f.ino());
  EXPECT_EQ(again.attr().getMode(), static_cast<uint32_t>(S_IFREG | 0644));
  EXPECT_EQ(ns.list(ROOT_INO).size(), 1u);
}

TEST_F(StateMachineTest, MkdirIncrementsParentNlinkAndRmdirDecrementsIt) {
  // Proves the directory link count rule: 2 + number of subdirectories.
  EXPECT_EQ(ns.getattr(ROOT_INO).attr().getNlink(), 2u);
  auto d = ns.mkdir(ROOT_INO, "d");
  ASSERT_EQ(d.err(), 0);
  EXPECT_EQ(ns.getattr(ROOT_INO).attr().getNlink(), 3u);
  ASSERT_EQ(ns.mkdir(d.ino(), "e").err(), 0);
  EXPECT_EQ(ns.getattr(d.ino()).attr().getNlink(), 3u);
  ASSERT_EQ(ns.file(d.ino(), "f").err(), 0);
  EXPECT_EQ(ns.getattr(d.ino()).attr().getNlink(), 3u) << "files do not count";
  ASSERT_EQ(ns.rmdir(d.ino(), "e").err(), 0);
  EXPECT_EQ(ns.getattr(d.ino()).attr().getNlink(), 2u);
}

TEST_F(StateMachineTest, RepliesTellTheDirectorysNextCookieThatEveryAddedNameTakes) {
  // Proves what a mount's known directories rely on (fs/known_dirs.h): a new directory tells
  // its next cookie; each name added to it (create, mkdir, symlink, link, rename into it) takes
  // one, which the reply's parentAttr shows; a removal takes none.
  auto d = ns.mkdir(ROOT_INO, "d");
  ASSERT_EQ(d.err(), 0);
  uint64_t c = d.attr().getDirCookie();
  ASSERT_NE(c, 0u);
  auto f = ns.file(d.ino(), "f");
  EXPECT_EQ(f.get().getParentAttr().getDirCookie(), c + 1);
  EXPECT_EQ(ns.mkdir(d.ino(), "sub").get().getParentAttr().getDirCookie(), c + 2);
  auto l = ns.link(f.ino(), d.ino(), "g");
  EXPECT_EQ(l.get().getParentAttr().getDirCookie(), c + 3);
  EXPECT_EQ(ns.unlink(d.ino(), "g").get().getParentAttr().getDirCookie(), c + 3);
  ASSERT_EQ(ns.rename(d.ino(), "f", d.ino(), "h").err(), 0);
  EXPECT_EQ(ns.getattr(d.ino()).attr().getDirCookie(), c + 4) << "a rename adds a name";
  uint64_t root = ns.getattr(ROOT_INO).attr().getDirCookie();
  EXPECT_EQ(ns.file(ROOT_INO, "x").get().getParentAttr().getDirCookie(), root + 1);
  EXPECT_EQ(f.attr().getDirCookie(), 0u) << "a file has none";
}

TEST_F(StateMachineTest, UnlinkAndRmdirRemoveEntriesAndRmdirOfNonEmptyFailsWithENOTEMPTY) {
  // Proves unlink and rmdir: each refuses the other's type, rmdir refuses a non-empty
  // directory, and removed names and inodes are gone.
  auto d = ns.mkdir(ROOT_INO, "d");
  auto f = ns.file(d.ino(), "f");
  EXPECT_EQ(ns.rmdir(ROOT_INO, "d").err(), ENOTEMPTY);
  EXPECT_EQ(ns.unlink(ROOT_INO, "d").err(), EISDIR);
  EXPECT_EQ(ns.rmdir(d.ino(), "f").err(), ENOTDIR);
  EXPECT_EQ(ns.unlink(d.ino(), "missing").err(), ENOENT);
  ASSERT_EQ(ns.unlink(d.ino(), "f").err(), 0);
  EXPECT_EQ(ns.lookup(d.ino(), "f").err(), ENOENT);
  EXPECT_EQ(ns.getattr(f.ino()).attr().getNlink(), 0u);  // kept until reclaimed (may be open)
  ASSERT_EQ(ns.reclaim({f.ino()}).err(), 0);
  EXPECT_EQ(ns.getattr(f.ino()).err(), ENOENT);
  ASSERT_EQ(ns.rmdir(ROOT_INO, "d").err(), 0);
  EXPECT_EQ(ns.getattr(d.ino()).err(), ENOENT);
  EXPECT_TRUE(ns.list(ROOT_INO).empty());
  EXPECT_EQ(ns.getattr(ROOT_INO).attr().getNlink(), 2u);
}

TEST_F(StateMachineTest, RenameOverAnExistingFileReplacesIt) {
  // Proves that rename onto an existing file atomically replaces it: the new name points at the
  // moved inode, the old name is gone, and the replaced inode (its last link) is dropped.
  auto a = ns.file(ROOT_INO, "a");
  auto b = ns.file(ROOT_INO, "b");
  ASSERT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "b").err(), 0);
  EXPECT_EQ(ns.lookup(ROOT_INO, "b").ino(), a.ino());
  EXPECT_EQ(ns.lookup(ROOT_INO, "a").err(), ENOENT);
  EXPECT_EQ(ns.getattr(b.ino()).attr().getNlink(), 0u);
  ASSERT_EQ(ns.reclaim({b.ino()}).err(), 0);
  EXPECT_EQ(ns.getattr(b.ino()).err(), ENOENT);
  EXPECT_EQ(ns.list(ROOT_INO).size(), 1u);
}

TEST_F(StateMachineTest, RenameAcrossDirectoriesMovesDirectoryAndFixesLinkCounts) {
  // Proves a directory move: nlink moves from the old parent to the new one and ".." of the
  // moved directory follows it.
  auto p = ns.mkdir(ROOT_INO, "p");
  auto q = ns.mkdir(ROOT_INO, "q");
  auto d = ns.mkdir(p.ino(), "d");
  ASSERT_EQ(ns.rename(p.ino(), "d", q.ino(), "d2").err(), 0);
  EXPECT_EQ(ns.getattr(p.ino()).attr().getNlink(), 2u);
  EXPECT_EQ(ns.getattr(q.ino()).attr().getNlink(), 3u);
  EXPECT_EQ(ns.lookup(d.ino(), "..").ino(), q.ino());
  EXPECT_EQ(ns.lookup(q.ino(), "d2").ino(), d.ino());
  EXPECT_EQ(ns.rename(q.ino(), "d2", q.ino(), "d2").err(), 0) << "rename onto itself is a no-op";
}

TEST_F(StateMachineTest, RenameDirectoryIntoItsOwnSubdirectoryFailsWithEINVAL) {
  // Proves the loop rule: a directory cannot become its own descendant (directly or deeper),
  // with or without RENAME_EXCHANGE_FLAG, and the tree is unchanged afterwards.
  auto d = ns.mkdir(ROOT_INO, "d");
  auto e = ns.mkdir(d.ino(), "e");
  auto f = ns.mkdir(e.ino(), "f");
  EXPECT_EQ(ns.rename(ROOT_INO, "d", d.ino(), "x").err(), EINVAL);
  EXPECT_EQ(ns.rename(ROOT_INO, "d", e.ino(), "x").err(), EINVAL);
  EXPECT_EQ(ns.rename(ROOT_INO, "d", f.ino(), "x").err(), EINVAL);
  EXPECT_EQ(ns.rename(ROOT_INO, "d", d.ino(), "e", RENAME_EXCHANGE_FLAG).err(), EINVAL);
  EXPECT_EQ(ns.lookup(ROOT_INO, "d").ino(), d.ino());
  EXPECT_EQ(ns.lookup(d.ino(), "e").ino(), e.ino());
  EXPECT_EQ(ns.lookup(e.ino(), "x").err(), ENOENT);
}

TEST_F(StateMachineTest, RenameNoreplaceOntoAnExistingNameFailsWithEEXIST) {
  // Proves RENAME_NOREPLACE_FLAG: an existing destination is an error and both names stay; a free
  // destination works.
  auto a = ns.file(ROOT_INO, "a");
  auto b = ns.file(ROOT_INO, "b");
  EXPECT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "b", RENAME_NOREPLACE_FLAG).err(), EEXIST);
  EXPECT_EQ(ns.lookup(ROOT_INO, "a").ino(), a.ino());
  EXPECT_EQ(ns.lookup(ROOT_INO, "b").ino(), b.ino());
  ASSERT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "c", RENAME_NOREPLACE_FLAG).err(), 0);
  EXPECT_EQ(ns.lookup(ROOT_INO, "c").ino(), a.ino());
  EXPECT_EQ(ns.rename(ROOT_INO, "b", ROOT_INO, "c", RENAME_NOREPLACE_FLAG | RENAME_EXCHANGE_FLAG).err(),
            EINVAL);
}

TEST_F(StateMachineTest, RenameExchangeSwapsTwoNames) {
  // Proves RENAME_EXCHANGE_FLAG: both names stay and point at each other's inode; across directories
  // a directory swapped with a file moves its ".." and its parent's link count with it; a
  // missing destination is ENOENT.
  auto a = ns.file(ROOT_INO, "a");
  auto b = ns.file(ROOT_INO, "b");
  ASSERT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "b", RENAME_EXCHANGE_FLAG).err(), 0);
  EXPECT_EQ(ns.lookup(ROOT_INO, "a").ino(), b.ino());
  EXPECT_EQ(ns.lookup(ROOT_INO, "b").ino(), a.ino());
  EXPECT_EQ(ns.list(ROOT_INO).size(), 2u);

  auto p = ns.mkdir(ROOT_INO, "p");
  auto q = ns.mkdir(ROOT_INO, "q");
  auto sub = ns.mkdir(p.ino(), "sub");
  auto f = ns.file(q.ino(), "f");
  ASSERT_EQ(ns.rename(p.ino(), "sub", q.ino(), "f", RENAME_EXCHANGE_FLAG).err(), 0);
  EXPECT_EQ(ns.lookup(p.ino(), "sub").ino(), f.ino());
  EXPECT_EQ(ns.lookup(q.ino(), "f").ino(), sub.ino());
  EXPECT_EQ(ns.lookup(sub.ino(), "..").ino(), q.ino());
  EXPECT_EQ(ns.getattr(p.ino()).attr().getNlink(), 2u);
  EXPECT_EQ(ns.getattr(q.ino()).attr().getNlink(), 3u);
  EXPECT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "nothing", RENAME_EXCHANGE_FLAG).err(), ENOENT);
}

TEST_F(StateMachineTest, LinkRaisesNlinkAndUnlinkOfOneNameKeepsTheOther) {
  // Proves hard links: a second name shares the inode and raises nlink; removing either name
  // keeps the inode reachable through the other until the last one goes. Directories cannot be
  // linked.
  auto d = ns.mkdir(ROOT_INO, "d");
  auto a = ns.file(ROOT_INO, "a");
  auto l = ns.link(a.ino(), d.ino(), "a2");
  ASSERT_EQ(l.err(), 0);
  EXPECT_EQ(l.attr().getNlink(), 2u);
  EXPECT_EQ(ns.lookup(d.ino(), "a2").ino(), a.ino());
  EXPECT_EQ(ns.link(a.ino(), d.ino(), "a2").err(), EEXIST);
  EXPECT_EQ(ns.link(d.ino(), ROOT_INO, "dlink").err(), EPERM);
  ASSERT_EQ(ns.unlink(ROOT_INO, "a").err(), 0);
  auto left = ns.lookup(d.ino(), "a2");
  ASSERT_EQ(left.err(), 0);
  EXPECT_EQ(left.ino(), a.ino());
  EXPECT_EQ(left.attr().getNlink(), 1u);
  ASSERT_EQ(ns.unlink(d.ino(), "a2").err(), 0);
  EXPECT_EQ(ns.link(a.ino(), d.ino(), "again").err(), ENOENT);  // no link to an unlinked file
  ASSERT_EQ(ns.reclaim({a.ino()}).err(), 0);
  EXPECT_EQ(ns.getattr(a.ino()).err(), ENOENT);
}

TEST_F(StateMachineTest, NamesOf255BytesWorkAnd256FailWithENAMETOOLONG) {
  // Proves the NAME_MAX boundary on create, lookup, rename and link, and that '/', "." and ".."
  // are refused as names.
  std::string ok(255, 'n');
  std::string tooLong(256, 'n');
  auto f = ns.file(ROOT_INO, ok);
  ASSERT_EQ(f.err(), 0);
  EXPECT_EQ(ns.lookup(ROOT_INO, ok).ino(), f.ino());
  EXPECT_EQ(ns.file(ROOT_INO, tooLong).err(), ENAMETOOLONG);
  EXPECT_EQ(ns.lookup(ROOT_INO, tooLong).err(), ENAMETOOLONG);
  EXPECT_EQ(ns.rename(ROOT_INO, ok, ROOT_INO, tooLong).err(), ENAMETOOLONG);
  EXPECT_EQ(ns.link(f.ino(), ROOT_INO, tooLong).err(), ENAMETOOLONG);
  EXPECT_EQ(ns.file(ROOT_INO, "a/b").err(), EINVAL);
  EXPECT_EQ(ns.file(ROOT_INO, ".").err(), EINVAL);
  EXPECT_EQ(ns.mkdir(ROOT_INO, "..").err(), EINVAL);
  EXPECT_EQ(ns.file(ROOT_INO, "").err(), ENOENT);
  EXPECT_EQ(ns.list(ROOT_INO).size(), 1u);
}

TEST_F(StateMachineTest, SymlinkStoresItsTargetForReadlink) {
  // Proves symlink and readlink: the target comes back byte for byte, the size is its length,
  // and readlink of a non-symlink is EINVAL.
  auto s = ns.apply([](Op op) {
    auto l = op.initSymlink();
    l.setParent(ROOT_INO);
    l.setName("link");
    l.setTarget("../some/where else");
  });
  ASSERT_EQ(s.err(), 0);
  EXPECT_TRUE(S_ISLNK(s.attr().getMode()));
  EXPECT_EQ(s.attr().getSize(), std::string("../some/where else").size());
  auto r = ns.read([&](Op op) { op.setReadlink(s.ino()); });
  ASSERT_EQ(r.err(), 0);
  EXPECT_STREQ(r.get().getTarget().cStr(), "../some/where else");
  auto f = ns.file(ROOT_INO, "f");
  EXPECT_EQ(ns.read([&](Op op) { op.setReadlink(f.ino()); }).err(), EINVAL);
  auto empty = ns.apply([](Op op) {
    auto l = op.initSymlink();
    l.setParent(ROOT_INO);
    l.setName("empty");
    l.setTarget("");
  });
  EXPECT_EQ(empty.err(), ENOENT);
}

TEST_F(StateMachineTest, XattrSetGetListRemoveHonourCreateAndReplaceFlags) {
  // Proves the xattr operations: set then get returns the value, list names every attribute,
  // XATTR_CREATE on an existing name is EEXIST, XATTR_REPLACE on a missing one is ENODATA,
  // remove makes get ENODATA, and removing a missing name is ENODATA.
  auto f = ns.file(ROOT_INO, "f");
  ASSERT_EQ(ns.setxattr(f.ino(), "user.a", "one", 0).err(), 0);
  ASSERT_EQ(ns.setxattr(f.ino(), "user.b", std::string("t\0o", 3), XATTR_CREATE_FLAG).err(), 0);
  auto v = ns.getxattr(f.ino(), "user.b");
  ASSERT_EQ(v.err(), 0);
  EXPECT_EQ(std::string(v.get().getValue().asChars().begin(), v.get().getValue().size()),
            std::string("t\0o", 3));
  EXPECT_EQ(ns.setxattr(f.ino(), "user.a", "x", XATTR_CREATE_FLAG).err(), EEXIST);
  EXPECT_EQ(ns.setxattr(f.ino(), "user.c", "x", XATTR_REPLACE_FLAG).err(), ENODATA);
  ASSERT_EQ(ns.setxattr(f.ino(), "user.a", "two", XATTR_REPLACE_FLAG).err(), 0);
  auto a = ns.getxattr(f.ino(), "user.a");
  EXPECT_EQ(std::string(a.get().getValue().asChars().begin(), a.get().getValue().size()), "two");

  auto names = ns.read([&](Op op) { op.setListxattr(f.ino()); });
  ASSERT_EQ(names.err(), 0);
  std::vector<std::string> got;
  for (auto n : names.get().getNames()) got.emplace_back(n.cStr());
  EXPECT_EQ(got, (std::vector<std::string>{"user.a", "user.b"}));

  auto remove = [&](const std::string& name) {
    return ns.apply([&](Op op) {
      auto x = op.initRemovexattr();
      x.setIno(f.ino());
      x.setName(name);
    });
  };
  ASSERT_EQ(remove("user.a").err(), 0);
  EXPECT_EQ(ns.getxattr(f.ino(), "user.a").err(), ENODATA);
  EXPECT_EQ(remove("user.a").err(), ENODATA);
  EXPECT_EQ(ns.getxattr(f.ino(), "user.b").err(), 0);
  EXPECT_EQ(ns.setxattr(f.ino(), std::string(256, 'x'), "v", 0).err(), ERANGE);
  EXPECT_EQ(ns.setxattr(999, "user.a", "v", 0).err(), ENOENT);
}

TEST_F(StateMachineTest, ReaddirCookiesReturnEveryEntryOnceWhileTheDirectoryChanges) {
  // Proves the readdir cursor under concurrent change: paging by cookie while entries are
  // created and removed between pages, no name is returned twice, every entry that exists from
  // the first page to the last is returned exactly once, and no removed-before-reached entry is
  // returned.
  auto d = ns.mkdir(ROOT_INO, "d");
  std::set<std::string> stable;
  for (int i = 0; i < 60; i++) {
    std::string name = "e" + std::to_string(i);
    ASSERT_EQ(ns.file(d.ino(), name).err(), 0);
    if (i % 3 != 0) stable.insert(name);  // every third entry is removed during the listing
  }
  std::multiset<std::string> seen;
  std::set<std::string> removed;
  uint64_t after = 0;
  int page = 0;
  int removeNext = 0;
  while (true) {
    auto r = ns.readdir(d.ino(), after, 7);
    ASSERT_EQ(r.err(), 0);
    auto entries = r.get().getEntries();
    if (entries.size() == 0) break;
    uint64_t last = after;
    for (auto e : entries) {
      EXPECT_GT(e.getCookie(), last) << "cookies grow within a listing";
      last = e.getCookie();
      seen.insert(e.getName().cStr());
      EXPECT_EQ(removed.count(e.getName().cStr()), 0u) << "removed entry listed: " << e.getName().cStr();
      EXPECT_EQ(ns.lookup(d.ino(), e.getName().cStr()).ino(), e.getIno());
    }
    after = last;
    // Between pages: remove entries (both already listed and not yet listed) and add new ones.
    for (int k = 0; k < 3 && removeNext < 60; k++, removeNext += 3) {
      std::string victim = "e" + std::to_string(removeNext);
      ASSERT_EQ(ns.unlink(d.ino(), victim).err(), 0);
      if (seen.count(victim) == 0) removed.insert(victim);
    }
    if (page < 5) {
      ASSERT_EQ(ns.file(d.ino(), "new" + std::to_string(page)).err(), 0);
    }
    page++;
    ASSERT_LT(page, 100) << "the listing does not end";
  }
  for (auto& name : seen) EXPECT_EQ(seen.count(name), 1u) << name << " listed more than once";
  for (auto& name : stable) EXPECT_EQ(seen.count(name), 1u) << name << " missing from the listing";
  // Entries created during the listing have higher cookies and are reached at the end.
  for (int i = 0; i < 5; i++) EXPECT_EQ(seen.count("new" + std::to_string(i)), 1u) << i;
}

TEST_F(StateMachineTest, ChunkAllocationStoresPlacementAndVersionOne) {
  // Proves chunk allocation: the leader's placement becomes the replica list (with the servers'
  // addresses), the version starts at 1, a second allocation of the same index returns the same
  // chunk, and without placement (no servers) allocation fails with ENOSPC.
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  EXPECT_NE(s1, s2);
  EXPECT_EQ(ns.registerServer("uuid-1", "127.0.0.1:7001", "h1"), s1) << "same uuid, same id";
  auto f = ns.file(ROOT_INO, "f");
  auto c = ns.allocate(f.ino(), 0, {s2, s1});
  ASSERT_EQ(c.err(), 0);
  auto chunk = c.get().getChunk();
  EXPECT_EQ(chunk.getIndex(), 0u);
  EXPECT_EQ(chunk.getVersion(), 1u);
  ASSERT_EQ(chunk.getReplicas().size(), 2u);
  EXPECT_EQ(chunk.getReplicas()[0].getServer(), s2);
  EXPECT_STREQ(chunk.getReplicas()[0].getAddr().cStr(), "127.0.0.2:7000");
  EXPECT_EQ(chunk.getReplicas()[1].getServer(), s1);
  EXPECT_STREQ(chunk.getReplicas()[1].getAddr().cStr(), "127.0.0.1:7001");

  auto again = ns.allocate(f.ino(), 0, {s1});
  ASSERT_EQ(again.err(), 0);
  EXPECT_EQ(again.get().getChunk().getId(), chunk.getId());
  EXPECT_EQ(again.get().getChunk().getReplicas().size(), 2u);

  auto other = ns.allocate(f.ino(), 1, {s1, s2});
  ASSERT_EQ(other.err(), 0);
  EXPECT_NE(other.get().getChunk().getId(), chunk.getId());

  EXPECT_EQ(ns.allocate(f.ino(), 5, {}).err(), ENOSPC);
  auto list = ns.chunkList(f.ino());
  ASSERT_EQ(list.err(), 0);
  ASSERT_EQ(list.get().getChunks().size(), 2u);
  EXPECT_EQ(list.get().getChunks()[0].getIndex(), 0u);
  EXPECT_EQ(list.get().getChunks()[1].getIndex(), 1u);
  auto d = ns.mkdir(ROOT_INO, "d");
  EXPECT_EQ(ns.allocate(d.ino(), 0, {s1}).err(), EINVAL);
}

TEST_F(StateMachineTest, ShrinkingSizeMovesDroppedChunksToGarbage) {
  // Proves truncation: setattr to a smaller size drops the chunks wholly past the new end, and
  // the servers that held them find them in garbageFor(server); kept chunks stay. Removing the
  // file sends the rest to garbage too.
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  uint32_t s3 = ns.registerServer("uuid-3", "127.0.0.3:7000", "h3");
  auto f = ns.file(ROOT_INO, "f");
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < 3; i++) {
    auto c = ns.allocate(f.ino(), i, i == 2 ? std::vector<uint32_t>{s2, s3} : std::vector<uint32_t>{s1, s2});
    ASSERT_EQ(c.err(), 0);
    ids.push_back(c.get().getChunk().getId());
  }
  ASSERT_EQ(ns.setSize(f.ino(), 3 * CHUNK_BYTES).err(), 0);
  auto shrunk = ns.setSize(f.ino(), CHUNK_BYTES + 1);  // keeps chunks 0 and 1
  ASSERT_EQ(shrunk.err(), 0);
  EXPECT_EQ(shrunk.attr().getSize(), CHUNK_BYTES + 1);
  auto list = ns.chunkList(f.ino());
  ASSERT_EQ(list.get().getChunks().size(), 2u);

  Txn t(ns.store().env(), false);
  EXPECT_EQ(ns.sm().garbageFor(t, s1, 100, INT64_MAX, 0), std::vector<uint64_t>{});
  EXPECT_EQ(ns.sm().garbageFor(t, s2, 100, INT64_MAX, 0), std::vector<uint64_t>{ids[2]});
  EXPECT_EQ(ns.sm().garbageFor(t, s3, 100, INT64_MAX, 0), std::vector<uint64_t>{ids[2]});
  t.commit();

  ASSERT_EQ(ns.setSize(f.ino(), 0).err(), 0);
  EXPECT_EQ(ns.chunkList(f.ino()).get().getChunks().size(), 0u);
  Txn t2(ns.store().env(), false);
  auto g1 = ns.sm().garbageFor(t2, s1, 100, INT64_MAX, 0);
  std::sort(g1.begin(), g1.end());
  EXPECT_EQ(g1, (std::vector<uint64_t>{ids[0], ids[1]}));
  EXPECT_EQ(ns.sm().garbageFor(t2, s2, 100, INT64_MAX, 0).size(), 3u);
  t2.commit();

  // A heartbeat hands each server its garbage once, through the log like any other change.
  auto heartbeat = [&](uint32_t server) {
    auto r = ns.apply([&](Op op) { op.initHeartbeat().setServer(server); });
    std::vector<uint64_t> ids;
    for (auto id : r.get().getGarbage()) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  EXPECT_EQ(heartbeat(s1), (std::vector<uint64_t>{ids[0], ids[1]}));
  EXPECT_EQ(heartbeat(s1), std::vector<uint64_t>{});
  EXPECT_EQ(heartbeat(s2).size(), 3u);
  Txn t3(ns.store().env(), false);
  EXPECT_EQ(ns.sm().garbageFor(t3, s3, 100, INT64_MAX, 0), std::vector<uint64_t>{ids[2]});
}

TEST_F(StateMachineTest, GarbageWaitsForItsGracePeriodBeforeAnyServerIsToldToDelete) {
  // Proves the grace period: copies of a deleted file are not handed out by heartbeats until
  // the grace period (carried in each command, so every replica decides the same) has passed.
  ns.graceNs = 5'000'000'000;
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  auto f = ns.file(ROOT_INO, "f");
  auto c = ns.allocate(f.ino(), 0, {s1});
  ASSERT_EQ(c.err(), 0);
  uint64_t id = c.get().getChunk().getId();
  ASSERT_EQ(ns.unlink(ROOT_INO, "f").err(), 0);
  ASSERT_EQ(ns.reclaim({f.ino()}).err(), 0);
  auto beat = [&]() {
    auto r = ns.apply([&](Op op) { op.initHeartbeat().setServer(s1); });
    std::vector<uint64_t> ids;
    for (auto g : r.get().getGarbage()) ids.push_back(g);
    return ids;
  };
  EXPECT_EQ(beat(), std::vector<uint64_t>{});
  ns.advance(4'000'000'000);
  EXPECT_EQ(beat(), std::vector<uint64_t>{});
  ns.advance(1'000'000'000);
  EXPECT_EQ(beat(), std::vector<uint64_t>{id});
  EXPECT_EQ(beat(), std::vector<uint64_t>{});
}

TEST_F(StateMachineTest, OrphanReportsDeleteOnlyCopiesNoFileRefersTo) {
  // Proves the orphan check at apply time: a copy the chunk table lists for that server is
  // kept even if the leader reported it, an unknown copy becomes garbage at once (its grace
  // period was spent on the leader), and one already due for deletion is not added twice.
  ns.graceNs = 60'000'000'000;
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  auto f = ns.file(ROOT_INO, "f");
  auto c = ns.allocate(f.ino(), 0, {s1});
  ASSERT_EQ(c.err(), 0);
  uint64_t live = c.get().getChunk().getId();
  uint64_t unknown = live + 1000;
  auto report = [&](uint32_t server, std::vector<uint64_t> ids) {
    return ns.apply([&](Op op) {
      auto o = op.initChunkOrphans();
      o.setServer(server);
      auto l = o.initIds(ids.size());
      for (size_t i = 0; i < ids.size(); i++) l.set(i, ids[i]);
    });
  };
  ASSERT_EQ(report(s1, {live, unknown}).err(), 0);
  ASSERT_EQ(report(s2, {live}).err(), 0);  // s2 holds a copy meta never gave it
  EXPECT_EQ(report(99, {unknown}).err(), ENOENT);
  Txn t(ns.store().env(), false);
  auto g1 = ns.sm().garbageFor(t, s1, 100, ns.now(), ns.graceNs);
  auto g2 = ns.sm().garbageFor(t, s2, 100, ns.now(), ns.graceNs);
  t.commit();
  EXPECT_EQ(g1, std::vector<uint64_t>{unknown});
  EXPECT_EQ(g2, std::vector<uint64_t>{live});
}

TEST_F(StateMachineTest, DrainSurvivesReRegistrationAndReplicaCountIsValidated) {
  // Proves drain is replicated state: a draining server that restarts and registers again
  // stays draining until undrained; the replica count accepts 1..8 only.
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  auto drain = [&](uint32_t s, bool on) {
    return ns.apply([&](Op op) {
      auto d = op.initServerDrain();
      d.setServer(s);
      d.setDrain(on);
    });
  };
  auto draining = [&]() {
    Txn t(ns.store().env(), false);
    bool d = ns.store().getServer(t, s1)->draining;
    t.commit();
    return d;
  };
  ASSERT_EQ(drain(s1, true).err(), 0);
  EXPECT_TRUE(draining());
  EXPECT_EQ(ns.registerServer("uuid-1", "127.0.0.1:7001", "h1"), s1);
  EXPECT_TRUE(draining());
  ASSERT_EQ(drain(s1, false).err(), 0);
  EXPECT_FALSE(draining());
  EXPECT_EQ(drain(42, true).err(), ENOENT);
  EXPECT_EQ(ns.apply([](Op op) { op.setSetReplicas(0); }).err(), EINVAL);
  EXPECT_EQ(ns.apply([](Op op) { op.setSetReplicas(9); }).err(), EINVAL);
  EXPECT_EQ(ns.apply([](Op op) { op.setSetReplicas(2); }).err(), 0);
  Txn t(ns.store().env(), false);
  EXPECT_EQ(ns.sm().replicas(t), 2u);
}

TEST_F(StateMachineTest, DirectoryQuotasLimitInodesAndBytesAndRollUpThroughNestedQuotas) {
  // Proves directory quotas: creation past the inode limit and growth past the byte limit fail
  // with EDQUOT, shrinking and deleting give the usage back, a nested quota's usage counts in
  // the enclosing one, a quota set on a non-empty tree adds up what is there, and nothing moves
  // or is linked across quotas (EXDEV).
  auto quotaSet = [&](uint64_t ino, uint64_t bytes, uint64_t inodes) {
    return ns.apply([&](Op op) {
      auto q = op.initQuotaSet();
      q.setIno(ino);
      q.setLimitBytes(bytes);
      q.setLimitInodes(inodes);
    });
  };
  auto usage = [&](uint64_t ino) {
    auto r = ns.read([&](Op op) { op.setQuotaGet(ino); });
    KJ_ASSERT(r.err() == 0, r.err());
    return std::make_pair(r.get().getQuota().getUsedBytes(), r.get().getQuota().getUsedInodes());
  };
  auto vol = ns.mkdir(ROOT_INO, "vol");
  ASSERT_EQ(quotaSet(vol.ino(), 1000, 3).err(), 0);
  auto a = ns.file(vol.ino(), "a");
  ASSERT_EQ(a.err(), 0);
  EXPECT_EQ(ns.setSize(a.ino(), 600).err(), 0);
  EXPECT_EQ(ns.setSize(a.ino(), 1001).err(), EDQUOT);
  EXPECT_EQ(ns.getattr(a.ino()).attr().getSize(), 600u);
  auto sub = ns.mkdir(vol.ino(), "sub");
  ASSERT_EQ(sub.err(), 0);
  ASSERT_EQ(ns.file(sub.ino(), "b").err(), 0);
  EXPECT_EQ(ns.file(vol.ino(), "c").err(), EDQUOT);  // a, sub, sub/b: 3 inodes
  EXPECT_EQ(usage(vol.ino()), std::make_pair(uint64_t(600), uint64_t(3)));
  // Nothing crosses the quota boundary.
  auto outside = ns.mkdir(ROOT_INO, "outside");
  EXPECT_EQ(ns.rename(vol.ino(), "a", outside.ino(), "a").err(), EXDEV);
  EXPECT_EQ(ns.link(a.ino(), outside.ino(), "a").err(), EXDEV);
  EXPECT_EQ(ns.rename(vol.ino(), "a", sub.ino(), "a2").err(), 0);  // within: fine
  // Deleting gives usage back.
  ASSERT_EQ(ns.unlink(sub.ino(), "a2").err(), 0);
  EXPECT_EQ(usage(vol.ino()), std::make_pair(uint64_t(0), uint64_t(2)));
  // A nested quota set on a non-empty directory takes over its tree and rolls up.
  ASSERT_EQ(ns.file(sub.ino(), "d").err(), 0);  // 3 inodes in vol again
  auto nested = quotaSet(sub.ino(), 0, 10);
  ASSERT_EQ(nested.err(), 0);
  EXPECT_EQ(nested.get().getQuota().getUsedInodes(), 2u);  // b and d
  auto d = ns.lookup(sub.ino(), "d");
  EXPECT_EQ(ns.setSize(d.ino(), 900).err(), 0);
  EXPECT_EQ(usage(sub.ino()), std::make_pair(uint64_t(900), uint64_t(2)));
  EXPECT_EQ(usage(vol.ino()), std::make_pair(uint64_t(900), uint64_t(3)));
  EXPECT_EQ(ns.setSize(d.ino(), 1001).err(), EDQUOT);  // the outer quota still applies
  // Removing the nested quota hands its tree back; raising the outer one lets growth go on.
  ASSERT_EQ(quotaSet(sub.ino(), 0, 0).err(), 0);
  EXPECT_EQ(ns.read([&](Op op) { op.setQuotaGet(sub.ino()); }).err(), ENODATA);
  ASSERT_EQ(quotaSet(vol.ino(), 4000, 3).err(), 0);
  EXPECT_EQ(ns.setSize(d.ino(), 3000).err(), 0);
  EXPECT_EQ(usage(vol.ino()), std::make_pair(uint64_t(3000), uint64_t(3)));
  EXPECT_EQ(ns.rename(sub.ino(), "d", vol.ino(), "d").err(), 0);  // same realm again
  EXPECT_EQ(quotaSet(a.ino() + 1000, 1, 1).err(), ENOENT);
}

TEST_F(StateMachineTest, RenameDirectoryOverEmptyDirectoryReplacesItAndOverNonEmptyFails) {
  // Proves directory replacement: a directory may replace an empty directory (whose inode goes,
  // with link counts right in both parents) but not a non-empty one (ENOTEMPTY) nor a file
  // (ENOTDIR); a file cannot replace a directory (EISDIR).
  auto p = ns.mkdir(ROOT_INO, "p");
  auto q = ns.mkdir(ROOT_INO, "q");
  auto d = ns.mkdir(p.ino(), "d");
  auto e = ns.mkdir(q.ino(), "e");
  auto full = ns.mkdir(q.ino(), "full");
  ASSERT_EQ(ns.file(full.ino(), "x").err(), 0);
  ASSERT_EQ(ns.file(q.ino(), "f").err(), 0);
  EXPECT_EQ(ns.rename(p.ino(), "d", q.ino(), "full").err(), ENOTEMPTY);
  EXPECT_EQ(ns.rename(p.ino(), "d", q.ino(), "f").err(), ENOTDIR);
  EXPECT_EQ(ns.rename(q.ino(), "f", q.ino(), "e").err(), EISDIR);
  ASSERT_EQ(ns.rename(p.ino(), "d", q.ino(), "e").err(), 0);
  EXPECT_EQ(ns.lookup(q.ino(), "e").ino(), d.ino());
  EXPECT_EQ(ns.getattr(e.ino()).err(), ENOENT);
  EXPECT_EQ(ns.getattr(p.ino()).attr().getNlink(), 2u);
  EXPECT_EQ(ns.getattr(q.ino()).attr().getNlink(), 4u);  // e (now d) and full
  EXPECT_EQ(ns.lookup(d.ino(), "..").ino(), q.ino());
}

TEST_F(StateMachineTest, RepliesAreRememberedLongerThanAClientRetries) {
  // Proves the reply memory's lifetime for a client that acknowledges nothing: a retry 170 s
  // after the first attempt (a client retries for at most 60 s plus one 30 s attempt) is
  // answered from memory; one after more than three minutes, once the next prune (one a
  // minute) has run, is applied again (here: EEXIST).
  constexpr uint64_t CLIENT = 77;
  auto first = ns.mknod(ROOT_INO, "kept", S_IFREG | 0644, true, CLIENT, 1);
  ASSERT_EQ(first.err(), 0);
  ns.advance(170'000'000'000);
  auto retry = ns.mknod(ROOT_INO, "kept", S_IFREG | 0644, true, CLIENT, 1);
  EXPECT_EQ(retry.err(), 0);
  EXPECT_EQ(retry.ino(), first.ino());
  ns.advance(70'000'000'000);
  ns.mkdir(ROOT_INO, "later");  // prunes what is older than the memory's lifetime
  EXPECT_EQ(ns.mknod(ROOT_INO, "kept", S_IFREG | 0644, true, CLIENT, 1).err(), EEXIST);
}

TEST_F(StateMachineTest, RepliesAClientAcknowledgedAreForgottenAtOnceAndNoOthers) {
  // Proves ackedBelow: a request saying "every reply below seq 3 arrived" drops that client's
  // replies 1 and 2 (a resend of 1 now runs again: EEXIST), keeps its later ones (a resend of 3
  // is still answered from memory) and another client's.
  constexpr uint64_t CLIENT = 77, OTHER = 78;
  auto a = ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT, 1);
  ASSERT_EQ(a.err(), 0);
  ASSERT_EQ(ns.mknod(ROOT_INO, "b", S_IFREG | 0644, true, CLIENT, 2).err(), 0);
  auto o = ns.mknod(ROOT_INO, "o", S_IFREG | 0644, true, OTHER, 1);
  ASSERT_EQ(o.err(), 0);
  ns.ackedBelow = 2;  // reply 1 arrived, 2 is still awaited
  auto c = ns.mknod(ROOT_INO, "c", S_IFREG | 0644, true, CLIENT, 3);
  ASSERT_EQ(c.err(), 0);
  EXPECT_EQ(ns.mknod(ROOT_INO, "b", S_IFREG | 0644, true, CLIENT, 2).err(), 0)
      << "an outstanding request's reply is kept";
  ns.ackedBelow = 3;
  ASSERT_EQ(ns.mknod(ROOT_INO, "d", S_IFREG | 0644, true, CLIENT, 4).err(), 0);
  ns.ackedBelow = 0;
  EXPECT_EQ(ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT, 1).err(), EEXIST);
  EXPECT_EQ(ns.mknod(ROOT_INO, "b", S_IFREG | 0644, true, CLIENT, 2).err(), EEXIST);
  auto again = ns.mknod(ROOT_INO, "c", S_IFREG | 0644, true, CLIENT, 3);
  EXPECT_EQ(again.err(), 0) << "a reply at or above the mark is kept";
  EXPECT_EQ(again.ino(), c.ino());
  auto other = ns.mknod(ROOT_INO, "o", S_IFREG | 0644, true, OTHER, 1);
  EXPECT_EQ(other.err(), 0) << "another client's reply is kept";
  EXPECT_EQ(other.ino(), o.ino());
}

TEST_F(StateMachineTest, RetriedCommandReturnsTheFirstReplyAndChangesNothing) {
  // Proves exactly-once application of retried mutations (promise 6): the same (client id,
  // seq) answers the stored reply instead of running again, so a retried exclusive create does
  // not fail with EEXIST and a retried rename does not move a newer file of the same name.
  constexpr uint64_t CLIENT = 77;
  auto first = ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT, 1);
  ASSERT_EQ(first.err(), 0);
  auto retry = ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT, 1);
  EXPECT_EQ(retry.err(), 0) << "a retried create must not see its own first attempt";
  EXPECT_EQ(retry.ino(), first.ino());
  EXPECT_EQ(ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT, 2).err(), EEXIST)
      << "a new sequence number is a new request";

  ASSERT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "b", 0, CLIENT, 3).err(), 0);
  auto newer = ns.file(ROOT_INO, "a");  // another client creates "a" again
  ASSERT_EQ(newer.err(), 0);
  EXPECT_EQ(ns.rename(ROOT_INO, "a", ROOT_INO, "b", 0, CLIENT, 3).err(), 0);
  EXPECT_EQ(ns.lookup(ROOT_INO, "a").ino(), newer.ino()) << "the retry moved the newer file";
  EXPECT_EQ(ns.lookup(ROOT_INO, "b").ino(), first.ino());

  // The same sequence number from another client is a different request.
  EXPECT_EQ(ns.mknod(ROOT_INO, "a", S_IFREG | 0644, true, CLIENT + 1, 1).err(), EEXIST);
  // An error reply is remembered as well: the retry answers the same error.
  EXPECT_EQ(ns.unlink(ROOT_INO, "missing").err(), ENOENT);
  auto failed = ns.apply(
      [](Op op) {
        auto u = op.initRmdir();
        u.setParent(ROOT_INO);
        u.setName("zzz");
      },
      CLIENT, 4);
  EXPECT_EQ(failed.err(), ENOENT);
  ASSERT_EQ(ns.mkdir(ROOT_INO, "zzz").err(), 0);
  auto failedRetry = ns.apply(
      [](Op op) {
        auto u = op.initRmdir();
        u.setParent(ROOT_INO);
        u.setName("zzz");
      },
      CLIENT, 4);
  EXPECT_EQ(failedRetry.err(), ENOENT);
  EXPECT_EQ(ns.lookup(ROOT_INO, "zzz").err(), 0) << "the retried rmdir ran a second time";
}

// Applies a mixed workload (creates, links, renames, xattrs, chunks, truncation, removals).
void workload(Namespace& ns) {
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  uint64_t seq = 1;
  auto d = ns.mkdir(ROOT_INO, "dir");
  auto e = ns.mkdir(d.ino(), "sub");
  for (int i = 0; i < 12; i++) {
    auto f = ns.mknod(i % 2 ? d.ino() : e.ino(), "f" + std::to_string(i), S_IFREG | 0640, true,
                      9, seq++);
    ns.allocate(f.ino(), 0, {s1, s2});
    if (i % 3 == 0) ns.allocate(f.ino(), 1, {s2, s1});
    ns.apply([&](Op op) {
      auto w = op.initCommitWrite();
      w.setIno(f.ino());
      w.setSize(CHUNK_BYTES + 100 * i);
    });
    ns.setxattr(f.ino(), "user.i", std::to_string(i), 0);
  }
  ns.rename(d.ino(), "f1", e.ino(), "f0");
  ns.rename(d.ino(), "f3", e.ino(), "f2", RENAME_EXCHANGE_FLAG);
  ns.link(ns.lookup(d.ino(), "f5").ino(), ROOT_INO, "hard");
  ns.unlink(d.ino(), "f5");
  ns.setSize(ns.lookup(e.ino(), "f6").ino(), 10);
  ns.apply([](Op op) {
    auto l = op.initSymlink();
    l.setParent(ROOT_INO);
    l.setName("sym");
    l.setTarget("dir/sub");
  });
  ns.rename(ROOT_INO, "dir", ROOT_INO, "dir2");
  ns.mknod(ROOT_INO, "hard", S_IFREG | 0600, true, 9, 1);  // a retry
}

TEST_F(StateMachineTest, TwoReplicasApplyingTheSameCommandsReachTheSameState) {
  // Proves determinism: two state machines on two stores, fed the same command sequence, answer
  // every readdir, getattr, readlink, listxattr/getxattr and chunkList identically, and agree
  // on garbage.
  Namespace other;
  workload(ns);
  workload(other);
  std::string a = ns.dump(), b = other.dump();
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find("/dir2/sub/f0"), std::string::npos) << a;
  EXPECT_NE(a.find("/hard"), std::string::npos) << a;
  Txn ta(ns.store().env(), false), tb(other.store().env(), false);
  EXPECT_EQ(ns.sm().garbageFor(ta, 1, 1000, INT64_MAX, 0), other.sm().garbageFor(tb, 1, 1000, INT64_MAX, 0));
  EXPECT_FALSE(ns.sm().garbageFor(ta, 1, 1000, INT64_MAX, 0).empty());
}

TEST_F(StateMachineTest, AFileUnlinkedWhileOpenKeepsItsDataUntilReclaimed) {
  // Proves the state machine's half of unlink-while-open: the last unlink of a regular file
  // keeps its inode (nlink 0) and chunks, listed as unlinked; it can still be written and
  // resized, counts against no quota, and goes with its chunks only at RECLAIM (idempotent).
  // Other file types go at once. Sessions are recorded and ended.
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  auto f = ns.file(ROOT_INO, "f");
  ASSERT_EQ(ns.allocate(f.ino(), 0, {s1}).err(), 0);
  ASSERT_EQ(ns.setSize(f.ino(), 5000).err(), 0);
  auto fifo = ns.mknod(ROOT_INO, "p", S_IFIFO | 0644);
  ASSERT_EQ(ns.unlink(ROOT_INO, "p").err(), 0);
  EXPECT_EQ(ns.getattr(fifo.ino()).err(), ENOENT);
  ASSERT_EQ(ns.unlink(ROOT_INO, "f").err(), 0);
  {
    Txn t(ns.store().env(), false);
    EXPECT_EQ(ns.sm().unlinkedFiles(t, 0, 10), std::vector<uint64_t>{f.ino()});
  }
  EXPECT_EQ(ns.getattr(f.ino()).attr().getSize(), 5000u);
  EXPECT_EQ(ns.setSize(f.ino(), 9000).err(), 0);
  EXPECT_EQ(ns.read([&](Op op) { op.setChunkList(f.ino()); }).get().getChunks().size(), 1u);
  ASSERT_EQ(ns.reclaim({f.ino(), f.ino() + 999}).err(), 0);  // unknown inodes are skipped
  EXPECT_EQ(ns.getattr(f.ino()).err(), ENOENT);
  EXPECT_EQ(ns.read([&](Op op) { op.setChunkList(f.ino()); }).get().getChunks().size(), 0u);
  ASSERT_EQ(ns.reclaim({f.ino()}).err(), 0);
  {
    Txn t(ns.store().env(), false);
    EXPECT_TRUE(ns.sm().unlinkedFiles(t, 0, 10).empty());
  }
  ns.apply([&](Op op) {
    auto s = op.initSessionStart();
    s.setClient(42);
    s.setHost("h");
    s.setMount("/m");
  });
  {
    Txn t(ns.store().env(), false);
    auto sessions = ns.sm().sessions(t);
    ASSERT_EQ(sessions.size(), 1u);
    EXPECT_EQ(sessions[0].client, 42u);
    EXPECT_EQ(sessions[0].host, "h");
    EXPECT_EQ(sessions[0].mount, "/m");
  }
  ns.apply([&](Op op) { op.setSessionEnd(42); });
  Txn t(ns.store().env(), false);
  EXPECT_TRUE(ns.sm().sessions(t).empty());
}

}  // namespace
}  // namespace cairn::meta

namespace cairn::meta {
namespace {

TEST(SetattrWithCommit, CommitsTheSizeAndTheAttributesTogetherOrNeither) {
  // Proves the folded setattr: the written size and the new mode land in one command; a size
  // growth the quota refuses fails the whole command (mode unchanged, size unchanged); a size
  // change together with a commit is refused; and the parent's attributes come with mknod
  // and unlink replies.
  Namespace ns;
  auto d = ns.mkdir(ROOT_INO, "q");
  ASSERT_EQ(d.err(), 0);
  ASSERT_TRUE(d.get().hasParentAttr());
  EXPECT_EQ(d.get().getParentAttr().getIno(), ROOT_INO);
  EXPECT_EQ(d.get().getParentAttr().getNlink(), 3u);
  ASSERT_EQ(ns.apply([&](Op op) {
    auto q = op.initQuotaSet();
    q.setIno(d.ino());
    q.setLimitBytes(1000);
  }).err(), 0);
  auto f = ns.file(d.ino(), "f");
  EXPECT_EQ(f.get().getParentAttr().getIno(), d.ino());
  EXPECT_EQ(f.get().getParentAttr().getMtimeNs(), ns.now());
  auto chmodWithCommit = [&](uint64_t size, uint32_t mode, bool alsoSize = false) {
    return ns.apply([&](Op op) {
      auto s = op.initSetattr();
      s.setIno(f.ino());
      s.getAttr().setSetMode(true);
      s.getAttr().setMode(mode);
      if (alsoSize) {
        s.getAttr().setSetSize(true);
        s.getAttr().setSize(1);
      }
      auto c = s.initCommit();
      c.setIno(f.ino());
      c.setSize(size);
    });
  };
  auto ok = chmodWithCommit(600, 0600);
  ASSERT_EQ(ok.err(), 0);
  EXPECT_EQ(ok.attr().getSize(), 600u);
  EXPECT_EQ(ok.attr().getMode() & 07777, 0600u);
  auto refused = chmodWithCommit(5000, 0640);
  EXPECT_EQ(refused.err(), EDQUOT);
  auto now = ns.getattr(f.ino());
  EXPECT_EQ(now.attr().getSize(), 600u);
  EXPECT_EQ(now.attr().getMode() & 07777, 0600u);
  EXPECT_EQ(chmodWithCommit(700, 0640, true).err(), EINVAL);
  EXPECT_EQ(ns.getattr(f.ino()).attr().getSize(), 600u);
  auto u = ns.unlink(d.ino(), "f");
  ASSERT_EQ(u.err(), 0);
  EXPECT_EQ(u.get().getParentAttr().getIno(), d.ino());
}

TEST(FirstChunkOffer, IsRecordedOnlyByTheCommitThatBindsItAndNeverTwice) {
  // Proves the first chunk offered at create: the create reply offers an id and the leader's
  // replicas and records no chunk; the creator's commit binds it (a retry binds nothing more);
  // a commit binding it where another writer's chunk was recorded first fails with EEXIST and
  // names that chunk; bad binds (unknown server, an id never handed out or already used,
  // another index) fail with EINVAL; a growth the quota refuses records no chunk either.
  Namespace ns;
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  auto create = [&](uint64_t parent, const std::string& name, bool ask,
                    uint32_t mode = S_IFREG | 0644, bool exclusive = true) {
    return ns.create(parent, name, {s2, s1}, ask, mode, exclusive);
  };
  auto commit = [&](uint64_t ino, uint64_t size, proto::ChunkInfo::Reader bind) {
    return ns.apply([&](Op op) {
      auto w = op.initCommitWrite();
      w.setIno(ino);
      w.setSize(size);
      w.setBind(bind);
    });
  };
  auto f = create(ROOT_INO, "f", true);
  ASSERT_EQ(f.err(), 0);
  ASSERT_TRUE(f.get().hasOfferedChunk());
  auto offer = f.get().getOfferedChunk();
  EXPECT_EQ(offer.getIndex(), 0u);
  EXPECT_EQ(offer.getVersion(), 1u);
  ASSERT_EQ(offer.getReplicas().size(), 2u);
  EXPECT_EQ(offer.getReplicas()[0].getServer(), s2);
  EXPECT_STREQ(offer.getReplicas()[0].getAddr().cStr(), "127.0.0.2:7000");
  EXPECT_EQ(ns.chunkList(f.ino()).get().getChunks().size(), 0u) << "an offer records nothing";

  auto g = create(ROOT_INO, "g", true);
  ASSERT_TRUE(g.get().hasOfferedChunk());
  EXPECT_NE(g.get().getOfferedChunk().getId(), offer.getId());
  EXPECT_FALSE(create(ROOT_INO, "plain", false).get().hasOfferedChunk());
  EXPECT_FALSE(create(ROOT_INO, "d", true, S_IFDIR | 0755).get().hasOfferedChunk());
  auto reopened = create(ROOT_INO, "f", true, S_IFREG | 0644, false);
  ASSERT_EQ(reopened.err(), 0);
  EXPECT_FALSE(reopened.get().hasOfferedChunk()) << "an existing file may have chunks";

  auto bound = commit(f.ino(), 5000, offer);
  ASSERT_EQ(bound.err(), 0);
  EXPECT_EQ(bound.attr().getSize(), 5000u);
  auto chunks = ns.chunkList(f.ino()).get().getChunks();
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].getId(), offer.getId());
  EXPECT_EQ(chunks[0].getVersion(), 1u);
  ASSERT_EQ(chunks[0].getReplicas().size(), 2u);
  EXPECT_EQ(chunks[0].getReplicas()[1].getServer(), s1);
  ASSERT_EQ(commit(f.ino(), 6000, offer).err(), 0) << "a retry of the bind";
  EXPECT_EQ(ns.chunkList(f.ino()).get().getChunks().size(), 1u);
  EXPECT_EQ(ns.getattr(f.ino()).attr().getSize(), 6000u);

  // Another writer's chunk first: EEXIST, that chunk named, nothing changed.
  auto theirs = ns.allocate(g.ino(), 0, {s1});
  ASSERT_EQ(theirs.err(), 0);
  auto lost = commit(g.ino(), 100, g.get().getOfferedChunk());
  EXPECT_EQ(lost.err(), EEXIST);
  ASSERT_TRUE(lost.get().hasBoundChunk());
  EXPECT_EQ(lost.get().getBoundChunk().getId(), theirs.get().getChunk().getId());
  EXPECT_EQ(ns.getattr(g.ino()).attr().getSize(), 0u);
  EXPECT_EQ(ns.chunkList(g.ino()).get().getChunks()[0].getId(), theirs.get().getChunk().getId());

  auto h = create(ROOT_INO, "h", true);
  auto badBind = [&](const std::function<void(proto::ChunkInfo::Builder)>& spoil) {
    capnp::MallocMessageBuilder m;
    auto b = m.initRoot<proto::ChunkInfo>();
    b.setIndex(0);
    b.setId(h.get().getOfferedChunk().getId());
    b.setVersion(1);
    b.initReplicas(1)[0].setServer(s1);
    spoil(b);
    return commit(h.ino(), 10, b.asReader()).err();
  };
  EXPECT_EQ(badBind([&](proto::ChunkInfo::Builder b) { b.getReplicas()[0].setServer(99); }), EINVAL);
  EXPECT_EQ(badBind([&](proto::ChunkInfo::Builder b) { b.setId(1ull << 40); }), EINVAL);
  EXPECT_EQ(badBind([&](proto::ChunkInfo::Builder b) { b.setId(offer.getId()); }), EINVAL);
  EXPECT_EQ(badBind([&](proto::ChunkInfo::Builder b) { b.setIndex(1); }), EINVAL);
  EXPECT_EQ(badBind([&](proto::ChunkInfo::Builder b) { b.setVersion(2); }), EINVAL);
  EXPECT_EQ(ns.chunkList(h.ino()).get().getChunks().size(), 0u);
  EXPECT_EQ(ns.getattr(h.ino()).attr().getSize(), 0u);
  EXPECT_EQ(badBind([](proto::ChunkInfo::Builder) {}), 0);

  // All or nothing under a quota.
  auto q = ns.mkdir(ROOT_INO, "q");
  ASSERT_EQ(ns.apply([&](Op op) {
    auto s = op.initQuotaSet();
    s.setIno(q.ino());
    s.setLimitBytes(1000);
  }).err(), 0);
  auto inq = create(q.ino(), "big", true);
  ASSERT_TRUE(inq.get().hasOfferedChunk());
  EXPECT_EQ(commit(inq.ino(), 5000, inq.get().getOfferedChunk()).err(), EDQUOT);
  EXPECT_EQ(ns.chunkList(inq.ino()).get().getChunks().size(), 0u);
}

TEST(FirstChunkOffer, IsTakenBackOnceTheFloorPassesIt) {
  // Proves the offer floor: it only rises and never above the id counter; a bind of an id
  // below it fails with ESTALE and records nothing; inventory garbage spares copies of ids at
  // or above it (offers that may still be bound) and takes those below.
  Namespace ns;
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  auto create = [&](const std::string& name) { return ns.create(ROOT_INO, name, {s1}); };
  auto floor = [&](uint64_t v) { return ns.apply([&](Op op) { op.setOfferFloor(v); }).err(); };
  auto orphans = [&](uint64_t id) {
    return ns.apply([&](Op op) {
      auto o = op.initChunkOrphans();
      o.setServer(s1);
      o.initIds(1).set(0, id);
    });
  };
  auto old = create("old");
  auto young = create("young");
  uint64_t oldId = old.get().getOfferedChunk().getId();
  uint64_t youngId = young.get().getOfferedChunk().getId();
  ASSERT_LT(oldId, youngId);
  auto garbage = [&]() {
    Txn t(ns.store().env(), false);
    return ns.sm().garbageFor(t, s1, 100, INT64_MAX, 0);
  };
  orphans(oldId);
  EXPECT_EQ(garbage().size(), 0u) << "an offer not yet taken back is no orphan";
  // A recorded chunk's copy on a server its record does not list is an orphan, recent or not.
  uint32_t s2 = ns.registerServer("uuid-2", "127.0.0.2:7000", "h2");
  auto recorded = ns.allocate(old.ino(), 1, {s2});
  ASSERT_EQ(recorded.err(), 0);
  orphans(recorded.get().getChunk().getId());
  ASSERT_EQ(garbage().size(), 1u);
  EXPECT_EQ(garbage()[0], recorded.get().getChunk().getId());

  ASSERT_EQ(floor(youngId), 0);
  ASSERT_EQ(floor(oldId), 0);  // never lowered
  ASSERT_EQ(floor(1ull << 40), 0);  // capped at the id counter
  auto commit = [&](const Reply& r) {
    return ns.apply([&](Op op) {
      auto w = op.initCommitWrite();
      w.setIno(r.ino());
      w.setSize(10);
      w.setBind(r.get().getOfferedChunk());
    });
  };
  EXPECT_EQ(commit(old).err(), ESTALE);
  for (auto c : ns.chunkList(old.ino()).get().getChunks()) EXPECT_NE(c.getIndex(), 0u);
  EXPECT_EQ(ns.getattr(old.ino()).attr().getSize(), 0u);
  EXPECT_EQ(commit(young).err(), ESTALE) << "the floor reached the counter";
  orphans(oldId);
  auto g = garbage();
  ASSERT_EQ(g.size(), 2u);
  EXPECT_NE(std::find(g.begin(), g.end(), oldId), g.end());
  auto fresh = create("fresh");
  EXPECT_EQ(commit(fresh).err(), 0) << "offers after the floor bind";
}

TEST(IdGap, InodeAndChunkIdsJumpAheadAndNeverComeBack) {
  // After its machine went down, a leader skips ids: what it answered before the log sync
  // behind it (and lost) must not name another file. Both counters jump; a zero or absurd
  // gap is refused and changes nothing.
  Namespace ns;
  uint32_t s1 = ns.registerServer("uuid-1", "127.0.0.1:7000", "h1");
  auto before = ns.create(ROOT_INO, "before", {s1});
  ASSERT_EQ(before.err(), 0);
  uint64_t ino0 = before.ino(), chunk0 = before.get().getOfferedChunk().getId();
  constexpr uint64_t GAP = uint64_t(1) << 24;
  EXPECT_EQ(ns.apply([&](Op op) { op.setIdGap(0); }).err(), EINVAL);
  EXPECT_EQ(ns.apply([&](Op op) { op.setIdGap(uint64_t(1) << 41); }).err(), EINVAL);
  auto still = ns.create(ROOT_INO, "still", {s1});
  EXPECT_LT(still.ino(), ino0 + GAP) << "a refused gap moved the counter";
  ASSERT_EQ(ns.apply([&](Op op) { op.setIdGap(GAP); }).err(), 0);
  auto after = ns.create(ROOT_INO, "after", {s1});
  ASSERT_EQ(after.err(), 0);
  EXPECT_GE(after.ino(), ino0 + GAP);
  EXPECT_GE(after.get().getOfferedChunk().getId(), chunk0 + GAP);
}

}  // namespace
}  // namespace cairn::meta
