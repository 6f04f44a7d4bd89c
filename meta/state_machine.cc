#include "meta/state_machine.h"

#include "meta/acl.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>
#include <cerrno>
#include <cstring>

namespace cairn::meta {

namespace {

constexpr size_t MAX_XATTR_NAME = 255;
constexpr size_t MAX_XATTR_VALUE = 64 * 1024;
constexpr size_t MAX_SYMLINK = 4095;
// A client retries a request for at most 60 s, each attempt bounded by 30 s (rpc/meta_client):
// three minutes keep every retry's first answer with room to spare. Longer costs every commit:
// the reply memory's trees grow deeper (10-thread creates here: 11,500/s on a fresh store,
// 9,000/s after 120,000 remembered replies).
constexpr int64_t REPLY_TTL_NS = 3ll * 60 * 1000000000;
constexpr int64_t REPLY_PRUNE_EVERY_NS = 60ll * 1000000000;
constexpr unsigned RENAME_NOREPLACE_FLAG = 1;
constexpr unsigned RENAME_EXCHANGE_FLAG = 2;
constexpr unsigned XATTR_CREATE_FLAG = 1;
constexpr unsigned XATTR_REPLACE_FLAG = 2;

bool isDir(uint32_t mode) { return S_ISDIR(mode); }

}  // namespace

int checkName(std::string_view name) {
  if (name.empty()) return ENOENT;
  if (name.size() > 255) return ENAMETOOLONG;
  if (name == "." || name == "..") return EINVAL;
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return EINVAL;
  return 0;
}

void StateMachine::formatIfEmpty(const Format& format, int64_t nowNs, const std::string& clusterId) {
  Txn t(store_.env(), true);
  if (this->format(t, format, nowNs, clusterId)) t.commit();
}

bool StateMachine::format(Txn& t, const Format& format, int64_t nowNs, const std::string& clusterId) {
  if (store_.getInode(t, ROOT_INO)) return false;
  KJ_REQUIRE(format.chunkSizeBytes >= 1 << 20 && format.chunkSizeBytes % 4096 == 0,
             "chunk size must be a multiple of 4 KiB and at least 1 MiB");
  KJ_REQUIRE(format.replicas >= 1 && format.replicas <= 8, "replicas must be 1..8");
  InodeRecord root;
  root.mode = S_IFDIR | 0755;
  root.nlink = 2;
  root.atimeNs = root.mtimeNs = root.ctimeNs = nowNs;
  root.parent = ROOT_INO;
  root.nextCookie = FIRST_COOKIE;
  store_.putInode(t, ROOT_INO, root);
  store_.putCounter(t, "next_ino", ROOT_INO + 1);
  store_.putCounter(t, "next_chunk", 1);
  store_.putCounter(t, "next_server", 1);
  store_.putCounter(t, "chunk_size", format.chunkSizeBytes);
  store_.putCounter(t, "replicas", format.replicas);
  store_.putCounter(t, "inodes", 1);
  t.put(store_.counters, "cluster_id", clusterId);
  return true;
}

namespace {
// What applications change in the namespace and in files through a mount, all the time.
bool isFileChange(proto::MetaRequest::Op::Which w) {
  using W = proto::MetaRequest::Op::Which;
  switch (w) {
    case W::SETATTR:
    case W::MKNOD:
    case W::SYMLINK:
    case W::LINK:
    case W::UNLINK:
    case W::RMDIR:
    case W::RENAME:
    case W::SETXATTR:
    case W::REMOVEXATTR:
    case W::COMMIT_WRITE:
      return true;
    default:
      return false;
  }
}
}  // namespace

bool StateMachine::mayAnswerBeforeDurable(proto::MetaRequest::Reader req) {
  using W = proto::MetaRequest::Op::Which;
  auto w = req.getOp().which();
  return isFileChange(w) || w == W::CHUNK_GET || w == W::LOCK || w == W::PUNCH;
}

bool StateMachine::isMutation(proto::MetaRequest::Reader req) {
  using W = proto::MetaRequest::Op::Which;
  if (isFileChange(req.getOp().which())) return true;
  switch (req.getOp().which()) {
    case W::REGISTER_SERVER:
    case W::SET_KEY_CHECK:
    case W::FORMAT:
    case W::META_ADD:
    case W::CHUNK_FAIL:
    case W::CHUNK_REPAIR:
    case W::CHUNK_CORRUPT:
    case W::SERVER_DRAIN:
    case W::CHUNK_ORPHANS:
    case W::SET_REPLICAS:
    case W::QUOTA_SET:
    case W::FSCK_FIX:
    case W::REBALANCE:
    case W::REPAIR_PAUSE:
    case W::LOCK:
    case W::SESSION_END:
    case W::SESSION_START:
    case W::RECLAIM:
    case W::PUNCH:
    case W::OFFER_FLOOR:
    case W::ID_GAP:
      return true;
    case W::CHUNK_GET:
      return req.getOp().getChunkGet().getAllocate();
    default:
      return false;
  }
}

void StateMachine::fillAttr(uint64_t ino, const InodeRecord& r, proto::Attr::Builder a) {
  a.setIno(ino);
  a.setMode(r.mode);
  a.setUid(r.uid);
  a.setGid(r.gid);
  a.setNlink(r.nlink);
  a.setSize(r.size);
  a.setAtimeNs(r.atimeNs);
  a.setMtimeNs(r.mtimeNs);
  a.setCtimeNs(r.ctimeNs);
  a.setRdev(r.rdev);
  if (S_ISDIR(r.mode)) a.setDirCookie(r.nextCookie);
}

void StateMachine::fillChunk(Txn& t, uint64_t index, const ChunkRecord& c,
                             proto::ChunkInfo::Builder out) {
  out.setIndex(index);
  out.setId(c.id);
  out.setVersion(c.version);
  auto reps = out.initReplicas(c.servers.size());
  for (size_t i = 0; i < c.servers.size(); i++) {
    reps[i].setServer(c.servers[i]);
    if (auto s = store_.getServer(t, c.servers[i])) reps[i].setAddr(s->addr);
  }
}

void StateMachine::apply(Txn& t, proto::Command::Reader cmd, capnp::MessageBuilder& out) {
  auto req = cmd.getRequest();
  int64_t now = cmd.getTimeNs();
  applyNow_ = now;
  std::string replyKey;
  if (req.getClientId() != 0) {
    replyKey = be64(req.getClientId()) + be64(req.getSeq());
    if (auto stored = t.get(store_.replies, replyKey)) {
      // A retry: answer what the first attempt answered, change nothing.
      auto bytes = std::string_view(*stored).substr(8);
      KJ_ASSERT(bytes.size() % 8 == 0, "bad stored reply");
      auto words = kj::heapArray<capnp::word>(bytes.size() / 8);
      memcpy(words.begin(), bytes.data(), bytes.size());
      capnp::FlatArrayMessageReader msg(words);
      out.setRoot(msg.getRoot<proto::MetaReply>());
      return;
    }
  }
  auto reply = out.initRoot<proto::MetaReply>();
  applyOp(t, now, cmd, reply);
  if (!replyKey.empty()) {
    auto flat = capnp::messageToFlatArray(out);
    std::string v = be64(static_cast<uint64_t>(now));
    v.append(reinterpret_cast<const char*>(flat.begin()), flat.size() * 8);
    t.put(store_.replies, replyKey, v);
    // The client has every reply below this: forget them (they sit next to the new one).
    if (uint64_t below = req.getAckedBelow(); below > 1) {
      std::vector<std::string> acked;
      for (Cursor c(t, store_.replies, be64(req.getClientId()), ""); c.valid(); c.next()) {
        if (readBe64(c.key().substr(8)) >= below) break;
        acked.emplace_back(c.key());
      }
      for (auto& k : acked) t.del(store_.replies, k);
    }
  }
  pruneReplies(t, now);
}

void StateMachine::pruneReplies(Txn& t, int64_t now) {
  // Replies of clients that told no acknowledgement (older clients, or ones that stopped) go
  // after the reply lifetime: a scan of the (small) table once a minute, at times every replica
  // agrees on, as they come from the commands.
  int64_t last = static_cast<int64_t>(store_.getCounter(t, "replies_pruned_ns"));
  if (now - last < REPLY_PRUNE_EVERY_NS && now >= last) return;
  store_.putCounter(t, "replies_pruned_ns", static_cast<uint64_t>(now));
  std::vector<std::string> old;
  for (Cursor c(t, store_.replies, "", ""); c.valid(); c.next())
    if (static_cast<int64_t>(readBe64(c.value().substr(0, 8))) < now - REPLY_TTL_NS)
      old.emplace_back(c.key());
  for (auto& k : old) t.del(store_.replies, k);
  // The time index of earlier versions, no longer kept.
  MDB_stat st;
  if (mdb_stat(t.raw(), store_.replytime, &st) == 0 && st.ms_entries > 0)
    mdb_drop(t.raw(), store_.replytime, 0);
}

void StateMachine::applyOp(Txn& t, int64_t now, proto::Command::Reader cmd,
                           proto::MetaReply::Builder reply) {
  auto req = cmd.getRequest();
  auto op = req.getOp();
  using W = proto::MetaRequest::Op::Which;
  int err = 0;
  switch (op.which()) {
    case W::SETATTR:
      err = setattr(t, now, op.getSetattr(), reply);
      break;
    case W::MKNOD:
      err = mknod(t, now, op.getMknod(), "", reply);
      if (err == 0 && op.getMknod().getFirstChunk() && reply.hasParentAttr() &&
          S_ISREG(op.getMknod().getMode()) && cmd.getPlacement().size() > 0)
        offerChunk(t, cmd.getPlacement(), reply);
      break;
    case W::SYMLINK: {
      auto s = op.getSymlink();
      capnp::MallocMessageBuilder tmp;
      auto m = tmp.initRoot<proto::MetaRequest::MknodOp>();
      m.setParent(s.getParent());
      m.setName(s.getName());
      m.setMode(S_IFLNK | 0777);
      m.setUid(s.getUid());
      m.setGid(s.getGid());
      m.setExclusive(true);
      auto target = std::string(s.getTarget().cStr(), s.getTarget().size());
      if (target.empty()) {
        err = ENOENT;
      } else if (target.size() > MAX_SYMLINK) {
        err = ENAMETOOLONG;
      } else {
        err = mknod(t, now, m.asReader(), target, reply);
      }
      break;
    }
    case W::LINK:
      err = link(t, now, op.getLink(), reply);
      break;
    case W::UNLINK:
      err = unlinkEntry(t, now, op.getUnlink().getParent(),
                        std::string_view(op.getUnlink().getName().cStr()), false, reply);
      break;
    case W::RMDIR:
      err = unlinkEntry(t, now, op.getRmdir().getParent(),
                        std::string_view(op.getRmdir().getName().cStr()), true, reply);
      break;
    case W::RENAME:
      err = rename(t, now, op.getRename());
      break;
    case W::SETXATTR:
    case W::REMOVEXATTR:
      err = xattrChange(t, now, req);
      break;
    case W::CHUNK_GET:
      err = chunkAllocate(t, cmd, reply);
      break;
    case W::COMMIT_WRITE:
      err = commitWrite(t, now, op.getCommitWrite(), reply);
      break;
    case W::REGISTER_SERVER:
      err = registerServer(t, op.getRegisterServer(), reply);
      break;
    case W::HEARTBEAT:
      heartbeatGarbage(t, op.getHeartbeat().getServer(), reply, now, cmd.getGcGraceNs());
      break;
    case W::SERVER_DRAIN: {
      auto d = op.getServerDrain();
      auto rec = store_.getServer(t, d.getServer());
      if (!rec) {
        err = ENOENT;
        break;
      }
      rec->draining = d.getDrain();
      store_.putServer(t, d.getServer(), *rec);
      break;
    }
    case W::QUOTA_SET:
      err = quotaSet(t, op.getQuotaSet(), reply);
      break;
    case W::FSCK_FIX:
      err = fsckFix(t, now, op.getFsckFix());
      break;
    case W::REBALANCE:
      err = rebalanceSet(t, now, op.getRebalance());
      break;
    case W::REPAIR_PAUSE:
      store_.putCounter(t, "repair_paused", op.getRepairPause() ? 1 : 0);
      break;
    case W::LOCK:
      err = lockSet(t, cmd.getRequest().getClientId(), op.getLock(), reply);
      break;
    case W::SESSION_END:
      releaseLocksOf(t, op.getSessionEnd());
      t.del(store_.sessions, be64(op.getSessionEnd()));
      break;
    case W::SESSION_START:
      sessionStart(t, op.getSessionStart());
      break;
    case W::RECLAIM:
      reclaim(t, op.getReclaim());
      break;
    case W::ID_GAP: {
      uint64_t gap = op.getIdGap();
      if (gap == 0 || gap > (uint64_t(1) << 40)) {
        err = EINVAL;
        break;
      }
      store_.putCounter(t, "next_ino", store_.getCounter(t, "next_ino") + gap);
      store_.putCounter(t, "next_chunk", store_.getCounter(t, "next_chunk") + gap);
      break;
    }
    case W::OFFER_FLOOR: {
      // Only up: offers below it can no longer be bound (see commitWrite's bind).
      uint64_t floor = std::min(op.getOfferFloor(), store_.getCounter(t, "next_chunk"));
      if (floor > store_.getCounter(t, "offer_floor")) store_.putCounter(t, "offer_floor", floor);
      break;
    }
    case W::PUNCH: {
      auto pu = op.getPunch();
      auto r = store_.getInode(t, pu.getIno());
      if (!r) {
        err = ENOENT;
        break;
      }
      if (!S_ISREG(r->mode)) {
        err = isDir(r->mode) ? EISDIR : ENODEV;
        break;
      }
      if (pu.getCount() > (1ull << 40) || pu.getFirst() > (1ull << 40)) {
        err = EINVAL;
        break;
      }
      dropChunksFrom(t, pu.getIno(), pu.getFirst(), pu.getFirst() + pu.getCount());
      r->mtimeNs = r->ctimeNs = now;
      store_.putInode(t, pu.getIno(), *r);
      fillAttr(pu.getIno(), *r, reply.initAttr());
      break;
    }
    case W::SET_REPLICAS:
      if (op.getSetReplicas() < 1 || op.getSetReplicas() > 8) {
        err = EINVAL;
        break;
      }
      store_.putCounter(t, "replicas", op.getSetReplicas());
      break;
    case W::CHUNK_ORPHANS: {
      // Copies the leader saw in a server's inventory for a whole grace period without any
      // file referring to them: checked again here, deterministically, then deleted.
      auto o = op.getChunkOrphans();
      if (!store_.getServer(t, o.getServer())) {
        err = ENOENT;
        break;
      }
      uint64_t floor = store_.getCounter(t, "offer_floor");
      uint64_t next = store_.getCounter(t, "next_chunk");
      for (auto id : o.getIds()) {
        if (id >= floor && id < next && !t.get(store_.owners, be64(id)))
          continue;  // an offer that may still be bound
        if (auto owner = t.get(store_.owners, be64(id))) {
          auto c = store_.getChunk(t, readBe64(*owner), readBe64(*owner, 8));
          if (c && c->id == id &&
              std::find(c->servers.begin(), c->servers.end(), o.getServer()) != c->servers.end())
            continue;  // a live replica after all
        }
        GarbageRecord g;
        if (auto v = t.get(store_.garbage, be64(id))) g = Store::decodeGarbage(*v);
        if (std::find(g.servers.begin(), g.servers.end(), o.getServer()) != g.servers.end())
          continue;  // already due for deletion
        g.servers.push_back(o.getServer());
        g.sinceNs = 0;  // its grace period is over already
        t.put(store_.garbage, be64(id), Store::encodeGarbage(g));
      }
      break;
    }
    case W::FORMAT: {
      auto f = op.getFormat();
      Format fmt;
      fmt.chunkSizeBytes = f.getChunkSizeBytes();
      fmt.replicas = f.getReplicas();
      if (fmt.chunkSizeBytes < (1 << 20) || fmt.chunkSizeBytes % 4096 != 0 || fmt.replicas < 1 ||
          fmt.replicas > 8) {
        err = EINVAL;
        break;
      }
      if (!format(t, fmt, now, f.getClusterId().cStr())) {
        err = EEXIST;
        break;
      }
      for (auto m : f.getMembers()) t.put(store_.members, be64(m.getId()), m.getAddr().cStr());
      break;
    }
    case W::CHUNK_FAIL: {
      // Deterministic on every replica: only the exact (id, version) the client wrote to is
      // changed; a second report of the same failure finds the new version and changes nothing.
      auto f = op.getChunkFail();
      auto c = store_.getChunk(t, f.getIno(), f.getIndex());
      if (!c) {
        err = ENOENT;
        break;
      }
      if (c->id == f.getId() && c->version == f.getVersion()) {
        uint32_t failed = 0;
        for (auto s : c->servers) {
          auto rec = store_.getServer(t, s);
          if (rec && rec->addr == f.getFailedAddr().cStr()) failed = s;
        }
        if (failed != 0 && c->servers.size() > 1) {
          std::erase(c->servers, failed);
          addGarbage(t, c->id, {failed});  // its copy is stale from now on
          c->version++;
          store_.putChunk(t, f.getIno(), f.getIndex(), *c);
        } else if (failed != 0) {
          err = EIO;  // the last replica failed: nothing to fall back on
          break;
        }
      }
      fillChunk(t, f.getIndex(), *c, reply.initChunk());
      break;
    }
    case W::CHUNK_CORRUPT: {
      // A copy failed its checksum: drop that replica (its copy becomes garbage) and bump the
      // version; the repair loop brings the chunk back to R copies from a good one.
      auto f = op.getChunkCorrupt();
      auto owner = t.get(store_.owners, be64(f.getId()));
      if (!owner) {
        err = ENOENT;
        break;
      }
      uint64_t ino = readBe64(*owner), index = readBe64(*owner, 8);
      auto c = store_.getChunk(t, ino, index);
      if (!c || c->id != f.getId()) {
        err = ENOENT;
        break;
      }
      if (f.getVersion() != 0 && f.getVersion() != c->version) {
        err = ESTALE;  // about a copy that was replaced since
        break;
      }
      uint32_t bad = f.getServer();
      if (bad == 0) {
        for (auto s : c->servers) {
          auto rec = store_.getServer(t, s);
          if (rec && rec->addr == f.getAddr().cStr()) bad = s;
        }
      }
      if (std::find(c->servers.begin(), c->servers.end(), bad) == c->servers.end()) break;
      if (c->servers.size() == 1) {
        err = EIO;  // the only copy: keep it, reads of its good blocks still work
        break;
      }
      std::erase(c->servers, bad);
      c->version++;
      addGarbage(t, c->id, {bad});
      store_.putChunk(t, ino, index, *c);
      fillChunk(t, index, *c, reply.initChunk());
      break;
    }
    case W::CHUNK_REPAIR: {
      auto f = op.getChunkRepair();
      auto c = store_.getChunk(t, f.getIno(), f.getIndex());
      if (!c) {
        err = ENOENT;
        break;
      }
      // Only the exact state the repair started from is replaced; anything newer wins.
      if (c->id != f.getId() || c->version != f.getVersion() || f.getNewVersion() <= c->version ||
          f.getServers().size() == 0) {
        err = ESTALE;
        break;
      }
      std::vector<uint32_t> servers;
      std::vector<uint32_t> pendingDelete;
      if (auto g = t.get(store_.garbage, be64(c->id))) pendingDelete = Store::decodeGarbage(*g).servers;
      for (auto s : f.getServers()) {
        if (!store_.getServer(t, s)) {
          err = EINVAL;
          break;
        }
        if (std::find(pendingDelete.begin(), pendingDelete.end(), s) != pendingDelete.end()) {
          err = ESTALE;  // that server is told to delete this chunk: it cannot hold a copy
          break;
        }
        servers.push_back(s);
      }
      if (err != 0) break;
      // Replicas dropped by the repair hold a stale copy: collect it as garbage.
      std::vector<uint32_t> dropped;
      for (auto s : c->servers)
        if (std::find(servers.begin(), servers.end(), s) == servers.end()) dropped.push_back(s);
      addGarbage(t, c->id, dropped);
      c->servers = servers;
      c->version = f.getNewVersion();
      store_.putChunk(t, f.getIno(), f.getIndex(), *c);
      fillChunk(t, f.getIndex(), *c, reply.initChunk());
      break;
    }
    case W::META_ADD: {
      auto m = op.getMetaAdd();
      if (m.getId() == 0 || m.getAddr().size() == 0 || m.getAddr().size() > 256) {
        err = EINVAL;
        break;
      }
      t.put(store_.members, be64(m.getId()), m.getAddr().cStr());
      break;
    }
    case W::SET_KEY_CHECK: {
      auto cur = t.get(store_.counters, "key_check");
      if (!cur) {
        auto v = op.getSetKeyCheck();
        if (v.size() > 8192) {
          err = EINVAL;
          break;
        }
        t.put(store_.counters, "key_check",
              std::string_view(reinterpret_cast<const char*>(v.begin()), v.size()));
        reply.setValue(v);
      } else {
        reply.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(cur->data()), cur->size()));
      }
      break;
    }
    default:
      err = EINVAL;
      break;
  }
  reply.setErr(err);
}

