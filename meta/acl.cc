#include "meta/acl.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace cairn::meta::acl {

namespace {
constexpr uint32_t VERSION = 2;
constexpr uint32_t RWX_O = 07, RWX_G = 070, RWX_U = 0700;

uint32_t le32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint16_t le16(const char* p) {
  return static_cast<uint16_t>(static_cast<unsigned char>(p[0]) |
                               (static_cast<unsigned char>(p[1]) << 8));
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; i++) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
}  // namespace

std::optional<Acl> parse(std::string_view x) {
  if (x.size() < 4 || (x.size() - 4) % 8 != 0 || le32(x.data()) != VERSION) return std::nullopt;
  size_t n = (x.size() - 4) / 8;
  if (n > MAX_ENTRIES) return std::nullopt;
  Acl acl;
  for (size_t i = 0; i < n; i++) {
    const char* p = x.data() + 4 + 8 * i;
    Entry e{le16(p), le16(p + 2), le32(p + 4)};
    if (e.perm & ~7u) return std::nullopt;
    if (e.tag != USER && e.tag != GROUP) e.id = 0;  // undefined there (ACL_UNDEFINED_ID)
    acl.push_back(e);
  }
  if (acl.empty()) return acl;
  int userObj = 0, groupObj = 0, other = 0, mask = 0, named = 0;
  std::set<std::pair<uint16_t, uint32_t>> names;
  for (auto& e : acl) {
    switch (e.tag) {
      case USER_OBJ: userObj++; break;
      case GROUP_OBJ: groupObj++; break;
      case OTHER: other++; break;
      case MASK: mask++; break;
      case USER:
      case GROUP:
        named++;
        if (!names.insert({e.tag, e.id}).second) return std::nullopt;
        break;
      default:
        return std::nullopt;
    }
  }
  if (userObj != 1 || groupObj != 1 || other != 1 || mask > 1) return std::nullopt;
  if (named > 0 && mask == 0) return std::nullopt;
  std::sort(acl.begin(), acl.end(), [](const Entry& a, const Entry& b) {
    return a.tag != b.tag ? a.tag < b.tag : a.id < b.id;
  });
  return acl;
}

std::string encode(const Acl& acl) {
  std::string s;
  put32(s, VERSION);
  for (auto& e : acl) {
    put16(s, e.tag);
    put16(s, e.perm);
    put32(s, (e.tag == USER || e.tag == GROUP) ? e.id : 0xffffffffu);
  }
  return s;
}

bool applyToMode(const Acl& acl, uint32_t& mode) {
  uint32_t bits = 0;
  bool more = false;
  for (auto& e : acl) {
    switch (e.tag) {
      case USER_OBJ: bits |= uint32_t(e.perm) << 6; break;
      case GROUP_OBJ: bits |= uint32_t(e.perm) << 3; break;
      case OTHER: bits |= e.perm; break;
      case MASK:
        bits = (bits & ~RWX_G) | (uint32_t(e.perm) << 3);
        more = true;
        break;
      default: more = true;
    }
  }
  // The mask comes after the group entry in sorted order, so it wins as in the kernel.
  mode = (mode & ~0777u) | bits;
  return more;
}

bool createMasq(Acl& acl, uint32_t& modeRef) {
  uint32_t mode = modeRef;
  Entry* groupObj = nullptr;
  Entry* mask = nullptr;
  bool more = false;
  for (auto& e : acl) {
    switch (e.tag) {
      case USER_OBJ:
        e.perm &= static_cast<uint16_t>(((mode >> 6) & 7));
        mode &= (uint32_t(e.perm) << 6) | ~RWX_U;
        break;
      case USER:
      case GROUP: more = true; break;
      case GROUP_OBJ: groupObj = &e; break;
      case OTHER:
        e.perm &= static_cast<uint16_t>(mode & 7);
        mode &= uint32_t(e.perm) | ~RWX_O;
        break;
      case MASK:
        mask = &e;
        more = true;
        break;
    }
  }
  Entry* g = mask ? mask : groupObj;
  if (g) {
    g->perm &= static_cast<uint16_t>((mode >> 3) & 7);
    mode &= (uint32_t(g->perm) << 3) | ~RWX_G;
  }
  modeRef = (modeRef & ~0777u) | (mode & 0777u);
  return more;
}

void chmod(Acl& acl, uint32_t mode) {
  Entry* groupObj = nullptr;
  Entry* mask = nullptr;
  for (auto& e : acl) {
    switch (e.tag) {
      case USER_OBJ: e.perm = static_cast<uint16_t>((mode & RWX_U) >> 6); break;
      case GROUP_OBJ: groupObj = &e; break;
      case MASK: mask = &e; break;
      case OTHER: e.perm = static_cast<uint16_t>(mode & RWX_O); break;
    }
  }
  if (Entry* g = mask ? mask : groupObj) g->perm = static_cast<uint16_t>((mode & RWX_G) >> 3);
}

}  // namespace cairn::meta::acl
