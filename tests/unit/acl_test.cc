// POSIX ACL rules (meta/acl.cc) and their use by the state machine: what setting an ACL does to
// the mode, what chmod does to an ACL, and what a new node inherits from its directory.
#include "meta/acl.h"

#include <gtest/gtest.h>

#include "tests/unit/namespace_fixture.h"

namespace cairn::meta {
namespace {

using acl::Acl;
using acl::Entry;

Acl named(uint16_t userObj, uint16_t user, uint16_t group, uint16_t mask, uint16_t other) {
  return {{acl::USER_OBJ, userObj, 0}, {acl::USER, user, 1000}, {acl::GROUP_OBJ, group, 0},
          {acl::MASK, mask, 0}, {acl::OTHER, other, 0}};
}

TEST(Acl, ParseAcceptsWellFormedAclsSortedAndRefusesMalformedOnes) {
  // Proves the boundary check: the kernel's format round-trips (sorted by tag and id), and
  // missing required entries, duplicates, a named entry without a mask, bad perms, a bad
  // version or a truncated entry are refused.
  Acl a = {{acl::OTHER, 4, 0}, {acl::USER, 6, 7}, {acl::USER_OBJ, 6, 0}, {acl::MASK, 6, 0},
           {acl::USER, 4, 3}, {acl::GROUP_OBJ, 4, 0}};
  auto parsed = acl::parse(acl::encode(a));
  ASSERT_TRUE(parsed.has_value());
  Acl sorted = {{acl::USER_OBJ, 6, 0}, {acl::USER, 4, 3}, {acl::USER, 6, 7},
                {acl::GROUP_OBJ, 4, 0}, {acl::MASK, 6, 0}, {acl::OTHER, 4, 0}};
  EXPECT_EQ(*parsed, sorted);
  EXPECT_EQ(acl::parse(acl::encode(*parsed)), parsed);
  EXPECT_FALSE(acl::parse(acl::encode({{acl::USER_OBJ, 6, 0}, {acl::OTHER, 4, 0}})));
  EXPECT_FALSE(acl::parse(acl::encode({{acl::USER_OBJ, 6, 0}, {acl::GROUP_OBJ, 4, 0},
                                       {acl::OTHER, 4, 0}, {acl::USER, 4, 1}})));  // no mask
  EXPECT_FALSE(acl::parse(acl::encode({{acl::USER_OBJ, 6, 0}, {acl::GROUP_OBJ, 4, 0},
                                       {acl::OTHER, 4, 0}, {acl::MASK, 4, 0},
                                       {acl::USER, 4, 1}, {acl::USER, 2, 1}})));  // twice
  EXPECT_FALSE(acl::parse(acl::encode({{acl::USER_OBJ, 8, 0}, {acl::GROUP_OBJ, 4, 0},
                                       {acl::OTHER, 4, 0}})));
  EXPECT_FALSE(acl::parse(acl::encode({{acl::USER_OBJ, 6, 0}, {acl::GROUP_OBJ, 4, 0},
                                       {acl::OTHER, 4, 0}, {0x40, 4, 0}})));
  std::string bad = acl::encode(sorted);
  bad[0] = 3;
  EXPECT_FALSE(acl::parse(bad));
  EXPECT_FALSE(acl::parse(acl::encode(sorted).substr(0, 10)));
  EXPECT_EQ(acl::parse(acl::encode({})), Acl{});
}

TEST(Acl, ModeFollowsTheAclAndChmodFollowsTheMode) {
  // Proves the mode/ACL coupling: the mask stands for the group bits when present, a
  // three-entry ACL is equivalent to a mode, and chmod rewrites owner, mask and other.
  uint32_t mode = S_IFREG | 04777;
  EXPECT_TRUE(acl::applyToMode(named(6, 7, 4, 5, 0), mode));
  EXPECT_EQ(mode, uint32_t(S_IFREG | 04650));
  Acl minimal = {{acl::USER_OBJ, 7, 0}, {acl::GROUP_OBJ, 5, 0}, {acl::OTHER, 1, 0}};
  EXPECT_FALSE(acl::applyToMode(minimal, mode));
  EXPECT_EQ(mode, uint32_t(S_IFREG | 04751));
  Acl a = named(7, 7, 7, 7, 7);
  acl::chmod(a, 0640);
  EXPECT_EQ(a, named(6, 7, 7, 4, 0));  // the group entry stays, the mask carries the bits
  acl::chmod(minimal, 0604);
  EXPECT_EQ(minimal, (Acl{{acl::USER_OBJ, 6, 0}, {acl::GROUP_OBJ, 0, 0}, {acl::OTHER, 4, 0}}));
}

TEST(Acl, CreateMasqLimitsTheInheritedAclByTheRequestedMode) {
  // Proves inheritance (posix_acl_create_masq): entries are cut to the mode asked for, the
  // mode to the entries, named entries survive behind the mask.
  Acl a = named(7, 7, 5, 7, 0);
  uint32_t mode = S_IFREG | 0666;
  EXPECT_TRUE(acl::createMasq(a, mode));
  EXPECT_EQ(mode, uint32_t(S_IFREG | 0660));
  EXPECT_EQ(a, named(6, 7, 5, 6, 0));
  Acl m = {{acl::USER_OBJ, 7, 0}, {acl::GROUP_OBJ, 5, 0}, {acl::OTHER, 5, 0}};
  mode = S_IFDIR | 0777;
  EXPECT_FALSE(acl::createMasq(m, mode));  // no more than a mode: nothing to store
  EXPECT_EQ(mode, uint32_t(S_IFDIR | 0755));
}

using testing::Reply;

class AclStateMachineTest : public ::testing::Test {
 protected:
  testing::Namespace ns;
  Reply setxattr(uint64_t ino, const char* name, const std::string& value) {
    return ns.apply([&](testing::Op op) {
      auto x = op.initSetxattr();
      x.setIno(ino);
      x.setName(name);
      x.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
    });
  }
  Reply getxattr(uint64_t ino, const char* name) {
    return ns.read([&](testing::Op op) {
      auto x = op.initGetxattr();
      x.setIno(ino);
      x.setName(name);
    });
  }
  Reply mknodMasked(uint64_t parent, const std::string& name, uint32_t mode, uint32_t umask) {
    return ns.apply([&](testing::Op op) {
      auto m = op.initMknod();
      m.setParent(parent);
      m.setName(name);
      m.setMode(mode);
      m.setUmask(umask);
      m.setExclusive(true);
    });
  }
  Reply chmod(uint64_t ino, uint32_t mode) {
    return ns.apply([&](testing::Op op) {
      auto s = op.initSetattr();
      s.setIno(ino);
      s.getAttr().setSetMode(true);
      s.getAttr().setMode(mode);
    });
  }
  std::optional<Acl> stored(uint64_t ino, const char* name) {
    auto r = getxattr(ino, name);
    if (r.err() != 0) return std::nullopt;
    auto v = r.get().getValue();
    return acl::parse(std::string(reinterpret_cast<const char*>(v.begin()), v.size()));
  }
};
TEST_F(AclStateMachineTest, AccessAclSetsTheModeAndChmodRewritesIt) {
  // Proves that meta keeps the mode and the stored ACL in step, refuses malformed ACLs and
  // default ACLs on files, and drops an ACL that says no more than the mode.
  auto f = ns.mknod(ROOT_INO, "f", S_IFREG | 0600);
  ASSERT_EQ(setxattr(f.ino(), acl::ACCESS, acl::encode(named(6, 4, 0, 4, 0))).err(), 0);
  EXPECT_EQ(ns.getattr(f.ino()).attr().getMode(), uint32_t(S_IFREG | 0640));
  ASSERT_EQ(chmod(f.ino(), 0600).err(), 0);
  EXPECT_EQ(stored(f.ino(), acl::ACCESS), named(6, 4, 0, 0, 0));
  EXPECT_EQ(setxattr(f.ino(), acl::ACCESS, "junk").err(), EINVAL);
  EXPECT_EQ(setxattr(f.ino(), acl::DEFAULT, acl::encode(named(6, 4, 0, 4, 0))).err(), EACCES);
  Acl minimal = {{acl::USER_OBJ, 6, 0}, {acl::GROUP_OBJ, 4, 0}, {acl::OTHER, 4, 0}};
  ASSERT_EQ(setxattr(f.ino(), acl::ACCESS, acl::encode(minimal)).err(), 0);
  EXPECT_EQ(getxattr(f.ino(), acl::ACCESS).err(), ENODATA);
  EXPECT_EQ(ns.getattr(f.ino()).attr().getMode(), uint32_t(S_IFREG | 0644));
}

TEST_F(AclStateMachineTest, NewNodesInheritTheDefaultAclAndOtherwiseTheUmask) {
  // Proves creation: under a default ACL the umask is ignored, files get an access ACL cut to
  // their mode, directories also the default ACL; elsewhere the umask applies; symlinks get
  // neither.
  auto d = ns.mkdir(ROOT_INO, "d");
  Acl def = named(7, 7, 5, 7, 0);
  ASSERT_EQ(setxattr(d.ino(), acl::DEFAULT, acl::encode(def)).err(), 0);
  auto f = mknodMasked(d.ino(), "f", S_IFREG | 0666, 077);
  ASSERT_EQ(f.err(), 0);
  EXPECT_EQ(f.attr().getMode(), uint32_t(S_IFREG | 0660));
  EXPECT_EQ(stored(f.ino(), acl::ACCESS), named(6, 7, 5, 6, 0));
  EXPECT_EQ(getxattr(f.ino(), acl::DEFAULT).err(), ENODATA);
  auto sub = mknodMasked(d.ino(), "sub", S_IFDIR | 0777, 077);
  EXPECT_EQ(sub.attr().getMode(), uint32_t(S_IFDIR | 0770));
  EXPECT_EQ(stored(sub.ino(), acl::DEFAULT), def);
  EXPECT_EQ(stored(sub.ino(), acl::ACCESS), named(7, 7, 5, 7, 0));
  auto plain = mknodMasked(ROOT_INO, "plain", S_IFREG | 0666, 027);
  EXPECT_EQ(plain.attr().getMode(), uint32_t(S_IFREG | 0640));
  EXPECT_EQ(getxattr(plain.ino(), acl::ACCESS).err(), ENODATA);
}

}  // namespace
}  // namespace cairn::meta
