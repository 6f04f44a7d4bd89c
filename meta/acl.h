// POSIX ACLs as the kernel hands them over: the system.posix_acl_access and
// system.posix_acl_default extended attributes (Linux's posix_acl_xattr format, little endian).
// With FUSE_POSIX_ACL the kernel enforces them and caches them; the filesystem keeps them and
// the mode in step (setting an access ACL sets the mode's bits, chmod rewrites the ACL) and
// gives new files and directories their parent's default ACL. These are the rules, pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::meta::acl {

inline constexpr const char* ACCESS = "system.posix_acl_access";
inline constexpr const char* DEFAULT = "system.posix_acl_default";

enum Tag : uint16_t {
  USER_OBJ = 0x01,
  USER = 0x02,
  GROUP_OBJ = 0x04,
  GROUP = 0x08,
  MASK = 0x10,
  OTHER = 0x20,
};

struct Entry {
  uint16_t tag = 0;
  uint16_t perm = 0;  // rwx as 4, 2, 1
  uint32_t id = 0;    // uid or gid for USER and GROUP
  bool operator==(const Entry&) const = default;
};
using Acl = std::vector<Entry>;

inline constexpr size_t MAX_ENTRIES = 1024;

// The entries of a well-formed ACL (version 2; one USER_OBJ, GROUP_OBJ and OTHER; a MASK when
// there are named entries; no duplicate names; perms within rwx), sorted as the kernel sorts
// them. nullopt when malformed. An empty attribute is an empty ACL (no entries).
std::optional<Acl> parse(std::string_view xattr);
std::string encode(const Acl& acl);

// The mode's permission bits the ACL implies (owner, mask or group, other) put into `mode`;
// true when the ACL says no more than these bits (then it need not be stored).
bool applyToMode(const Acl& acl, uint32_t& mode);

// A new node's ACL from its parent's default ACL and the mode asked for
// (posix_acl_create_masq): the entries are limited by the mode and the mode by them. True when
// the resulting access ACL says more than the mode (then it is stored).
bool createMasq(Acl& acl, uint32_t& mode);

// chmod: the owner, mask (else group) and other entries follow the new mode.
void chmod(Acl& acl, uint32_t mode);

}  // namespace cairn::meta::acl