void StateMachine::addDentry(Txn& t, uint64_t parent, InodeRecord& parentRec,
                             std::string_view name, uint64_t ino, uint32_t mode) {
  DentryRecord d{ino, mode & S_IFMT, parentRec.nextCookie++};
  t.put(store_.dentries, be64(parent) + std::string(name), Store::encodeDentry(d));
  t.put(store_.cookies, be64(parent) + be64(d.cookie), name);
}

void StateMachine::removeDentry(Txn& t, uint64_t parent, std::string_view name,
                                const DentryRecord& d) {
  t.del(store_.dentries, be64(parent) + std::string(name));
  t.del(store_.cookies, be64(parent) + be64(d.cookie));
}

int StateMachine::mknod(Txn& t, int64_t now, proto::MetaRequest::MknodOp::Reader op,
                        const std::string& target, proto::MetaReply::Builder reply) {
  std::string_view name(op.getName().cStr(), op.getName().size());
  if (int e = checkName(name)) return e;
  auto parent = store_.getInode(t, op.getParent());
  if (!parent) return ENOENT;
  if (!isDir(parent->mode)) return ENOTDIR;
  uint32_t type = op.getMode() & S_IFMT;
  if (type != S_IFREG && type != S_IFDIR && type != S_IFLNK && type != S_IFIFO &&
      type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK)
    return EINVAL;
  if (auto existing = store_.getDentry(t, op.getParent(), name)) {
    if (op.getExclusive() || type != S_IFREG) return EEXIST;
    // Non-exclusive create of an existing file opens it.
    auto r = store_.getInode(t, existing->ino);
    KJ_ASSERT(r.has_value(), "dentry points at a missing inode", existing->ino);
    if (isDir(r->mode)) return EISDIR;
    fillAttr(existing->ino, *r, reply.initAttr());
    return 0;
  }
  uint64_t realm = childRealm(t, op.getParent(), *parent);
  if (int e = charge(t, realm, type == S_IFLNK ? int64_t(target.size()) : 0, 1)) return e;
  uint64_t ino = store_.getCounter(t, "next_ino");
  store_.putCounter(t, "next_ino", ino + 1);
  store_.putCounter(t, "inodes", store_.getCounter(t, "inodes") + 1);
  InodeRecord r;
  r.realm = realm;
  r.mode = op.getMode();
  r.uid = op.getUid();
  r.gid = op.getGid();
  if (parent->mode & S_ISGID) {
    // setgid directory: new entries take its group; new directories keep the bit.
    r.gid = parent->gid;
    if (type == S_IFDIR) r.mode |= S_ISGID;
  }
  // POSIX ACLs: the parent's default ACL shapes the new node's (then the umask does not apply).
  std::optional<acl::Acl> accessAcl, defaultAcl;
  if (type != S_IFLNK) {
    std::optional<acl::Acl> inherited;
    if (auto d = t.get(store_.xattrs, be64(op.getParent()) + acl::DEFAULT)) inherited = acl::parse(*d);
    if (inherited && !inherited->empty()) {
      if (type == S_IFDIR) defaultAcl = inherited;
      acl::Acl a = *inherited;
      if (acl::createMasq(a, r.mode)) accessAcl = std::move(a);
    } else {
      r.mode &= ~(op.getUmask() & 0777u);
    }
  }
  r.rdev = (type == S_IFCHR || type == S_IFBLK) ? op.getRdev() : 0;
  r.nlink = type == S_IFDIR ? 2 : 1;
  r.atimeNs = r.mtimeNs = r.ctimeNs = now;
  if (type == S_IFDIR) {
    r.parent = op.getParent();
    r.nextCookie = FIRST_COOKIE;
    parent->nlink++;
  }
  if (type == S_IFLNK) {
    r.size = target.size();
    t.put(store_.symlinks, be64(ino), target);
  }
  addDentry(t, op.getParent(), *parent, name, ino, r.mode);
  parent->mtimeNs = parent->ctimeNs = now;
  store_.putInode(t, op.getParent(), *parent);
  store_.putInode(t, ino, r);
  if (accessAcl) t.put(store_.xattrs, be64(ino) + acl::ACCESS, acl::encode(*accessAcl));
  if (defaultAcl) t.put(store_.xattrs, be64(ino) + acl::DEFAULT, acl::encode(*defaultAcl));
  fillAttr(ino, r, reply.initAttr());
  fillAttr(op.getParent(), *parent, reply.initParentAttr());
  return 0;
}

