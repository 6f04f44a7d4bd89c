#include "rpc/volumes.h"

#include <sys/stat.h>

#include <cerrno>
#include <ctime>

#include "rpc/meta_client.h"

namespace cairn {

namespace {
proto::MetaRequest::Op::Builder opOf(kj::Own<capnp::MallocMessageBuilder>& m) {
  return m->getRoot<proto::MetaRequest>().getOp();
}
proto::MetaReply::Reader replyOf(kj::Own<capnp::MallocMessageBuilder>& m) {
  return m->getRoot<proto::MetaReply>().asReader();
}
void fill(VolumeInfo& v, proto::QuotaInfo::Reader q) {
  v.hasQuota = true;
  v.limitBytes = q.getLimitBytes();
  v.limitInodes = q.getLimitInodes();
  v.usedBytes = q.getUsedBytes();
  v.usedInodes = q.getUsedInodes();
}
}  // namespace

bool Volumes::validName(const std::string& name) {
  if (name.empty() || name.size() > MAX_NAME || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

int Volumes::lookup(uint64_t parent, const std::string& name, uint64_t& ino, uint32_t* mode) {
  auto m = newMetaRequest();
  auto l = opOf(m).initLookup();
  l.setParent(parent);
  l.setName(name);
  auto r = call_(kj::mv(m));
  auto reply = replyOf(r);
  if (reply.getErr() != 0) return reply.getErr();
  ino = reply.getAttr().getIno();
  if (mode) *mode = reply.getAttr().getMode();
  return 0;
}

int Volumes::resolve(const std::string& path, uint64_t& ino) {
  ino = 1;
  size_t at = 0;
  while (at < path.size()) {
    size_t slash = path.find('/', at);
    std::string part = path.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
    at = slash == std::string::npos ? path.size() : slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return EINVAL;
    if (int e = lookup(ino, part, ino)) return e;
  }
  return 0;
}

int Volumes::mkdir(uint64_t parent, const std::string& name, uint64_t& ino) {
  auto m = newMetaRequest();
  auto k = opOf(m).initMknod();
  k.setParent(parent);
  k.setName(name);
  k.setMode(S_IFDIR | 0777);
  k.setExclusive(true);
  auto r = call_(kj::mv(m));
  auto reply = replyOf(r);
  if (reply.getErr() != 0) return reply.getErr();
  ino = reply.getAttr().getIno();
  return 0;
}

int Volumes::volumesDir(bool create, uint64_t& ino) {
  int e = lookup(1, DIR, ino);
  if (e == ENOENT && create) {
    e = mkdir(1, DIR, ino);
    if (e == EEXIST) e = lookup(1, DIR, ino);  // made by someone else meanwhile
  }
  return e;
}

int Volumes::quotaGet(uint64_t ino, VolumeInfo& out) {
  auto m = newMetaRequest();
  opOf(m).setQuotaGet(ino);
  auto r = call_(kj::mv(m));
  auto reply = replyOf(r);
  out.ino = ino;
  if (reply.getErr() != 0) return reply.getErr();
  fill(out, reply.getQuota());
  return 0;
}

int Volumes::quotaSet(uint64_t ino, uint64_t bytes, uint64_t inodes, VolumeInfo* out) {
  auto m = newMetaRequest();
  auto q = opOf(m).initQuotaSet();
  q.setIno(ino);
  q.setLimitBytes(bytes);
  q.setLimitInodes(inodes);
  auto r = call_(kj::mv(m));
  auto reply = replyOf(r);
  if (reply.getErr() != 0) return reply.getErr();
  if (out) {
    out->ino = ino;
    if (reply.isQuota()) fill(*out, reply.getQuota());
  }
  return 0;
}

int Volumes::create(const std::string& name, uint64_t bytes, VolumeInfo& out, uint64_t inodes) {
  if (!validName(name) || bytes == 0) return EINVAL;
  uint64_t dir;
  if (int e = volumesDir(true, dir)) return e;
  uint64_t ino;
  int e = mkdir(dir, name, ino);
  if (e == EEXIST) {
    // Created before (a retry, or an earlier attempt cut short): the same capacity is the same
    // volume; a directory without a quota yet gets it now.
    uint32_t mode = 0;
    if (int e2 = lookup(dir, name, ino, &mode)) return e2;
    if (!S_ISDIR(mode)) return EEXIST;
    VolumeInfo cur;
    int q = quotaGet(ino, cur);
    if (q == 0) {
      if (cur.limitBytes != bytes || cur.limitInodes != inodes) return EEXIST;
      out = cur;
      out.name = name;
      return 0;
    }
    if (q != ENODATA) return q;
  } else if (e != 0) {
    return e;
  }
  out.name = name;
  return quotaSet(ino, bytes, inodes, &out);
}

int Volumes::get(const std::string& name, VolumeInfo& out) {
  if (!validName(name)) return EINVAL;
  uint64_t dir, ino;
  uint32_t mode = 0;
  if (int e = volumesDir(false, dir)) return e;
  if (int e = lookup(dir, name, ino, &mode)) return e;
  if (!S_ISDIR(mode)) return ENOTDIR;
  out = VolumeInfo{};
  out.name = name;
  int e = quotaGet(ino, out);
  return e == ENODATA ? 0 : e;  // a directory without a quota (provisioned by hand) is a volume
}

int Volumes::resize(const std::string& name, uint64_t bytes, VolumeInfo& out) {
  if (bytes == 0) return EINVAL;
  if (int e = get(name, out)) return e;
  if (out.hasQuota && out.limitBytes == bytes) return 0;
  return quotaSet(out.ino, bytes, out.limitInodes, &out);
}

int Volumes::list(std::vector<VolumeInfo>& out) {
  uint64_t dir;
  int e = volumesDir(false, dir);
  if (e == ENOENT) return 0;
  if (e != 0) return e;
  uint64_t after = 0;
  for (;;) {
    auto m = newMetaRequest();
    auto rd = opOf(m).initReaddir();
    rd.setIno(dir);
    rd.setAfter(after);
    rd.setMaxEntries(512);
    auto r = call_(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return reply.getErr();
    auto entries = reply.getEntries();
    if (entries.size() == 0) return 0;
    for (auto ent : entries) {
      after = ent.getCookie();
      std::string name = ent.getName();
      if (!S_ISDIR(ent.getMode()) || !validName(name)) continue;
      VolumeInfo v;
      v.name = name;
      int q = quotaGet(ent.getIno(), v);
      if (q != 0 && q != ENODATA) return q;
      out.push_back(v);
    }
  }
}

int Volumes::unlinkName(uint64_t parent, const std::string& name, bool dir) {
  auto m = newMetaRequest();
  auto n = dir ? opOf(m).initRmdir() : opOf(m).initUnlink();
  n.setParent(parent);
  n.setName(name);
  auto r = call_(kj::mv(m));
  int e = replyOf(r).getErr();
  return e == ENOENT ? 0 : e;
}

int Volumes::removeTree(uint64_t dir) {
  // Depth first; each directory is read from the start again after its entries went, so the
  // walk holds one batch of names per level, never the whole tree.
  for (;;) {
    auto m = newMetaRequest();
    auto rd = opOf(m).initReaddir();
    rd.setIno(dir);
    rd.setAfter(0);
    rd.setMaxEntries(512);
    auto r = call_(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return reply.getErr();
    if (reply.getEntries().size() == 0) return 0;
    for (auto ent : reply.getEntries()) {
      std::string name = ent.getName();
      if (name == "." || name == "..") continue;
      bool isDir = S_ISDIR(ent.getMode());
      if (isDir) {
        if (int e = removeTree(ent.getIno())) return e;
      }
      if (int e = unlinkName(dir, name, isDir)) return e;
    }
  }
}

int Volumes::remove(const std::string& name, bool toTrash) {
  if (!validName(name)) return EINVAL;
  uint64_t dir, ino;
  uint32_t mode = 0;
  int e = volumesDir(false, dir);
  if (e == ENOENT) return 0;
  if (e != 0) return e;
  e = lookup(dir, name, ino, &mode);
  if (e == ENOENT) return 0;
  if (e != 0) return e;
  if (!S_ISDIR(mode)) return ENOTDIR;
  if (toTrash) {
    uint64_t trash;
    int t = lookup(dir, TRASH, trash);
    if (t == ENOENT) t = mkdir(dir, TRASH, trash);
    if (t == EEXIST) t = lookup(dir, TRASH, trash);
    if (t != 0) return t;
    auto m = newMetaRequest();
    auto rn = opOf(m).initRename();
    rn.setParent(dir);
    rn.setName(name);
    rn.setNewParent(trash);
    rn.setNewName(name + "-" + std::to_string(time(nullptr)));
    auto r = call_(kj::mv(m));
    int err = replyOf(r).getErr();
    return err == ENOENT ? 0 : err;
  }
  if (int err = removeTree(ino)) return err;
  return unlinkName(dir, name, true);
}

}  // namespace cairn