int StateMachine::link(Txn& t, int64_t now, proto::MetaRequest::LinkOp::Reader op,
                       proto::MetaReply::Builder reply) {
  std::string_view name(op.getNewName().cStr(), op.getNewName().size());
  if (int e = checkName(name)) return e;
  auto r = store_.getInode(t, op.getIno());
  if (!r) return ENOENT;
  if (isDir(r->mode)) return EPERM;
  if (r->nlink == 0) return ENOENT;  // unlinked, only still open (as linkat(2) on ext4)
  auto parent = store_.getInode(t, op.getNewParent());
  if (!parent) return ENOENT;
  if (!isDir(parent->mode)) return ENOTDIR;
  if (store_.getDentry(t, op.getNewParent(), name)) return EEXIST;
  if (r->nlink >= 65000) return EMLINK;
  if (childRealm(t, op.getNewParent(), *parent) != r->realm) return EXDEV;  // across quotas
  r->nlink++;
  r->ctimeNs = now;
  addDentry(t, op.getNewParent(), *parent, name, op.getIno(), r->mode);
  parent->mtimeNs = parent->ctimeNs = now;
  store_.putInode(t, op.getNewParent(), *parent);
  store_.putInode(t, op.getIno(), *r);
  fillAttr(op.getIno(), *r, reply.initAttr());
  fillAttr(op.getNewParent(), *parent, reply.initParentAttr());
  return 0;
}

uint64_t StateMachine::childRealm(Txn& t, uint64_t dirIno, const InodeRecord& dir) {
  return t.get(store_.quotas, be64(dirIno)) ? dirIno : dir.realm;
}

int StateMachine::charge(Txn& t, uint64_t realm, int64_t bytes, int64_t inodes) {
  // Growth is refused (EDQUOT) when any enclosing quota would go over its limit; shrinking
  // always succeeds. Then the change is added to every quota of the chain.
  std::vector<std::pair<uint64_t, QuotaRecord>> chain;
  for (uint64_t q = realm; q != 0 && chain.size() < 4096;) {
    auto rec = store_.getQuota(t, q);
    if (!rec) break;
    if ((bytes > 0 && rec->limitBytes != 0 && rec->usedBytes + uint64_t(bytes) > rec->limitBytes) ||
        (inodes > 0 && rec->limitInodes != 0 &&
         rec->usedInodes + uint64_t(inodes) > rec->limitInodes))
      return EDQUOT;
    chain.emplace_back(q, *rec);
    q = rec->parentRealm;
  }
  auto add = [](uint64_t v, int64_t d) {
    return d >= 0 ? v + uint64_t(d) : (v > uint64_t(-d) ? v - uint64_t(-d) : 0);
  };
  for (auto& [q, rec] : chain) {
    rec.usedBytes = add(rec.usedBytes, bytes);
    rec.usedInodes = add(rec.usedInodes, inodes);
    store_.putQuota(t, q, rec);
  }
  return 0;
}

int StateMachine::quotaSet(Txn& t, proto::MetaRequest::QuotaSetOp::Reader op,
                           proto::MetaReply::Builder reply) {
  auto dir = store_.getInode(t, op.getIno());
  if (!dir) return ENOENT;
  if (!isDir(dir->mode)) return ENOTDIR;
  uint64_t ino = op.getIno();
  auto existing = store_.getQuota(t, ino);
  bool remove = op.getLimitBytes() == 0 && op.getLimitInodes() == 0;
  if (existing && !remove) {
    existing->limitBytes = op.getLimitBytes();
    existing->limitInodes = op.getLimitInodes();
    store_.putQuota(t, ino, *existing);
    fillQuota(ino, *existing, reply.initQuota());
    return 0;
  }
  if (!existing && remove) return 0;
  // A new quota takes over the subtree from the enclosing realm, a removed one gives it back:
  // walk the subtree (not into nested quota directories, whose usage rolls up whole), retag
  // every inode and, for a new quota, add up the usage. Hard-linked files count once.
  uint64_t from = remove ? ino : dir->realm;
  uint64_t to = remove ? dir->realm : ino;
  QuotaRecord q;
  q.limitBytes = op.getLimitBytes();
  q.limitInodes = op.getLimitInodes();
  q.parentRealm = dir->realm;
  std::vector<uint64_t> stack{ino};
  std::set<uint64_t> seen;
  while (!stack.empty()) {
    uint64_t d = stack.back();
    stack.pop_back();
    std::vector<uint64_t> children;
    for (Cursor c(t, store_.dentries, be64(d), be64(d)); c.valid(); c.next()) {
      uint64_t child;
      KJ_ASSERT(c.value().size() >= 8, "bad dentry");
      memcpy(&child, c.value().data(), 8);
      children.push_back(child);
    }
    for (auto child : children) {
      auto r = store_.getInode(t, child);
      if (!r || r->realm != from) continue;
      if (r->nlink > 1 && !isDir(r->mode) && !seen.insert(child).second) continue;
      r->realm = to;
      store_.putInode(t, child, *r);
      q.usedInodes++;
      if (!isDir(r->mode)) q.usedBytes += r->size;
      if (!isDir(r->mode)) continue;
      if (auto nested = store_.getQuota(t, child)) {
        nested->parentRealm = to;
        store_.putQuota(t, child, *nested);
        q.usedBytes += nested->usedBytes;
        q.usedInodes += nested->usedInodes;
      } else {
        stack.push_back(child);
      }
    }
  }
  if (remove) {
    t.del(store_.quotas, be64(ino));
    return 0;
  }
  store_.putQuota(t, ino, q);
  fillQuota(ino, q, reply.initQuota());
  return 0;
}

std::optional<std::pair<uint64_t, QuotaRecord>> StateMachine::quotaAt(Txn& t, uint64_t ino) {
  if (auto q = store_.getQuota(t, ino)) return std::make_pair(ino, *q);
  auto r = store_.getInode(t, ino);
  if (!r || r->realm == 0) return std::nullopt;
  if (auto q = store_.getQuota(t, r->realm)) return std::make_pair(r->realm, *q);
  return std::nullopt;
}

void StateMachine::fillQuota(uint64_t ino, const QuotaRecord& q, proto::QuotaInfo::Builder out) {
  out.setIno(ino);
  out.setLimitBytes(q.limitBytes);
  out.setLimitInodes(q.limitInodes);
  out.setUsedBytes(q.usedBytes);
  out.setUsedInodes(q.usedInodes);
}

int StateMachine::fsckFix(Txn& t, int64_t now, proto::MetaRequest::FsckFixOp::Reader op) {
  // Each repair is checked again against the current state: cairn fsck found it in a copy of
  // the store that may be older than this command, so anything that changed since wins.
  using K = proto::MetaRequest::FsckFixKind;
  switch (op.getKind()) {
    case K::DROP_ENTRY: {
      std::string_view name(op.getName().cStr(), op.getName().size());
      auto d = store_.getDentry(t, op.getParent(), name);
      if (!d) return ENOENT;
      if (store_.getInode(t, d->ino)) return ESTALE;  // its inode exists: not dangling
      removeDentry(t, op.getParent(), name, *d);
      if (auto parent = store_.getInode(t, op.getParent())) {
        parent->mtimeNs = parent->ctimeNs = now;
        store_.putInode(t, op.getParent(), *parent);
      }
      return 0;
    }
    case K::SET_NLINK: {
      auto r = store_.getInode(t, op.getIno());
      if (!r) return ENOENT;
      if (r->nlink != op.getExpect() || op.getValue() == 0 || op.getValue() > 65000)
        return ESTALE;
      r->nlink = static_cast<uint32_t>(op.getValue());
      r->ctimeNs = now;
      store_.putInode(t, op.getIno(), *r);
      return 0;
    }
    case K::SET_PARENT: {
      auto r = store_.getInode(t, op.getIno());
      if (!r || !isDir(r->mode)) return ENOENT;
      if (r->parent != op.getExpect()) return ESTALE;
      auto p = store_.getInode(t, op.getValue());
      if (!p || !isDir(p->mode)) return EINVAL;
      r->parent = op.getValue();
      store_.putInode(t, op.getIno(), *r);
      return 0;
    }
    case K::SET_INODE_COUNT: {
      if (store_.getCounter(t, "inodes") != op.getExpect()) return ESTALE;
      // Counted again here: inodes made or removed since the copy count too.
      uint64_t n = 0;
      for (Cursor c(t, store_.inodes, "", ""); c.valid(); c.next()) n++;
      store_.putCounter(t, "inodes", n);
      return 0;
    }
    case K::RELINK: {
      uint64_t ino = op.getIno();
      auto r = store_.getInode(t, ino);
      if (!r || ino == ROOT_INO) return ENOENT;
      auto root = store_.getInode(t, ROOT_INO);
      if (!root) return ENOENT;
      uint64_t lf;
      if (auto d = store_.getDentry(t, ROOT_INO, LOST_FOUND)) {
        lf = d->ino;
      } else {
        // /lost+found, as e2fsck makes it: a directory only root can enter.
        lf = store_.getCounter(t, "next_ino");
        store_.putCounter(t, "next_ino", lf + 1);
        store_.putCounter(t, "inodes", store_.getCounter(t, "inodes") + 1);
        InodeRecord dir;
        dir.mode = S_IFDIR | 0700;
        dir.nlink = 2;
        dir.parent = ROOT_INO;
        dir.nextCookie = FIRST_COOKIE;
        dir.realm = childRealm(t, ROOT_INO, *root);
        dir.atimeNs = dir.mtimeNs = dir.ctimeNs = now;
        root->nlink++;
        addDentry(t, ROOT_INO, *root, LOST_FOUND, lf, dir.mode);
        root->mtimeNs = root->ctimeNs = now;
        store_.putInode(t, ROOT_INO, *root);
        store_.putInode(t, lf, dir);
      }
      auto dir = store_.getInode(t, lf);
      if (!dir || !isDir(dir->mode) || lf == ino) return ENOTDIR;
      std::string name = "#" + std::to_string(ino);
      if (store_.getDentry(t, lf, name)) return EEXIST;
      if (isDir(r->mode)) {
        r->parent = lf;
        dir->nlink++;
      } else if (r->nlink == 0) {
        r->nlink = 1;
      }
      r->ctimeNs = now;
      addDentry(t, lf, *dir, name, ino, r->mode);
      dir->mtimeNs = dir->ctimeNs = now;
      store_.putInode(t, lf, *dir);
      store_.putInode(t, ino, *r);
      return 0;
    }
    case K::DROP_CHUNK: {
      auto c = store_.getChunk(t, op.getIno(), op.getIndex());
      if (!c || c->id != op.getId()) return ENOENT;
      auto r = store_.getInode(t, op.getIno());
      uint64_t cs = chunkSize(t);
      if (r && cs != 0 && op.getIndex() < (r->size + cs - 1) / cs) return ESTALE;  // in the file
      t.del(store_.chunks, be64(op.getIno()) + be64(op.getIndex()));
      auto owner = t.get(store_.owners, be64(c->id));
      if (owner && readBe64(*owner) == op.getIno() && readBe64(*owner, 8) == op.getIndex())
        t.del(store_.owners, be64(c->id));
      addGarbage(t, c->id, c->servers);
      return 0;
    }
  }
  return EINVAL;
}

bool StateMachine::repairsPaused(Txn& t) { return store_.getCounter(t, "repair_paused") != 0; }

StateMachine::Rebalance StateMachine::rebalance(Txn& t) {
  Rebalance r;
  r.active = store_.getCounter(t, "rebalance_active") != 0;
  r.autoOnJoin = store_.getCounter(t, "rebalance_auto") != 0;
  r.tolerance = double(store_.getCounter(t, "rebalance_tolerance_ppm", 50000)) / 1e6;
  r.startedNs = static_cast<int64_t>(store_.getCounter(t, "rebalance_started"));
  return r;
}

int StateMachine::rebalanceSet(Txn& t, int64_t now, proto::MetaRequest::RebalanceOp::Reader op) {
  double tol = op.getTolerance();
  bool validTol = tol > 0.0 && tol < 1.0;
  if (op.getSetAuto()) {
    // Only the automatic setting (and the tolerance it will use) changes.
    store_.putCounter(t, "rebalance_auto", op.getAuto() ? 1 : 0);
    if (validTol) store_.putCounter(t, "rebalance_tolerance_ppm", static_cast<uint64_t>(tol * 1e6));
    return 0;
  }
  if (!op.getActive()) {
    store_.putCounter(t, "rebalance_active", 0);
    return 0;
  }
  if (!validTol) return EINVAL;
  store_.putCounter(t, "rebalance_tolerance_ppm", static_cast<uint64_t>(tol * 1e6));
  if (store_.getCounter(t, "rebalance_active") == 0) {
    store_.putCounter(t, "rebalance_active", 1);
    store_.putCounter(t, "rebalance_started", uint64_t(now));
  }
  return 0;
}

void StateMachine::addGarbage(Txn& t, uint64_t chunkId, const std::vector<uint32_t>& servers) {
  if (servers.empty()) return;
  GarbageRecord g;
  if (auto v = t.get(store_.garbage, be64(chunkId))) g = Store::decodeGarbage(*v);
  for (auto s : servers)
    if (std::find(g.servers.begin(), g.servers.end(), s) == g.servers.end()) g.servers.push_back(s);
  g.sinceNs = applyNow_;
  t.put(store_.garbage, be64(chunkId), Store::encodeGarbage(g));
}

void StateMachine::dropChunksFrom(Txn& t, uint64_t ino, uint64_t firstIndex, uint64_t endIndex) {
  std::vector<std::pair<std::string, ChunkRecord>> drop;
  for (Cursor c(t, store_.chunks, be64(ino), be64(ino) + be64(firstIndex)); c.valid(); c.next()) {
    if (readBe64(c.key(), 8) >= endIndex) break;
    drop.emplace_back(std::string(c.key()), Store::decodeChunk(c.value()));
  }
  for (auto& [key, rec] : drop) {
    t.del(store_.chunks, key);
    t.del(store_.owners, be64(rec.id));
    addGarbage(t, rec.id, rec.servers);
  }
}

void StateMachine::dropInode(Txn& t, uint64_t ino, const InodeRecord& r) {
  t.del(store_.locks, be64(ino));  // locks go with the file
  // A regular file without links was given back to its quota when its last name went.
  if (!(S_ISREG(r.mode) && r.nlink == 0)) charge(t, r.realm, isDir(r.mode) ? 0 : -int64_t(r.size), -1);
  t.del(store_.quotas, be64(ino));  // a directory with a quota is empty when it goes
  dropChunksFrom(t, ino, 0);
  std::vector<std::string> keys;
  for (Cursor c(t, store_.xattrs, be64(ino), ""); c.valid(); c.next()) keys.emplace_back(c.key());
  for (auto& k : keys) t.del(store_.xattrs, k);
  t.del(store_.symlinks, be64(ino));
  t.del(store_.inodes, be64(ino));
  store_.putCounter(t, "inodes", store_.getCounter(t, "inodes") - 1);
}

int StateMachine::unlinkEntry(Txn& t, int64_t now, uint64_t parentIno, std::string_view name,
                              bool dir, proto::MetaReply::Builder reply) {
  if (int e = checkName(name)) return e;
  auto parent = store_.getInode(t, parentIno);
  if (!parent) return ENOENT;
  if (!isDir(parent->mode)) return ENOTDIR;
  auto d = store_.getDentry(t, parentIno, name);
  if (!d) return ENOENT;
  auto r = store_.getInode(t, d->ino);
  KJ_ASSERT(r.has_value(), "dentry points at a missing inode", d->ino);
  if (dir) {
    if (!isDir(r->mode)) return ENOTDIR;
    if (Cursor(t, store_.cookies, be64(d->ino), "").valid()) return ENOTEMPTY;
  } else if (isDir(r->mode)) {
    return EISDIR;
  }
  removeDentry(t, parentIno, name, *d);
  parent->mtimeNs = parent->ctimeNs = now;
  if (dir) {
    parent->nlink--;
    dropInode(t, d->ino, *r);
  } else {
    linkGone(t, now, d->ino, *r);
  }
  store_.putInode(t, parentIno, *parent);
  fillAttr(parentIno, *parent, reply.initParentAttr());
  return 0;
}

int StateMachine::rename(Txn& t, int64_t now, proto::MetaRequest::RenameOp::Reader op) {
  std::string_view name(op.getName().cStr(), op.getName().size());
  std::string_view newName(op.getNewName().cStr(), op.getNewName().size());
  if (int e = checkName(name)) return e;
  if (int e = checkName(newName)) return e;
  uint32_t flags = op.getFlags();
  if (flags & ~(RENAME_NOREPLACE_FLAG | RENAME_EXCHANGE_FLAG)) return EINVAL;
  if ((flags & RENAME_NOREPLACE_FLAG) && (flags & RENAME_EXCHANGE_FLAG)) return EINVAL;
  uint64_t srcParentIno = op.getParent(), dstParentIno = op.getNewParent();
  bool sameParent = srcParentIno == dstParentIno;
  auto srcParent = store_.getInode(t, srcParentIno);
  auto dstParent = sameParent ? srcParent : store_.getInode(t, dstParentIno);
  if (!srcParent || !dstParent) return ENOENT;
  if (!isDir(srcParent->mode) || !isDir(dstParent->mode)) return ENOTDIR;
  auto src = store_.getDentry(t, srcParentIno, name);
  if (!src) return ENOENT;
  auto dst = store_.getDentry(t, dstParentIno, newName);
  bool srcIsDir = isDir(src->mode);
  // With one parent, both names point at the same record.
  InodeRecord& sp = *srcParent;
  InodeRecord& dp = sameParent ? *srcParent : *dstParent;
  // Entries never move between quotas (like CephFS): mv falls back to copy and delete.
  if (!sameParent && childRealm(t, srcParentIno, sp) != childRealm(t, dstParentIno, dp))
    return EXDEV;

  // The loop rule: a directory cannot move below itself.
  auto isAncestor = [&](uint64_t dirIno, uint64_t of) {
    uint64_t cur = of;
    for (int depth = 0; depth < 4096; depth++) {
      if (cur == dirIno) return true;
      if (cur == ROOT_INO) return false;
      auto r = store_.getInode(t, cur);
      if (!r) return false;
      cur = r->parent;
    }
    return true;  // deeper than any sane tree: refuse
  };

  if (flags & RENAME_EXCHANGE_FLAG) {
    if (!dst) return ENOENT;
    bool dstIsDir = isDir(dst->mode);
    if (src->ino == dst->ino) return 0;
    if (srcIsDir && isAncestor(src->ino, dstParentIno)) return EINVAL;
    if (dstIsDir && isAncestor(dst->ino, srcParentIno)) return EINVAL;
    // Swap the targets of the two names; each name keeps its cookie.
    DentryRecord a = *src, b = *dst;
    t.put(store_.dentries, be64(srcParentIno) + std::string(name),
          Store::encodeDentry(DentryRecord{b.ino, b.mode, a.cookie}));
    t.put(store_.dentries, be64(dstParentIno) + std::string(newName),
          Store::encodeDentry(DentryRecord{a.ino, a.mode, b.cookie}));
    if (!sameParent) {
      if (srcIsDir) {
        auto r = store_.getInode(t, a.ino);
        r->parent = dstParentIno;
        store_.putInode(t, a.ino, *r);
      }
      if (dstIsDir) {
        auto r = store_.getInode(t, b.ino);
        r->parent = srcParentIno;
        store_.putInode(t, b.ino, *r);
      }
      if (srcIsDir && !dstIsDir) {
        sp.nlink--;
        dp.nlink++;
      } else if (!srcIsDir && dstIsDir) {
        sp.nlink++;
        dp.nlink--;
      }
    }
    for (auto ino : {a.ino, b.ino}) {
      auto r = store_.getInode(t, ino);
      r->ctimeNs = now;
      store_.putInode(t, ino, *r);
    }
  } else {
    if (srcIsDir && isAncestor(src->ino, dstParentIno)) return EINVAL;
    if (dst) {
      if (flags & RENAME_NOREPLACE_FLAG) return EEXIST;
      if (dst->ino == src->ino) return 0;  // two names of one file: POSIX says do nothing
      bool dstIsDir = isDir(dst->mode);
      if (srcIsDir && !dstIsDir) return ENOTDIR;
      if (!srcIsDir && dstIsDir) return EISDIR;
      if (dstIsDir && Cursor(t, store_.cookies, be64(dst->ino), "").valid()) return ENOTEMPTY;
      // Replace: the destination name goes, and with it one link of its inode.
      removeDentry(t, dstParentIno, newName, *dst);
      auto dr = store_.getInode(t, dst->ino);
      KJ_ASSERT(dr.has_value());
      if (dstIsDir) {
        dp.nlink--;
        dropInode(t, dst->ino, *dr);
      } else {
        linkGone(t, now, dst->ino, *dr);
      }
    }
    removeDentry(t, srcParentIno, name, *src);
    addDentry(t, dstParentIno, dp, newName, src->ino, src->mode);
    auto r = store_.getInode(t, src->ino);
    KJ_ASSERT(r.has_value());
    r->ctimeNs = now;
    if (srcIsDir && !sameParent) {
      r->parent = dstParentIno;
      sp.nlink--;
      dp.nlink++;
    }
    store_.putInode(t, src->ino, *r);
  }
  sp.mtimeNs = sp.ctimeNs = now;
  dp.mtimeNs = dp.ctimeNs = now;
  store_.putInode(t, srcParentIno, sp);
  if (!sameParent) store_.putInode(t, dstParentIno, dp);
  return 0;
}

int StateMachine::setattr(Txn& t, int64_t now, proto::MetaRequest::SetAttrOp::Reader op,
                          proto::MetaReply::Builder reply) {
  auto a = op.getAttr();
  if (op.hasCommit()) {
    // commitWrite validates before it changes anything, and what follows cannot fail without
    // a size change: the command is all or nothing.
    if (a.getSetSize() || op.getCommit().getIno() != op.getIno()) return EINVAL;
    if (int e = commitWrite(t, now, op.getCommit(), reply)) return e;
  }
  auto r = store_.getInode(t, op.getIno());
  if (!r) return ENOENT;
  if (a.getSetMode()) {
    r->mode = (r->mode & S_IFMT) | (a.getMode() & 07777);
    // chmod rewrites an access ACL's owner, mask (or group) and other entries.
    std::string key = be64(op.getIno()) + acl::ACCESS;
    if (auto v = t.get(store_.xattrs, key)) {
      if (auto acl = acl::parse(*v)) {
        acl::chmod(*acl, r->mode);
        t.put(store_.xattrs, key, acl::encode(*acl));
      }
    }
  }
  if (a.getSetUid()) r->uid = a.getUid();
  if (a.getSetGid()) r->gid = a.getGid();
  if ((a.getSetUid() || a.getSetGid()) && !isDir(r->mode) && !a.getSetMode()) {
    // chown clears set-user-ID, and set-group-ID when group-executable.
    r->mode &= ~S_ISUID;
    if (r->mode & S_IXGRP) r->mode &= ~S_ISGID;
  }
  if (a.getSetSize()) {
    if (isDir(r->mode)) return EISDIR;
    if (!S_ISREG(r->mode)) return EINVAL;
    uint64_t size = a.getSize();
    if (size > (1ull << 50)) return EFBIG;
    if (r->nlink > 0)  // an unlinked file counts against no quota
      if (int e = charge(t, r->realm, int64_t(size) - int64_t(r->size), 0)) return e;
    if (size < r->size) {
      uint64_t cs = chunkSize(t);
      dropChunksFrom(t, op.getIno(), (size + cs - 1) / cs);
    }
    r->size = size;
    r->mtimeNs = now;
  }
  if (a.getSetAtime()) r->atimeNs = a.getAtimeNow() ? now : a.getAtimeNs();
  if (a.getSetMtime()) r->mtimeNs = a.getMtimeNow() ? now : a.getMtimeNs();
  r->ctimeNs = a.getSetCtime() ? a.getCtimeNs() : now;
  store_.putInode(t, op.getIno(), *r);
  fillAttr(op.getIno(), *r, reply.initAttr());
  return 0;
}

int StateMachine::xattrChange(Txn& t, int64_t now, proto::MetaRequest::Reader req) {
  bool set = req.getOp().isSetxattr();
  auto op = set ? req.getOp().getSetxattr() : req.getOp().getRemovexattr();
  std::string name(op.getName().cStr(), op.getName().size());
  if (name.empty()) return EINVAL;
  if (name.size() > MAX_XATTR_NAME) return ERANGE;
  auto r = store_.getInode(t, op.getIno());
  if (!r) return ENOENT;
  std::string key = be64(op.getIno()) + name;
  bool exists = t.get(store_.xattrs, key).has_value();
  if (set) {
    auto v = op.getValue();
    if (v.size() > MAX_XATTR_VALUE) return E2BIG;
    if ((op.getFlags() & XATTR_CREATE_FLAG) && exists) return EEXIST;
    if ((op.getFlags() & XATTR_REPLACE_FLAG) && !exists) return ENODATA;
    std::string_view value(reinterpret_cast<const char*>(v.begin()), v.size());
    if (name == acl::ACCESS || name == acl::DEFAULT) {
      auto a = acl::parse(value);
      if (!a) return EINVAL;
      if (S_ISLNK(r->mode)) return EOPNOTSUPP;
      if (name == acl::DEFAULT) {
        if (!isDir(r->mode)) return EACCES;
        if (a->empty()) {
          t.del(store_.xattrs, key);
        } else {
          t.put(store_.xattrs, key, acl::encode(*a));
        }
      } else {
        // The mode carries what the ACL says of owner, group (mask) and other; an ACL that says
        // no more is not kept (as on ext4).
        if (a->empty()) return EINVAL;
        if (acl::applyToMode(*a, r->mode)) {
          t.put(store_.xattrs, key, acl::encode(*a));
        } else {
          t.del(store_.xattrs, key);
        }
      }
    } else {
      t.put(store_.xattrs, key, value);
    }
  } else {
    if (!exists) return ENODATA;
    t.del(store_.xattrs, key);
  }
  r->ctimeNs = now;
  store_.putInode(t, op.getIno(), *r);
  return 0;
}

int StateMachine::chunkAllocate(Txn& t, proto::Command::Reader cmd,
                                proto::MetaReply::Builder reply) {
  auto op = cmd.getRequest().getOp().getChunkGet();
  auto r = store_.getInode(t, op.getIno());
  if (!r) return ENOENT;
  if (!S_ISREG(r->mode)) return EINVAL;
  if (auto c = store_.getChunk(t, op.getIno(), op.getIndex())) {
    fillChunk(t, op.getIndex(), *c, reply.initChunk());
    return 0;
  }
  auto placement = cmd.getPlacement();
  if (placement.size() == 0) return ENOSPC;
  ChunkRecord c;
  c.id = store_.getCounter(t, "next_chunk");
  store_.putCounter(t, "next_chunk", c.id + 1);
  c.version = 1;
  for (auto s : placement) {
    KJ_ASSERT(store_.getServer(t, s).has_value(), "placement names an unknown server", s);
    c.servers.push_back(s);
  }
  store_.putChunk(t, op.getIno(), op.getIndex(), c);
  fillChunk(t, op.getIndex(), c, reply.initChunk());
  return 0;
}

void StateMachine::offerChunk(Txn& t, capnp::List<uint32_t>::Reader placement,
                              proto::MetaReply::Builder reply) {
  // An id and the leader's placement for the new file's first chunk, recorded nowhere but in
  // the id counter: the creator writes the chunk, and its commit records it (bind). A file
  // that is never written costs no chunk record, and one whose creator dies before it commits
  // leaves copies that no file names (fsck: chunk-extra).
  ChunkRecord c;
  c.id = store_.getCounter(t, "next_chunk");
  store_.putCounter(t, "next_chunk", c.id + 1);
  c.version = 1;
  for (auto s : placement)
    if (store_.getServer(t, s)) c.servers.push_back(s);
  if (c.servers.empty()) return;
  fillChunk(t, 0, c, reply.initOfferedChunk());
}

int StateMachine::commitWrite(Txn& t, int64_t now, proto::MetaRequest::CommitWriteOp::Reader op,
                              proto::MetaReply::Builder reply) {
  auto r = store_.getInode(t, op.getIno());
  if (!r) return ENOENT;
  if (!S_ISREG(r->mode)) return EINVAL;
  if (op.getSize() > (1ull << 50)) return EFBIG;
  // A chunk offered at create (see mknod): checked here, recorded once nothing can fail.
  std::optional<ChunkRecord> bind;
  if (op.hasBind()) {
    auto b = op.getBind();
    if (b.getIndex() != 0 || b.getVersion() != 1 || b.getId() == 0 ||
        b.getId() >= store_.getCounter(t, "next_chunk") || b.getReplicas().size() == 0 ||
        b.getReplicas().size() > 8)
      return EINVAL;
    // Offered too long ago: its copies may be garbage by now. The client writes its blocks
    // into a chunk allocated the usual way instead.
    if (b.getId() < store_.getCounter(t, "offer_floor")) return ESTALE;
    if (auto there = store_.getChunk(t, op.getIno(), 0)) {
      if (there->id != b.getId()) {
        // Another writer's chunk got there first: the client moves its blocks into that one.
        fillChunk(t, 0, *there, reply.initBoundChunk());
        return EEXIST;
      }
      // Already recorded (a retry): nothing to add.
    } else {
      if (t.get(store_.owners, be64(b.getId()))) return EINVAL;  // the id is someone else's
      ChunkRecord c;
      c.id = b.getId();
      c.version = 1;
      for (auto rep : b.getReplicas()) {
        if (!store_.getServer(t, rep.getServer())) return EINVAL;
        if (std::find(c.servers.begin(), c.servers.end(), rep.getServer()) != c.servers.end())
          return EINVAL;
        c.servers.push_back(rep.getServer());
      }
      bind = std::move(c);
    }
  }
  if (op.getSize() > r->size) {
    if (r->nlink > 0)
      if (int e = charge(t, r->realm, int64_t(op.getSize() - r->size), 0)) return e;
    r->size = op.getSize();
  }
  if (bind) store_.putChunk(t, op.getIno(), 0, *bind);
  r->mtimeNs = op.getMtimeNs() != 0 ? op.getMtimeNs() : now;
  r->ctimeNs = now;
  // Writing clears set-user-ID, and set-group-ID when group-executable.
  r->mode &= ~S_ISUID;
  if (r->mode & S_IXGRP) r->mode &= ~S_ISGID;
  store_.putInode(t, op.getIno(), *r);
  fillAttr(op.getIno(), *r, reply.initAttr());
  return 0;
}

int StateMachine::registerServer(Txn& t, proto::MetaRequest::RegisterOp::Reader op,
                                 proto::MetaReply::Builder reply) {
  std::string uuid(op.getUuid().cStr());
  if (uuid.empty() || uuid.size() > 64) return EINVAL;
  ServerRecord rec{uuid, op.getAddr().cStr(), op.getHost().cStr(), op.getZone().cStr(),
                   op.getRack().cStr()};
  if (rec.addr.empty() || rec.addr.size() > 256 || rec.host.size() > 256 ||
      rec.zone.size() > 256 || rec.rack.size() > 256)
    return EINVAL;
  uint32_t found = 0;
  for (Cursor c(t, store_.servers, "", ""); c.valid(); c.next()) {
    uint32_t id = static_cast<uint32_t>(readBe64(c.key()));
    auto s = store_.getServer(t, id);
    if (s && s->uuid == uuid) {
      found = id;
      rec.draining = s->draining;  // a restart does not end a drain
      break;
    }
  }
  if (found == 0) {
    found = static_cast<uint32_t>(store_.getCounter(t, "next_server"));
    store_.putCounter(t, "next_server", found + 1);
    // A new, empty server: with automatic rebalancing on, data starts moving to it.
    if (store_.getCounter(t, "rebalance_auto") != 0 && store_.getCounter(t, "rebalance_active") == 0) {
      store_.putCounter(t, "rebalance_active", 1);
      store_.putCounter(t, "rebalance_started", uint64_t(applyNow_));
    }
  }
  store_.putServer(t, found, rec);
  reply.setServerId(found);
  return 0;
}

std::vector<uint64_t> StateMachine::garbageFor(Txn& t, uint32_t server, size_t max, int64_t now,
                                               int64_t graceNs) {
  std::vector<uint64_t> out;
  for (Cursor c(t, store_.garbage, "", ""); c.valid() && out.size() < max; c.next()) {
    auto g = Store::decodeGarbage(c.value());
    if (g.sinceNs > now - graceNs) continue;  // still in its grace period
    for (auto s : g.servers) {
      if (s == server) {
        out.push_back(readBe64(c.key()));
        break;
      }
    }
  }
  return out;
}

void StateMachine::heartbeatGarbage(Txn& t, uint32_t server, proto::MetaReply::Builder reply,
                                    int64_t now, int64_t graceNs) {
  auto ids = garbageFor(t, server, 1024, now, graceNs);
  auto out = reply.initGarbage(ids.size());
  for (size_t i = 0; i < ids.size(); i++) {
    out.set(i, ids[i]);
    auto v = t.get(store_.garbage, be64(ids[i]));
    auto g = Store::decodeGarbage(*v);
    std::erase(g.servers, server);
    if (g.servers.empty()) {
      t.del(store_.garbage, be64(ids[i]));
    } else {
      t.put(store_.garbage, be64(ids[i]), Store::encodeGarbage(g));
    }
  }
}

void StateMachine::read(Txn& t, proto::MetaRequest::Reader req, proto::MetaReply::Builder reply) {
  auto op = req.getOp();
  using W = proto::MetaRequest::Op::Which;
  int err = 0;
  switch (op.which()) {
    case W::LOCK_TEST:
      err = lockTest(t, req.getClientId(), op.getLockTest(), reply);
      break;
    case W::QUOTA_GET: {
      auto q = store_.getQuota(t, op.getQuotaGet());
      if (!q) {
        err = store_.getInode(t, op.getQuotaGet()) ? ENODATA : ENOENT;
      } else {
        fillQuota(op.getQuotaGet(), *q, reply.initQuota());
      }
      break;
    }
    case W::LOOKUP: {
      auto l = op.getLookup();
      std::string_view name(l.getName().cStr(), l.getName().size());
      auto parent = store_.getInode(t, l.getParent());
      if (!parent) {
        err = ENOENT;
      } else if (!isDir(parent->mode)) {
        err = ENOTDIR;
      } else if (name.size() > 255) {
        err = ENAMETOOLONG;
      } else if (name == ".") {
        fillAttr(l.getParent(), *parent, reply.initAttr());
      } else if (name == "..") {
        auto p = store_.getInode(t, parent->parent);
        if (p) {
          fillAttr(parent->parent, *p, reply.initAttr());
        } else {
          err = ENOENT;
        }
      } else if (auto d = store_.getDentry(t, l.getParent(), name)) {
        auto r = store_.getInode(t, d->ino);
        KJ_ASSERT(r.has_value(), "dentry points at a missing inode", d->ino);
        fillAttr(d->ino, *r, reply.initAttr());
      } else {
        err = ENOENT;
      }
      break;
    }
    case W::GETATTR: {
      auto r = store_.getInode(t, op.getGetattr());
      if (r) {
        fillAttr(op.getGetattr(), *r, reply.initAttr());
      } else {
        err = ENOENT;
      }
      break;
    }
    case W::READLINK: {
      auto v = t.get(store_.symlinks, be64(op.getReadlink()));
      if (v) {
        reply.setTarget(*v);
      } else {
        err = store_.getInode(t, op.getReadlink()) ? EINVAL : ENOENT;
      }
      break;
    }
    case W::READDIR: {
      auto rd = op.getReaddir();
      auto dir = store_.getInode(t, rd.getIno());
      if (!dir) {
        err = ENOENT;
        break;
      }
      if (!isDir(dir->mode)) {
        err = ENOTDIR;
        break;
      }
      uint32_t max = std::min<uint32_t>(rd.getMaxEntries() ? rd.getMaxEntries() : 256, 4096);
      struct Found {
        std::string name;
        DentryRecord d;
      };
      std::vector<Found> found;
      std::string prefix = be64(rd.getIno());
      Cursor c(t, store_.cookies, prefix, prefix + be64(rd.getAfter() + 1));
      for (; c.valid() && found.size() < max; c.next()) {
        std::string name(c.value());
        auto d = store_.getDentry(t, rd.getIno(), name);
        KJ_ASSERT(d.has_value(), "cookie without dentry", rd.getIno(), name);
        found.push_back(Found{name, *d});
      }
      reply.setListEnd(!c.valid());
      if (rd.getAttrs()) fillAttr(rd.getIno(), *dir, reply.initParentAttr());
      auto out = reply.initEntries(found.size());
      for (size_t i = 0; i < found.size(); i++) {
        out[i].setName(found[i].name);
        out[i].setIno(found[i].d.ino);
        out[i].setMode(found[i].d.mode);
        out[i].setCookie(found[i].d.cookie);
        if (rd.getAttrs()) {
          // An entry whose inode is missing (fsck's business) goes without: the reader looks
          // it up and hears ENOENT.
          if (auto r = store_.getInode(t, found[i].d.ino)) fillAttr(found[i].d.ino, *r, out[i].initAttr());
        }
      }
      break;
    }
    case W::GETXATTR: {
      auto x = op.getGetxattr();
      if (!store_.getInode(t, x.getIno())) {
        err = ENOENT;
        break;
      }
      auto v = t.get(store_.xattrs, be64(x.getIno()) + std::string(x.getName().cStr()));
      if (v) {
        reply.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(v->data()), v->size()));
      } else {
        err = ENODATA;
      }
      break;
    }
    case W::LISTXATTR: {
      if (!store_.getInode(t, op.getListxattr())) {
        err = ENOENT;
        break;
      }
      std::vector<std::string> names;
      for (Cursor c(t, store_.xattrs, be64(op.getListxattr()), ""); c.valid(); c.next())
        names.emplace_back(c.key().substr(8));
      auto out = reply.initNames(names.size());
      for (size_t i = 0; i < names.size(); i++) out.set(i, names[i]);
      break;
    }
    case W::CHUNK_GET: {
      auto g = op.getChunkGet();
      if (auto c = store_.getChunk(t, g.getIno(), g.getIndex())) {
        fillChunk(t, g.getIndex(), *c, reply.initChunk());
      } else {
        err = ENOENT;
      }
      break;
    }
    case W::CHUNK_LIST: {
      uint64_t ino = op.getChunkList();
      if (!store_.getInode(t, ino)) {
        err = ENOENT;
        break;
      }
      std::vector<std::pair<uint64_t, ChunkRecord>> all;
      for (Cursor c(t, store_.chunks, be64(ino), ""); c.valid() && all.size() < 100000; c.next())
        all.emplace_back(readBe64(c.key(), 8), Store::decodeChunk(c.value()));
      auto out = reply.initChunks(all.size());
      for (size_t i = 0; i < all.size(); i++) fillChunk(t, all[i].first, all[i].second, out[i]);
      break;
    }
    case W::CLUSTER_INFO: {
      auto info = reply.initInfo();
      auto id = t.get(store_.counters, "cluster_id");
      info.setClusterId(id ? *id : "");
      info.setChunkSizeBytes(chunkSize(t));
      info.setBlockSizeBytes(4096);
      info.setReplicas(replicas(t));
      if (auto k = t.get(store_.counters, "key_check"))
        info.setKeyCheck(kj::arrayPtr(reinterpret_cast<const kj::byte*>(k->data()), k->size()));
      break;
    }
    default:
      err = EINVAL;
      break;
  }
  reply.setErr(err);
}

}  // namespace cairn::meta
