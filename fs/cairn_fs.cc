#include "fs/cairn_fs.h"
#include "fs/read_buffer.h"

#include <kj/debug.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

namespace cairn::fs {


namespace {

CairnFs* self(fuse_req_t req) { return static_cast<CairnFs*>(fuse_req_userdata(req)); }

kj::Own<capnp::MallocMessageBuilder> request() { return newMetaRequest(); }
proto::MetaRequest::Op::Builder opOf(kj::Own<capnp::MallocMessageBuilder>& m) {
  return m->getRoot<proto::MetaRequest>().getOp();
}
proto::MetaReply::Reader replyOf(Reply& r) { return r->getRoot<proto::MetaReply>(); }

struct timespec toTimespec(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_sec--;
    ts.tv_nsec += 1000000000;
  }
  return ts;
}

int64_t fromTimespec(const struct timespec& ts) {
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int checkName(const char* name) {
  size_t n = strlen(name);
  if (n == 0) return ENOENT;
  if (n > 255) return ENAMETOOLONG;
  return 0;
}

}  // namespace

CairnFs::CairnFs(ClusterClient& client, uint64_t rootIno, uint64_t chunkSizeBytes,
                 FsOptions options)
    : client_(client),
      rootIno_(rootIno),
      chunkSize_(chunkSizeBytes),
      chunkBlocks_(chunkSizeBytes / BLOCK),
      options_(options),
      writtenBytes_(options.metrics ? &options.metrics->counter("cairn_client_written_bytes_total",
                                                                "Bytes written by applications")
                                    : nullptr),
      scatteredBlocks_(options.metrics
                           ? &options.metrics->counter(
                                 "cairn_client_scattered_write_blocks_total",
                                 "Blocks sent in writes of several queued pieces of one chunk")
                           : nullptr),
      knownAbsent_(options.metrics
                       ? &options.metrics->counter(
                             "cairn_client_lookups_known_absent_total",
                             "Lookups answered here: the name is not in a directory known whole")
                       : nullptr),
      known_(options.entryTimeoutSec),
      names_(std::chrono::duration_cast<NameCache::Clock::duration>(
                 std::chrono::duration<double>(options.attrTimeoutSec)),
             options.nameCacheEntries) {
  if (options.metrics) {
    const char* name = "cairn_client_cached_answers_total";
    const char* help = "Lookups and getattrs answered from the mount's own cache of names and "
                       "attributes (kept while the change feed vouches for them)";
    namesAnswered_ = &options.metrics->counter(name, help, "op=\"lookup\"");
    attrsAnswered_ = &options.metrics->counter(name, help, "op=\"getattr\"");
  }
}

bool CairnFs::heldHere(uint64_t cino) {
  std::lock_guard<std::mutex> lock(filesMutex_);
  return files_.count(cino) > 0;
}

void CairnFs::keepEntry(uint64_t gen, fuse_ino_t parent, const char* name, const struct stat& st,
                        std::chrono::steady_clock::time_point asked) {
  if (!heldHere(toCluster(st.st_ino))) names_.put(gen, parent, name, st, asked);
}

void CairnFs::keepAttr(uint64_t gen, const struct stat& st,
                       std::chrono::steady_clock::time_point asked) {
  if (!heldHere(toCluster(st.st_ino))) names_.putAttr(gen, st, asked);
}

void CairnFs::fillStat(proto::Attr::Reader a, struct stat& st) const {
  memset(&st, 0, sizeof(st));
  st.st_ino = toFuse(a.getIno());
  st.st_mode = a.getMode();
  st.st_nlink = a.getNlink();
  st.st_uid = a.getUid();
  st.st_gid = a.getGid();
  st.st_size = static_cast<off_t>(a.getSize());
  st.st_rdev = a.getRdev();
  st.st_blksize = 1 << 20;
  st.st_blocks = static_cast<blkcnt_t>((a.getSize() + 511) / 512);
  st.st_atim = toTimespec(a.getAtimeNs());
  st.st_mtim = toTimespec(a.getMtimeNs());
  st.st_ctim = toTimespec(a.getCtimeNs());
  // A file this client is writing is larger than meta knows until the next flush.
  if (S_ISREG(a.getMode())) {
    std::shared_ptr<OpenFile> f;
    {
      std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(filesMutex_));
      auto it = files_.find(a.getIno());
      if (it != files_.end()) f = it->second;
    }
    if (f) {
      std::lock_guard<std::mutex> lock(f->state);
      if (f->dirty && f->size > a.getSize()) st.st_size = static_cast<off_t>(f->size);
    }
  }
}

fuse_entry_param CairnFs::entryOf(const struct stat& st) const {
  fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  e.ino = st.st_ino;
  e.generation = 1;
  e.attr = st;
  e.attr_timeout = options_.attrTimeoutSec;
  e.entry_timeout = options_.entryTimeoutSec;
  return e;
}

void CairnFs::replyMade(fuse_req_t req, uint64_t gen, fuse_ino_t parent, const char* name,
                        proto::Attr::Reader a, std::chrono::steady_clock::time_point asked) {
  struct stat st;
  fillStat(a, st);
  names_.putOwn(gen, parent, name, st, asked);
  auto e = entryOf(st);
  fuse_reply_entry(req, &e);
}

void CairnFs::replyAttr(fuse_req_t req, proto::Attr::Reader a) {
  struct stat st;
  fillStat(a, st);
  fuse_reply_attr(req, &st, options_.attrTimeoutSec);
}

bool CairnFs::unchangedSinceCached(uint64_t cino, proto::Attr::Reader a) {
  // Close-to-open with the page cache kept: meta's attributes (read at this open, so after
  // every close that came before it) say whether the data changed since this mount last
  // opened the file. Any write moves ctime, which no one can set: equal means unchanged.
  CachedVersion now{a.getMtimeNs(), a.getCtimeNs(), a.getSize()};
  std::lock_guard<std::mutex> lock(cachedMutex_);
  auto it = cached_.find(cino);
  bool same = it != cached_.end() && it->second == now;
  if (it == cached_.end() && cached_.size() >= MAX_CACHED_VERSIONS) cached_.clear();
  cached_[cino] = now;
  return same;
}

std::shared_ptr<CairnFs::OpenFile> CairnFs::file(uint64_t ino, bool create) {
  std::lock_guard<std::mutex> lock(filesMutex_);
  auto it = files_.find(ino);
  if (it != files_.end()) return it->second;
  if (!create) return nullptr;
  auto f = std::make_shared<OpenFile>();
  files_[ino] = f;
  return f;
}

void CairnFs::init(fuse_conn_info* conn) {
  if (options_.writebackCache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // POSIX ACLs: the kernel enforces and caches them; meta stores them, keeps the mode in step
  // and hands default ACLs down, which needs the umask unapplied (meta applies it otherwise).
  if (options_.acl && (conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK))
    conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
  else
    options_.acl = false;
  conn->max_write = 1 << 20;
  conn->max_readahead = options_.readaheadBytes;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
}

void CairnFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guard(req, "lookup", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    double left;
    if (known_.absent(toCluster(parent), name, left)) {
      fuse_entry_param e;
      memset(&e, 0, sizeof(e));
      e.entry_timeout = left;  // no longer than we know it
      if (knownAbsent_) knownAbsent_->inc();
      return (void)fuse_reply_entry(req, &e);
    }
    struct stat st;
    if (names_.entry(parent, name, st) && !heldHere(toCluster(st.st_ino))) {
      if (namesAnswered_) namesAnswered_->inc();
      auto e = entryOf(st);
      return (void)fuse_reply_entry(req, &e);
    }
    uint64_t gen = names_.generation();
    auto asked = std::chrono::steady_clock::now();
    auto m = request();
    auto l = opOf(m).initLookup();
    l.setParent(toCluster(parent));
    l.setName(name);
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() == ENOENT) {
      // A negative entry, cached as briefly as positive ones.
      fuse_entry_param e;
      memset(&e, 0, sizeof(e));
      e.entry_timeout = options_.entryTimeoutSec;
      return (void)fuse_reply_entry(req, &e);
    }
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    fillStat(reply.getAttr(), st);
    keepEntry(gen, parent, name, st, asked);
    auto e = entryOf(st);
    fuse_reply_entry(req, &e);
  });
}

void CairnFs::noteDirAttr(uint64_t dir, proto::MetaReply::Reader reply) {
  if (reply.hasParentAttr()) noteAttr(dir, reply.getParentAttr());
}

void CairnFs::noteAttr(uint64_t ino, proto::Attr::Reader attr) {
  struct stat st;
  fillStat(attr, st);
  std::lock_guard<std::mutex> lock(dirAttrMutex_);
  if (dirAttrs_.size() >= 4096) dirAttrs_.clear();
  // Two changes of one inode answered at once: which reply is the later is unknown.
  auto [it, fresh] = dirAttrs_.emplace(ino, DirAttr{st, std::chrono::steady_clock::now()});
  if (!fresh) dirAttrs_.erase(it);
}

bool CairnFs::takeDirAttr(uint64_t dir, struct stat& st) {
  std::lock_guard<std::mutex> lock(dirAttrMutex_);
  auto it = dirAttrs_.find(dir);
  if (it == dirAttrs_.end()) return false;
  bool fresh = std::chrono::steady_clock::now() - it->second.at <
               std::chrono::duration<double>(options_.attrTimeoutSec);
  st = it->second.st;
  dirAttrs_.erase(it);
  return fresh;
}

void CairnFs::getattr(fuse_req_t req, fuse_ino_t ino) {
  guard(req, "getattr", [&]() {
    struct stat st;
    if (takeDirAttr(toCluster(ino), st)) return (void)fuse_reply_attr(req, &st, options_.attrTimeoutSec);
    if (names_.attr(ino, st) && !heldHere(toCluster(ino))) {
      if (attrsAnswered_) attrsAnswered_->inc();
      return (void)fuse_reply_attr(req, &st, options_.attrTimeoutSec);
    }
    uint64_t gen = names_.generation();
    auto asked = std::chrono::steady_clock::now();
    auto m = request();
    opOf(m).setGetattr(toCluster(ino));
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    fillStat(reply.getAttr(), st);
    keepAttr(gen, st, asked);
    fuse_reply_attr(req, &st, options_.attrTimeoutSec);
  });
}

int CairnFs::chunkFor(OpenFile& f, uint64_t ino, uint64_t index, bool allocate, ChunkLoc& out) {
  {
    std::lock_guard<std::mutex> lock(f.state);
    auto it = f.chunks.find(index);
    if (it != f.chunks.end()) {
      out = it->second;
      if (options_.metrics) options_.metrics->counter("cairn_client_chunk_cache_total", "Chunk location lookups by result", "result=\"hit\"").inc();
      return 0;
    }
  }
  if (allocate && index == 0) {
    std::lock_guard<std::mutex> lock(f.state);
    if (auto it = f.chunks.find(0); it != f.chunks.end()) {
      out = it->second;  // another writer took the offer meanwhile
      return 0;
    }
    // An offer left unused for seconds is let go: meta takes offers back after ten or more.
    if (f.offered && std::chrono::steady_clock::now() - f.offeredAt > std::chrono::seconds(3))
      f.offered.reset();
    if (f.offered) {
      f.unboundWritten.assign(chunkBlocks_, false);
      f.unboundSince = std::chrono::steady_clock::now();
      out = f.chunks.emplace(0, *f.offered).first->second;
      f.offered.reset();
      if (options_.metrics) options_.metrics->counter("cairn_client_chunk_cache_total", "Chunk location lookups by result", "result=\"offered\"").inc();
      return 0;
    }
  }
  if (options_.metrics) options_.metrics->counter("cairn_client_chunk_cache_total", "Chunk location lookups by result", "result=\"miss\"").inc();
  ChunkLoc loc;
  int err = client_.getChunk(ino, index, allocate, loc);
  if (err != 0) return err;
  std::lock_guard<std::mutex> lock(f.state);
  out = f.chunks.emplace(index, loc).first->second;
  return 0;
}

void CairnFs::forgetChunk(OpenFile& f, uint64_t index) {
  std::lock_guard<std::mutex> lock(f.state);
  f.chunks.erase(index);
}

void CairnFs::rememberChunk(OpenFile& f, const ChunkLoc& loc) {
  std::lock_guard<std::mutex> lock(f.state);
  auto it = f.chunks.find(loc.index);
  if (it == f.chunks.end() || it->second.version <= loc.version) f.chunks[loc.index] = loc;
}

int CairnFs::readFresh(OpenFile& f, uint64_t ino, ChunkLoc& loc, uint32_t first, uint32_t count,
                       unsigned char* out) {
  int err = client_.readBlocks(ino, loc, chunkBlocks_, first, count, out);
  if (loc.unbound) return err;  // meta knows no other chain for it (nor must we forget it)
  bool refreshed = false;
  // ESTALE: our location is old (a replica failed, or a repair is fencing writers): ask meta
  // again until the new chain is committed (bounded: about 20 s). EIO from every replica of a
  // cached location: the replicas may have moved (repairs while we held the file open) or
  // restarted, so ask meta once for the current chain and read once more before giving up.
  for (int retry = 0; (err == ESTALE || (err == EIO && !refreshed)) && retry < 200; retry++) {
    if (err == ESTALE && retry > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (err == EIO) refreshed = true;
    forgetChunk(f, loc.index);
    int e = chunkFor(f, ino, loc.index, false, loc);
    if (e != 0) return e == ENOENT ? err : e;
    // Read again even when the chain is the same: a replica that restarted fails once on its
    // old connection, which that failure reset.
    err = client_.readBlocks(ino, loc, chunkBlocks_, first, count, out);
  }
  return err;
}

int CairnFs::readRange(OpenFile& f, uint64_t ino, uint64_t off, size_t len, unsigned char* out) {
  // Reads whole blocks covering [off, off+len) into a scratch buffer, then copies.
  uint64_t end = off + len;
  uint64_t pos = off;
  std::vector<unsigned char> scratch;
  while (pos < end) {
    uint64_t index = pos / chunkSize_;
    uint64_t chunkEnd = std::min(end, (index + 1) * chunkSize_);
    uint64_t inChunk = pos - index * chunkSize_;
    uint32_t first = static_cast<uint32_t>(inChunk / BLOCK);
    uint32_t last = static_cast<uint32_t>((chunkEnd - index * chunkSize_ - 1) / BLOCK);
    uint32_t count = last - first + 1;
    uint64_t skip = inChunk - uint64_t(first) * BLOCK;
    // Whole blocks go straight to the caller's buffer; partial ones through scratch.
    bool direct = skip == 0 && chunkEnd - pos == uint64_t(count) * BLOCK;
    if (!direct && scratch.size() < size_t(count) * BLOCK) scratch.resize(size_t(count) * BLOCK);
    unsigned char* dst = direct ? out + (pos - off) : scratch.data();
    ChunkLoc loc;
    int err = chunkFor(f, ino, index, false, loc);
    if (err == ENOENT) {
      memset(dst, 0, size_t(count) * BLOCK);  // a hole
    } else if (err != 0) {
      return err;
    } else {
      err = readFresh(f, ino, loc, first, count, dst);
      if (err != 0) return err;
    }
    if (!direct) memcpy(out + (pos - off), scratch.data() + skip, chunkEnd - pos);
    pos = chunkEnd;
  }
  return 0;
}

void CairnFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "open", [&]() {
    uint64_t cino = toCluster(ino);
    uint64_t gen;
    auto f = acquire(cino, gen);
    // The file's attributes, and meta records it open in our session.
    auto m = request();
    auto o = opOf(m).initOpenFile();
    o.setIno(cino);
    o.setGen(gen);
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    auto undoOpen = [&]() {
      std::lock_guard<std::mutex> s(f->state);
      if (--f->refs == 0) closed(cino, f->openGen);
    };
    if (reply.getErr() != 0) {
      undoOpen();
      return (void)fuse_reply_err(req, reply.getErr());
    }
    {
      std::lock_guard<std::mutex> lock(f->state);
      if (!f->dirty || reply.getAttr().getSize() > f->size) f->size = reply.getAttr().getSize();
    }
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
      // The kernel leaves O_TRUNC to us (atomic_o_trunc): the size goes to 0 here, with the
      // file's later chunks dropped by meta and mtime and ctime set to now.
      std::unique_lock<std::shared_mutex> exclusive(f->mutex);
      forgetDirAttr(cino);  // attributes noted at an earlier setattr no longer hold
      f->changed = true;
      int err = flushPending(*f, cino);
      if (err == 0) err = commit(*f, cino);
      if (err == 0) {  // also when empty: mtime and ctime move (as on ext4)
        auto t = request();
        auto op = opOf(t).initSetattr();
        op.setIno(cino);
        auto a = op.initAttr();
        a.setSetSize(true);
        a.setSize(0);
        a.setSetMtime(true);
        a.setMtimeNow(true);
        auto tr = client_.meta(kj::mv(t));
        err = replyOf(tr).getErr();
        if (err == 0) {
          std::lock_guard<std::mutex> s(f->state);
          f->size = 0;
          f->dirty = false;
          f->chunks.clear();
          f->unsynced.clear();
        }
      }
      if (err != 0) {
        undoOpen();
        return (void)fuse_reply_err(req, err);
      }
      fi->keep_cache = 0;
      fi->direct_io = 0;
      return (void)fuse_reply_open(req, fi);
    }
    bool unchanged = unchangedSinceCached(cino, reply.getAttr());
    fi->keep_cache = unchanged ? 1 : 0;
    fi->direct_io = 0;
    // Close-to-open: the kernel may still hold the attributes from before the change (the
    // change feed that drops them can lag behind, or miss changes across a new leader), and it
    // reads no further than the size it holds. They are dropped before the open is answered,
    // so its next read past that size or stat asks again.
    if (!unchanged && session_) fuse_lowlevel_notify_inval_inode(session_, ino, -1, 0);
    fuse_reply_open(req, fi);
  });
}

void CairnFs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                     fuse_file_info* fi) {
  guard(req, "create", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    const fuse_ctx* ctx = fuse_req_ctx(req);
    auto m = request();
    auto op = opOf(m).initMknod();
    op.setParent(toCluster(parent));
    op.setName(name);
    op.setMode(S_IFREG | (mode & 07777));
    op.setUid(ctx->uid);
    op.setGid(ctx->gid);
    op.setUmask(ctx->umask);
    op.setExclusive((fi->flags & O_EXCL) != 0);
    op.setFirstChunk(true);  // the first write then needs no chunk allocation of its own
    uint64_t gen = ++openGens_;
    op.setOpenGen(gen);  // meta records it open in our session
    uint64_t namesGen = names_.generation();
    auto sent = std::chrono::steady_clock::now();
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    auto reply = replyOf(r);
    names_.dropAttr(parent);
    // An existing file opened: the kernel thought the name absent, so nothing here may say so.
    if (reply.getErr() == 0 && !reply.hasParentAttr())
      nameChanged(toCluster(parent), name, true, EEXIST);
    else
      nameChanged(toCluster(parent), name, true, reply, sent);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    noteDirAttr(toCluster(parent), reply);
    auto a = reply.getAttr();
    // A file made just now (meta tells the directory's attributes only then, not when the
    // name already existed) has no capability: the kernel's question before its first write
    // needs no answer from meta.
    if (reply.hasParentAttr()) {
      rememberAbsent(a.getIno(), 0);
      if (!(a.getMode() & (S_ISUID | S_ISGID)))
        noteAttr(a.getIno(), a);  // for the kernel's getattr before a chown (install, cp -p)
    }
    uint64_t ignored;
    auto f = acquire(a.getIno(), ignored);
    {
      std::lock_guard<std::mutex> lock(f->state);
      f->openGen = std::max(f->openGen, gen);
      if (!f->dirty) f->size = a.getSize();
      if (reply.hasOfferedChunk() && f->chunks.empty() && !f->offered) {
        ChunkLoc offer;
        toChunkLoc(reply.getOfferedChunk(), offer);
        offer.unbound = true;
        f->offered = std::move(offer);
        f->offeredAt = std::chrono::steady_clock::now();
      }
    }
    struct stat st;
    fillStat(a, st);
    // What we made is kept; an existing file opened is not.
    if (reply.hasParentAttr()) names_.putOwn(namesGen, parent, name, st, sent);
    auto e = entryOf(st);
    fi->keep_cache = 0;
    fuse_reply_create(req, &e, fi);
  });
}

void CairnFs::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  guard(req, "read", [&]() {
    uint64_t cino = toCluster(ino);
    auto f = file(cino, true);
    if (f->pendingBytes.load() > 0) {
      std::unique_lock<std::shared_mutex> exclusive(f->mutex);
      if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
    }
    std::shared_lock<std::shared_mutex> lock(f->mutex);
    if (int err = drainWrites(*f); err != 0) return (void)fuse_reply_err(req, err);
    uint64_t fileSize;
    {
      std::lock_guard<std::mutex> s(f->state);
      fileSize = f->size;
    }
    if (uint64_t(off) >= fileSize) return (void)fuse_reply_buf(req, nullptr, 0);
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, fileSize - off));
    // Every byte is written. Page-aligned, so that blocks read from a file on this host go
    // straight into it (see ClusterClient::readLocal).
    ReadBuffer buf(n);
    if (!buf.get()) return (void)fuse_reply_err(req, ENOMEM);
    int err = readRange(*f, cino, off, n, buf.get());
    if (err != 0) return (void)fuse_reply_err(req, err);
    if (options_.metrics) options_.metrics->counter("cairn_client_read_bytes_total", "Bytes read by applications").inc(n);
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.get()), n);
  });
}

int CairnFs::writeRange(OpenFile& f, uint64_t cino, const char* data, size_t size, uint64_t off,
                        uint64_t fileSize) {
  uint64_t pos = off;
  uint64_t end = off + size;
  std::vector<unsigned char> plain;
  while (pos < end) {
    uint64_t index = pos / chunkSize_;
    uint64_t base = index * chunkSize_;
    uint64_t chunkEnd = std::min(end, base + chunkSize_);
    uint32_t first = static_cast<uint32_t>((pos - base) / BLOCK);
    uint32_t last = static_cast<uint32_t>((chunkEnd - base - 1) / BLOCK);
    uint32_t count = last - first + 1;
    ChunkLoc loc;
    int err = chunkFor(f, cino, index, true, loc);
    if (err != 0) return err;
    uint64_t firstStart = base + uint64_t(first) * BLOCK;
    uint64_t lastStart = base + uint64_t(last) * BLOCK;
    const unsigned char* blocks;
    if (pos == firstStart && chunkEnd == lastStart + BLOCK) {
      // Whole blocks: sealed straight from the caller's buffer.
      blocks = reinterpret_cast<const unsigned char*>(data + (pos - off));
    } else {
      plain.assign(size_t(count) * BLOCK, 0);
      err = mergeBlocks(f, cino, loc, first, count, pos, chunkEnd, firstStart, lastStart,
                        fileSize, data + (pos - off), plain.data());
      if (err != 0) return err;
      blocks = plain.data();
    }
    err = sendBlocks(f, cino, index, loc, first, count, nullptr, blocks);
    if (err != 0) return err;
    pos = chunkEnd;
  }
  {
    std::lock_guard<std::mutex> s(f.state);
    if (end > f.size) f.size = end;
    f.dirty = true;
  }
  return 0;
}

int CairnFs::sendBlocks(OpenFile& f, uint64_t cino, uint64_t index, ChunkLoc& loc,
                        uint32_t first, uint32_t count, const uint32_t* at,
                        const unsigned char* blocks) {
  if (loc.unbound) {
    std::lock_guard<std::mutex> s(f.state);
    auto it = f.chunks.find(index);
    if (it != f.chunks.end() && it->second.unbound) {
      for (uint32_t i = 0; i < count; i++) {
        uint32_t b = at ? at[i] : first + i;
        if (b < f.unboundWritten.size()) f.unboundWritten[b] = true;
      }
    }
  }
  int err = client_.writeBlocks(cino, loc, chunkBlocks_, first, count, blocks, false, at);
  if (err != 0 && err != ENOSYS && loc.unbound) {
    // Meta must know the chunk before a replica can be replaced: bind it, then write again
    // through the chain meta keeps (ESTALE below).
    spdlog::warn("write to the new chunk {:016x} of inode {} failed ({}): recording it first",
                 loc.id, cino, strerror(err));
    int be = bindNow(f, cino, false);
    if (be != 0) return be;
    err = ESTALE;
  }
  for (int retry = 0; err == ESTALE && retry < 200; retry++) {
    if (retry > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    forgetChunk(f, index);
    err = chunkFor(f, cino, index, true, loc);
    if (err == 0) err = client_.writeBlocks(cino, loc, chunkBlocks_, first, count, blocks, false, at);
  }
  if (err != 0) return err;
  rememberChunk(f, loc);  // the chain may have changed after a replica failure
  std::lock_guard<std::mutex> s(f.state);
  f.unsynced.insert(index);
  return 0;
}

int CairnFs::mergeBlocks(OpenFile& f, uint64_t cino, ChunkLoc& loc, uint32_t first,
                         uint32_t count, uint64_t pos, uint64_t end, uint64_t firstStart,
                         uint64_t lastStart, uint64_t fileSize, const char* data,
                         unsigned char* plain) {
  // Partial head and tail blocks: merge with what is stored, unless the block lies wholly
  // beyond the end of the file, where it is zeros.
  if (pos != firstStart && firstStart < fileSize) {
    if (int err = readFresh(f, cino, loc, first, 1, plain)) return err;
  }
  if (end != lastStart + BLOCK && lastStart < fileSize && (count > 1 || pos == firstStart)) {
    if (int err = readFresh(f, cino, loc, first + count - 1, 1, plain + size_t(count - 1) * BLOCK))
      return err;
  }
  // Bytes past the end of the file inside a merged block read as zeros.
  size_t total = size_t(count) * BLOCK;
  if (fileSize < lastStart + BLOCK && fileSize > firstStart)
    memset(plain + (fileSize - firstStart), 0, total - (fileSize - firstStart));
  memcpy(plain + (pos - firstStart), data, end - pos);
  return 0;
}

int CairnFs::drainWrites(OpenFile& f) {
  std::unique_lock<std::mutex> s(f.state);
  f.drained.wait(s, [&]() { return f.inflight == 0; });
  return std::exchange(f.asyncErr, 0);
}

int CairnFs::flushPending(OpenFile& f, uint64_t cino) {
  // Callers hold f.mutex exclusively.
  if (int err = drainWrites(f); err != 0) return err;
  if (f.pending.empty()) return 0;
  std::string data;
  data.swap(f.pending);
  f.pendingBytes = 0;
  int err = writeRange(f, cino, data.data(), data.size(), f.pendingOff, f.sizeBeforePending);
  if (err != 0)
    spdlog::error("write of {} buffered bytes at {} of inode {} failed: {}", data.size(),
                  f.pendingOff, cino, strerror(err));
  return err;
}

int CairnFs::writeBehind(const std::shared_ptr<OpenFile>& f, uint64_t cino, std::string data,
                         uint64_t off) {
  size_t size = data.size();
  uint64_t end = off + size;
  auto piece = std::make_shared<Queued>(Queued{off, std::move(data), false});
  {
    std::unique_lock<std::mutex> s(f->state);
    // Ranges in flight never overlap each other (each waits here for those it overlaps), so
    // sorted by start they are sorted by end too: only the last one starting before `end` can
    // reach past `off` (random writes keep hundreds in flight; this looks at one). Queued ones
    // can thus go out together and in any order.
    auto overlaps = [&]() {
      auto it = f->inflightRanges.lower_bound(end);
      return it != f->inflightRanges.begin() && std::prev(it)->second > off;
    };
    f->drained.wait(s, [&]() {
      return (f->inflightBytes + size <= ASYNC_BYTES_PER_FILE || f->inflight == 0) && !overlaps();
    });
    if (f->asyncErr != 0) return std::exchange(f->asyncErr, 0);
    f->inflight++;
    f->inflightBytes += size;
    f->inflightRanges.emplace(off, end);
    f->queued.emplace(off, piece);
    if (end > f->size) f->size = end;
    f->dirty = true;
  }
  {
    std::unique_lock<std::mutex> a(asyncMutex_);
    asyncRoom_.wait(a, [&]() { return asyncBytes_ + size <= ASYNC_BYTES || asyncBytes_ == 0; });
    asyncBytes_ += size;
  }
  writers_.submit([this, f, cino, piece]() {
    std::vector<std::shared_ptr<Queued>> batch;
    {
      std::lock_guard<std::mutex> s(f->state);
      if (piece->taken) return;  // gone out with another piece of its chunk
      takeQueued(*f, piece, batch);
    }
    int err;
    try {
      err = writeQueued(*f, cino, batch);
    } catch (kj::Exception& e) {
      spdlog::error("background write to inode {}: {}", cino, e.getDescription().cStr());
      err = EIO;
    }
    size_t bytes = 0;
    for (auto& q : batch) bytes += q->data.size();
    if (err != 0)
      spdlog::error("background write of {} bytes in {} pieces from {} of inode {} failed: {}",
                    bytes, batch.size(), batch.front()->off, cino, strerror(err));
    {
      std::lock_guard<std::mutex> a(asyncMutex_);
      asyncBytes_ -= bytes;
    }
    asyncRoom_.notify_all();
    std::lock_guard<std::mutex> s(f->state);
    for (auto& q : batch) {
      uint64_t qend = q->off + q->data.size();
      for (auto it = f->inflightRanges.find(q->off);
           it != f->inflightRanges.end() && it->first == q->off; ++it) {
        if (it->second == qend) {
          f->inflightRanges.erase(it);
          break;
        }
      }
    }
    f->inflight -= int(batch.size());
    f->inflightBytes -= bytes;
    if (err != 0 && f->asyncErr == 0) f->asyncErr = err;
    f->drained.notify_all();
  });
  return 0;
}

void CairnFs::takeQueued(OpenFile& f, const std::shared_ptr<Queued>& piece,
                         std::vector<std::shared_ptr<Queued>>& batch) {
  // Called with f.state held.
  auto inChunk = [&](const Queued& q, uint64_t index) {
    return q.off / chunkSize_ == index && (q.off + q.data.size() - 1) / chunkSize_ == index;
  };
  auto take = [&](const std::shared_ptr<Queued>& q) {
    q->taken = true;
    f.queued.erase(q->off);
    batch.push_back(q);
  };
  take(piece);
  uint64_t index = piece->off / chunkSize_;
  size_t blocks = piece->data.size() / BLOCK;
  if (!scatteredWrites_.load() || !inChunk(*piece, index) || blocks >= MAX_BATCH_BLOCKS) return;
  // Other waiting pieces of the same chunk go with it, in one call down its chain.
  for (auto it = f.queued.lower_bound(index * chunkSize_);
       it != f.queued.end() && it->first < (index + 1) * chunkSize_ && blocks < MAX_BATCH_BLOCKS;) {
    auto q = (it++)->second;
    size_t n = q->data.size() / BLOCK;
    if (!inChunk(*q, index) || blocks + n > MAX_BATCH_BLOCKS) continue;
    take(q);
    blocks += n;
  }
  std::sort(batch.begin(), batch.end(), [](auto& a, auto& b) { return a->off < b->off; });
}

int CairnFs::writeQueued(OpenFile& f, uint64_t cino, const std::vector<std::shared_ptr<Queued>>& batch) {
  auto each = [&]() {
    for (auto& q : batch)
      if (int err = writeRange(f, cino, q->data.data(), q->data.size(), q->off, 0)) return err;
    return 0;
  };
  if (batch.size() == 1) return each();
  // Whole blocks of one chunk, scattered: one writeAt with each block's index.
  uint64_t index = batch.front()->off / chunkSize_;
  uint64_t base = index * chunkSize_;
  std::vector<uint32_t> at;
  std::vector<unsigned char> plain;
  uint64_t end = 0;
  for (auto& q : batch) {
    for (size_t i = 0; i < q->data.size() / BLOCK; i++)
      at.push_back(static_cast<uint32_t>((q->off - base) / BLOCK + i));
    plain.insert(plain.end(), q->data.begin(), q->data.end());
    end = std::max<uint64_t>(end, q->off + q->data.size());
  }
  ChunkLoc loc;
  int err = chunkFor(f, cino, index, true, loc);
  if (err != 0) return err;
  err = sendBlocks(f, cino, index, loc, 0, static_cast<uint32_t>(at.size()), at.data(),
                   plain.data());
  if (err == ENOSYS) {
    spdlog::warn("chunk server {} predates scattered writes: writing block runs one by one",
                 loc.addrs.empty() ? "?" : loc.addrs[0]);
    scatteredWrites_ = false;
    return each();
  }
  if (err != 0) return err;
  if (scatteredBlocks_) scatteredBlocks_->inc(at.size());
  std::lock_guard<std::mutex> s(f.state);
  if (end > f.size) f.size = end;
  f.dirty = true;
  return 0;
}

void CairnFs::write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off) {
  guard(req, "write", [&]() {
    uint64_t cino = toCluster(ino);
    forgetDirAttr(cino);  // its size and times change
    auto f = file(cino, true);
    f->changed = true;
    uint64_t end = uint64_t(off) + size;
    if (writtenBytes_) writtenBytes_->inc(size);
    if (size < WRITE_BEHIND_BYTES) {
      // Small writes that follow each other are gathered (up to WRITE_BEHIND_BYTES) and written
      // as one: the data is in this client's memory until then, as the durability rules say of
      // write(); flush, fsync, close, reads and truncation write it out first.
      std::unique_lock<std::shared_mutex> exclusive(f->mutex);
      if (!f->pending.empty() && uint64_t(off) != f->pendingOff + f->pending.size()) {
        // Not a continuation: what was gathered goes out, in the background when it is whole
        // blocks (random block writes then travel their chains side by side).
        int err;
        if (f->pendingOff % BLOCK == 0 && f->pending.size() % BLOCK == 0) {
          std::string gathered;
          gathered.swap(f->pending);
          f->pendingBytes = 0;
          err = writeBehind(f, cino, std::move(gathered), f->pendingOff);
        } else {
          err = flushPending(*f, cino);
        }
        if (err != 0) return (void)fuse_reply_err(req, err);
      }
      {
        std::lock_guard<std::mutex> s(f->state);
        if (f->pending.empty()) {
          f->pendingOff = off;
          f->sizeBeforePending = f->size;
        }
        if (end > f->size) f->size = end;
        f->dirty = true;
      }
      f->pending.append(data, size);
      f->pendingBytes = f->pending.size();
      if (f->pending.size() >= WRITE_BEHIND_BYTES) {
        if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
      }
      return (void)fuse_reply_write(req, size);
    }
    if (f->pendingBytes.load() > 0) {
      std::unique_lock<std::shared_mutex> exclusive(f->mutex);
      if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
    }
    // Whole-block writes go out in the background (a few MiB per file at most): the caller
    // goes on while they travel the replica chains, as write() promises only client memory;
    // their errors come back at the next write, flush, fsync or close. A partial block needs
    // read-modify-write, alone, after them.
    bool partial = (off % BLOCK) != 0 || (end % BLOCK) != 0;
    std::shared_lock<std::shared_mutex> shared(f->mutex, std::defer_lock);
    std::unique_lock<std::shared_mutex> exclusive(f->mutex, std::defer_lock);
    if (partial) {
      exclusive.lock();
      if (int err = drainWrites(*f); err != 0) return (void)fuse_reply_err(req, err);
    } else {
      shared.lock();
      if (int err = writeBehind(f, cino, std::string(data, size), off); err != 0)
        return (void)fuse_reply_err(req, err);
      return (void)fuse_reply_write(req, size);
    }
    uint64_t fileSize;
    {
      std::lock_guard<std::mutex> s(f->state);
      fileSize = f->size;
    }
    if (int err = writeRange(*f, cino, data, size, off, fileSize); err != 0)
      return (void)fuse_reply_err(req, err);
    {
      std::lock_guard<std::mutex> s(f->state);
      if (end > f->size) f->size = end;
      f->dirty = true;
    }
    fuse_reply_write(req, size);
  });
}

namespace {
// A commit carrying a bind was answered about the bind: recorded (0), another chunk is there
// (EEXIST), or the offer is too old (ESTALE); afterBind() takes each. Anything else failed the
// commit before the bind was looked at.
bool bindAnswered(int err) { return err == 0 || err == EEXIST || err == ESTALE; }
}  // namespace

int CairnFs::commit(OpenFile& f, uint64_t ino) {
  // Callers hold f.mutex exclusively: no write changes size or dirty meanwhile.
  uint64_t size;
  {
    std::lock_guard<std::mutex> lock(f.state);
    if (!f.dirty) return 0;
    size = f.size;
  }
  forgetDirAttr(ino);
  auto m = request();
  auto op = opOf(m).initCommitWrite();
  op.setIno(ino);
  op.setSize(size);
  op.setMtimeNs(wallClockNs());
  bool binding = addBind(f, op);
  auto r = client_.meta(kj::mv(m));
  auto reply = replyOf(r);
  if (binding && bindAnswered(reply.getErr())) {
    if (int e = afterBind(f, ino, reply)) return e;
    if (reply.getErr() != 0) return commit(f, ino);  // the size, without the bind
  }
  if (reply.getErr() == EDQUOT || reply.getErr() == EFBIG) {
    // The growth is refused for good: forget it (the bytes past the committed size are not
    // part of the file) and report it to the application.
    auto g = request();
    opOf(g).setGetattr(ino);
    auto gr = client_.meta(kj::mv(g));
    std::lock_guard<std::mutex> lock(f.state);
    f.dirty = false;
    if (replyOf(gr).getErr() == 0) f.size = replyOf(gr).getAttr().getSize();
    return reply.getErr();
  }
  if (reply.getErr() != 0) return reply.getErr();
  std::lock_guard<std::mutex> lock(f.state);
  f.dirty = false;
  f.size = std::max<uint64_t>(f.size, reply.getAttr().getSize());
  return 0;
}

bool CairnFs::addBind(OpenFile& f, proto::MetaRequest::CommitWriteOp::Builder op) {
  std::lock_guard<std::mutex> lock(f.state);
  auto it = f.chunks.find(0);
  if (it == f.chunks.end() || !it->second.unbound) return false;
  fromChunkLoc(it->second, op.initBind());
  return true;
}

int CairnFs::afterBind(OpenFile& f, uint64_t ino, proto::MetaReply::Reader reply) {
  if (reply.getErr() == 0) {
    std::lock_guard<std::mutex> lock(f.state);
    auto it = f.chunks.find(0);
    if (it != f.chunks.end()) it->second.unbound = false;
    f.unboundWritten.clear();
    return 0;
  }
  ChunkLoc winner;
  if (reply.getErr() == ESTALE) {
    // Offered too long ago: a chunk allocated the usual way takes the blocks.
    spdlog::info("inode {}: the offered first chunk was not recorded in time; allocating one", ino);
    if (int e = client_.getChunk(ino, 0, true, winner)) return e;
  } else {
    if (!reply.hasBoundChunk()) return EIO;
    toChunkLoc(reply.getBoundChunk(), winner);
    spdlog::info("inode {}: chunk 0 was recorded by another writer first", ino);
  }
  return moveUnbound(f, ino, winner);
}

int CairnFs::moveUnbound(OpenFile& f, uint64_t ino, ChunkLoc winner) {
  // Chunk 0 is `winner`, not ours (another writer's was recorded first, or ours was offered too
  // long ago). The blocks we wrote into ours go into it (ours is left to fsck, which no file
  // names): as if our writes came after.
  ChunkLoc own;
  std::vector<bool> written;
  {
    std::lock_guard<std::mutex> lock(f.state);
    auto it = f.chunks.find(0);
    if (it == f.chunks.end() || !it->second.unbound) return 0;
    own = it->second;
    written = f.unboundWritten;
  }
  spdlog::info("inode {}: moving our blocks of {:016x} into {:016x}", ino, own.id, winner.id);
  std::vector<unsigned char> buf;
  for (uint32_t b = 0; b < written.size();) {
    if (!written[b]) {
      b++;
      continue;
    }
    uint32_t n = 0;
    while (b + n < written.size() && written[b + n] && n < 256) n++;
    buf.resize(size_t(n) * BLOCK);
    int err = client_.readBlocks(ino, own, chunkBlocks_, b, n, buf.data());
    if (err == 0) err = client_.writeBlocks(ino, winner, chunkBlocks_, b, n, buf.data(), false);
    if (err != 0) {
      spdlog::error("inode {}: moving blocks {}..{} into chunk {:016x} failed: {}", ino, b,
                    b + n - 1, winner.id, strerror(err));
      return err;
    }
    b += n;
  }
  std::lock_guard<std::mutex> lock(f.state);
  f.chunks[0] = winner;
  f.unboundWritten.clear();
  return 0;
}

int CairnFs::bindNow(OpenFile& f, uint64_t ino, bool mayMove) {
  auto m = request();
  auto op = opOf(m).initCommitWrite();
  op.setIno(ino);
  op.setSize(0);  // sizes only grow: the size stays, the chunk is recorded
  op.setMtimeNs(wallClockNs());
  if (!addBind(f, op)) return 0;
  auto r = client_.meta(kj::mv(m));
  auto reply = replyOf(r);
  int err = reply.getErr();
  if (!bindAnswered(err)) return err;
  if (err != 0 && !mayMove) {
    spdlog::error("inode {}: its first chunk could not be recorded ({}) while writes were in "
                  "flight", ino, strerror(err));
    return EIO;
  }
  return afterBind(f, ino, reply);
}

void CairnFs::tick() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>> due;
  {
    std::lock_guard<std::mutex> lock(filesMutex_);
    for (auto& [ino, f] : files_) {
      std::lock_guard<std::mutex> s(f->state);
      auto it = f->chunks.find(0);
      if (it != f->chunks.end() && it->second.unbound &&
          now - f->unboundSince >= std::chrono::duration<double>(options_.recordAfterSec))
        due.emplace_back(ino, f);
    }
  }
  for (auto& [ino, f] : due) {
    try {
      std::unique_lock<std::shared_mutex> exclusive(f->mutex);
      if (int err = drainWrites(*f); err != 0) {
        std::lock_guard<std::mutex> s(f->state);
        if (f->asyncErr == 0) f->asyncErr = err;  // told at the next write, fsync or close
        continue;
      }
      if (int err = bindNow(*f, ino, true); err != 0) {
        spdlog::error("inode {}: recording its first chunk failed: {}", ino, strerror(err));
        std::lock_guard<std::mutex> s(f->state);
        if (f->asyncErr == 0) f->asyncErr = err;
      }
    } catch (kj::Exception& e) {
      spdlog::warn("inode {}: recording its first chunk: {}", ino, e.getDescription().cStr());
    }
  }
}

void CairnFs::flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "flush", [&]() {
    // A process closing any descriptor of a file loses its POSIX locks on it (fcntl(2)).
    releaseLocks(toCluster(ino), fi->lock_owner, false);
    auto f = file(toCluster(ino), false);
    if (!f) return (void)fuse_reply_err(req, 0);
    std::unique_lock<std::shared_mutex> lock(f->mutex);
    int err = flushPending(*f, toCluster(ino));
    int committed = commit(*f, toCluster(ino));
    fuse_reply_err(req, err != 0 ? err : committed);
  });
}

void CairnFs::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "release", [&]() {
    uint64_t cino = toCluster(ino);
    if (fi->flock_release) releaseLocks(cino, fi->lock_owner, true);  // the last close
    auto f = file(cino, false);
    if (!f) return (void)fuse_reply_err(req, 0);
    int err;
    {
      std::unique_lock<std::shared_mutex> lock(f->mutex);
      err = flushPending(*f, cino);
      int committed = commit(*f, cino);
      if (err == 0) err = committed;
    }
    {
      std::lock_guard<std::mutex> lock(filesMutex_);
      std::lock_guard<std::mutex> s(f->state);
      if (--f->refs == 0) {
        closed(cino, f->openGen);
        auto it = files_.find(cino);
        if (it != files_.end() && it->second == f && !f->dirty) {
          files_.erase(it);
          // Committed: what is kept of it from now on is read after that.
          if (f->changed) names_.dropAttr(ino);
        }
      }
    }
    fuse_reply_err(req, err);
  });
}

std::shared_ptr<CairnFs::OpenFile> CairnFs::acquire(uint64_t ino, uint64_t& gen) {
  // Under filesMutex_, as release's drop of an unused file: an open never takes a file that is
  // being dropped.
  std::lock_guard<std::mutex> lock(filesMutex_);
  auto& f = files_[ino];
  if (!f) f = std::make_shared<OpenFile>();
  std::lock_guard<std::mutex> s(f->state);
  if (f->refs++ == 0) {
    f->openGen = ++openGens_;
    f->chunks.clear();  // close-to-open: fresh locations
  }
  gen = f->openGen;
  return f;
}

int CairnFs::absentKind(const char* name) {
  if (strcmp(name, "security.capability") == 0) return 0;
  if (strcmp(name, "system.posix_acl_access") == 0) return 1;
  if (strcmp(name, "system.posix_acl_default") == 0) return 2;
  return -1;
}

bool CairnFs::knownAbsent(uint64_t ino, int kind) {
  std::lock_guard<std::mutex> lock(absentMutex_);
  auto it = absent_.find(ino);
  return it != absent_.end() && std::chrono::steady_clock::now() < it->second[kind];
}

void CairnFs::rememberAbsent(uint64_t ino, int kind) {
  std::lock_guard<std::mutex> lock(absentMutex_);
  if (absent_.size() >= MAX_CACHED_VERSIONS) absent_.clear();
  absent_[ino][kind] = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(options_.attrTimeoutSec));
}

void CairnFs::noteDirEnd(uint64_t dir, uint64_t cookie) {
  std::lock_guard<std::mutex> lock(dirEndMutex_);
  if (dirEnds_.size() >= 4096) dirEnds_.clear();
  dirEnds_[dir] = DirEnd{cookie, std::chrono::steady_clock::now()};
}

bool CairnFs::takeDirEnd(uint64_t dir, uint64_t cookie) {
  std::lock_guard<std::mutex> lock(dirEndMutex_);
  auto it = dirEnds_.find(dir);
  if (it == dirEnds_.end()) return false;
  bool hit = it->second.cookie == cookie &&
             std::chrono::steady_clock::now() - it->second.at < std::chrono::seconds(1);
  dirEnds_.erase(it);
  return hit;
}

void CairnFs::noteListed(uint64_t dir) {
  std::lock_guard<std::mutex> lock(dirEndMutex_);
  if (listed_.size() >= 16384) listed_.clear();
  listed_[dir] = std::chrono::steady_clock::now();
}

bool CairnFs::listedLately(uint64_t dir) {
  std::lock_guard<std::mutex> lock(dirEndMutex_);
  auto it = listed_.find(dir);
  if (it == listed_.end()) return false;
  if (std::chrono::steady_clock::now() - it->second <
      std::chrono::duration<double>(options_.entryTimeoutSec))
    return true;
  listed_.erase(it);
  return false;
}

void CairnFs::nameChanged(uint64_t dir, const char* name, bool added, int err) {
  known_.changed(dir, name, added, err, 0, {});
}

void CairnFs::nameChanged(uint64_t dir, const char* name, bool added,
                          proto::MetaReply::Reader reply, std::chrono::steady_clock::time_point sent) {
  known_.changed(dir, name, added, reply.getErr(),
                 reply.hasParentAttr() ? reply.getParentAttr().getDirCookie() : 0, sent);
}

void CairnFs::namespaceChanged() {
  nsGen_++;
  std::lock_guard<std::mutex> lock(dirEndMutex_);
  listings_.clear();
}

void CairnFs::forgetDirAttr(uint64_t dir) {
  names_.dropAttr(toFuse(dir));
  std::lock_guard<std::mutex> lock(dirAttrMutex_);
  dirAttrs_.erase(dir);
}

void CairnFs::ownNamesChanged(fuse_ino_t parent, const char* name, fuse_ino_t newParent,
                              const char* newName, bool exchange) {
  // An inode whose name was not kept here may still have attributes kept (a getattr through
  // another name, or through a descriptor): none can be told apart, so none stay.
  auto moved = [&](uint64_t ino) { ino ? names_.dropAttr(ino) : names_.dropAttrs(); };
  uint64_t from = names_.inoOf(parent, name);
  names_.dropName(parent, name);
  names_.dropAttr(parent);
  moved(from);  // a link fewer (unlink), or a new ctime (rename)
  if (newName == nullptr) return;
  uint64_t to = names_.inoOf(newParent, newName);
  names_.dropName(newParent, newName);
  names_.dropAttr(newParent);
  if (to || exchange) moved(to);  // replaced (a link fewer) or moved (an exchange)
  else names_.dropAttrs();        // perhaps replaced, unknown what
}

void CairnFs::entryChangedElsewhere(uint64_t parent, std::string_view name) {
  names_.dropName(toFuse(parent), name);
}

void CairnFs::feedVouches(std::chrono::steady_clock::time_point sent) { names_.vouch(sent); }

void CairnFs::feedLost() { names_.clear(); }

uint32_t CairnFs::watchWaitMs() {
  // While the cache of names is in use, the feed answers often enough that each answer's vouch
  // comes before the last one's runs out (a watch answered after waiting 40% of the bound).
  auto now = std::chrono::steady_clock::now();
  if (!names_.usedSince(now - std::chrono::seconds(30))) return 0;
  return static_cast<uint32_t>(std::max(100.0, options_.attrTimeoutSec * 400));
}

void CairnFs::changedElsewhere(uint64_t ino) {
  forgetDirAttr(ino);
  known_.forget(ino);
  {
    std::lock_guard<std::mutex> lock(dirEndMutex_);
    listed_.erase(ino);
    dirEnds_.erase(ino);
    listings_.erase(ino);
  }
  std::lock_guard<std::mutex> lock(absentMutex_);
  absent_.erase(ino);
}

void CairnFs::closed(uint64_t ino, uint64_t gen) {
  std::lock_guard<std::mutex> lock(closedMutex_);
  closed_.push_back(Ref{ino, gen});
}

std::vector<OpenFiles::Ref> CairnFs::takeClosed() {
  std::lock_guard<std::mutex> lock(closedMutex_);
  return std::exchange(closed_, {});
}

void CairnFs::putBackClosed(std::vector<Ref> refs) {
  std::lock_guard<std::mutex> lock(closedMutex_);
  closed_.insert(closed_.end(), refs.begin(), refs.end());
}

std::vector<OpenFiles::Ref> CairnFs::openNow() {
  std::vector<Ref> out;
  std::lock_guard<std::mutex> lock(filesMutex_);
  for (auto& [ino, f] : files_) {
    std::lock_guard<std::mutex> s(f->state);
    if (f->refs > 0) out.push_back(Ref{ino, f->openGen});
  }
  return out;
}

void CairnFs::fsync(fuse_req_t req, fuse_ino_t ino, int datasync) {
  guard(req, "fsync", [&]() {
    uint64_t cino = toCluster(ino);
    auto f = file(cino, false);
    if (!f) return (void)fuse_reply_err(req, syncMeta());
    std::unique_lock<std::shared_mutex> lock(f->mutex);
    if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
    std::set<uint64_t> unsynced;
    {
      std::lock_guard<std::mutex> s(f->state);
      unsynced.swap(f->unsynced);
    }
    std::vector<ChunkLoc> locs;
    int err = 0;
    for (auto index : unsynced) {
      ChunkLoc loc;
      int e = chunkFor(*f, cino, index, false, loc);
      if (e == ENOENT) continue;  // truncated away since it was written: nothing to sync
      if (e != 0) {
        err = e;
        break;
      }
      locs.push_back(std::move(loc));
    }
    if (err == 0) err = client_.syncChunks(locs);
    if (err != 0) {
      std::lock_guard<std::mutex> s(f->state);
      f->unsynced.insert(unsynced.begin(), unsynced.end());
      return (void)fuse_reply_err(req, err);
    }
    err = commit(*f, cino);
    fuse_reply_err(req, err != 0 ? err : syncMeta());
  });
}

int CairnFs::syncMeta() {
  // Meta answers namespace changes once written, and syncs its log behind them: this waits
  // until everything it answered (this file's size and name included) is on stable storage.
  auto m = request();
  opOf(m).setSync();
  auto r = client_.meta(kj::mv(m));
  return replyOf(r).getErr();
}

void CairnFs::fsyncdir(fuse_req_t req) {
  guard(req, "fsyncdir", [&]() { fuse_reply_err(req, syncMeta()); });
}

int CairnFs::truncateData(OpenFile& f, uint64_t ino, uint64_t newSize) {
  // Zero the tail of the block holding the new end and drop later blocks of that chunk, so a
  // later extension reads zeros. Later chunks are dropped by meta.
  uint64_t index = newSize / chunkSize_;
  uint64_t inChunk = newSize - index * chunkSize_;
  if (inChunk == 0) return 0;
  ChunkLoc loc;
  int err = chunkFor(f, ino, index, false, loc);
  if (err == ENOENT) return 0;
  if (err != 0) return err;
  uint32_t block = static_cast<uint32_t>(inChunk / BLOCK);
  uint32_t partial = static_cast<uint32_t>(inChunk % BLOCK);
  uint32_t keep = block + (partial ? 1 : 0);
  if (partial) {
    std::vector<unsigned char> buf(BLOCK);
    err = readFresh(f, ino, loc, block, 1, buf.data());
    if (err != 0) return err;
    memset(buf.data() + partial, 0, BLOCK - partial);
    err = client_.writeBlocks(ino, loc, chunkBlocks_, block, 1, buf.data(), false);
    if (err != 0) return err;
    rememberChunk(f, loc);
  }
  return client_.truncateChunk(loc, keep);
}

void CairnFs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet) {
  guard(req, "setattr", [&]() {
    uint64_t cino = toCluster(ino);
    forgetDirAttr(cino);
    auto m = request();
    auto op = opOf(m).initSetattr();
    op.setIno(cino);
    auto a = op.initAttr();
    if (toSet & FUSE_SET_ATTR_MODE) {
      a.setSetMode(true);
      a.setMode(attr->st_mode);
    }
    if (toSet & FUSE_SET_ATTR_UID) {
      a.setSetUid(true);
      a.setUid(attr->st_uid);
    }
    if (toSet & FUSE_SET_ATTR_GID) {
      a.setSetGid(true);
      a.setGid(attr->st_gid);
    }
    if (toSet & FUSE_SET_ATTR_ATIME) {
      a.setSetAtime(true);
      a.setAtimeNs(fromTimespec(attr->st_atim));
    }
    if (toSet & FUSE_SET_ATTR_ATIME_NOW) {
      a.setSetAtime(true);
      a.setAtimeNow(true);
    }
    if (toSet & FUSE_SET_ATTR_MTIME) {
      a.setSetMtime(true);
      a.setMtimeNs(fromTimespec(attr->st_mtim));
    }
    if (toSet & FUSE_SET_ATTR_MTIME_NOW) {
      a.setSetMtime(true);
      a.setMtimeNow(true);
    }
    if (toSet & FUSE_SET_ATTR_CTIME) {
      a.setSetCtime(true);
      a.setCtimeNs(fromTimespec(attr->st_ctim));
    }
    std::shared_ptr<OpenFile> f = file(cino, (toSet & FUSE_SET_ATTR_SIZE) != 0);
    std::unique_lock<std::shared_mutex> lock;
    bool folded = false, binding = false;
    if (f) {
      f->changed = true;
      // Our own buffered data and unflushed size and mtime first: meta's view of the old size
      // must be right, and times set now must not be overwritten by a later commit. Without a
      // size change, the size commit travels in the setattr itself (one commit, not two: tar
      // sets owner, mode and times of every file it has just written).
      lock = std::unique_lock<std::shared_mutex>(f->mutex);
      int err = flushPending(*f, cino);  // also waits for background writes
      bool dirty;
      uint64_t size;
      {
        std::lock_guard<std::mutex> s(f->state);
        dirty = f->dirty;
        size = f->size;
      }
      if (err == 0 && dirty && !(toSet & FUSE_SET_ATTR_SIZE)) {
        auto c = op.initCommit();
        c.setIno(cino);
        c.setSize(size);
        c.setMtimeNs(wallClockNs());
        binding = addBind(*f, c);
        folded = true;
      } else if (err == 0) {
        err = commit(*f, cino);
      }
      if (err != 0) return (void)fuse_reply_err(req, err);
    }
    if (toSet & FUSE_SET_ATTR_SIZE) {
      uint64_t newSize = static_cast<uint64_t>(attr->st_size);
      int err = 0;
      auto g = request();
      opOf(g).setGetattr(cino);
      auto gr = client_.meta(kj::mv(g));
      auto greply = replyOf(gr);
      if (greply.getErr() != 0) return (void)fuse_reply_err(req, greply.getErr());
      if (newSize < greply.getAttr().getSize()) {
        err = truncateData(*f, cino, newSize);
        if (err != 0) return (void)fuse_reply_err(req, err);
      }
      a.setSetSize(true);
      a.setSize(newSize);
    }
    capnp::MallocMessageBuilder attrCopy;  // for a second attempt without the commit
    if (folded) attrCopy.setRoot(a.asReader());
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (binding && bindAnswered(reply.getErr())) {
      if (int e = afterBind(*f, cino, reply)) return (void)fuse_reply_err(req, e);
    }
    if (folded && (reply.getErr() == EDQUOT || reply.getErr() == EFBIG || reply.getErr() == EEXIST ||
                   (binding && reply.getErr() == ESTALE))) {
      // The size growth was refused: commit() forgets it, and the application hears at its
      // next write, fsync or close; the attribute change itself goes again, alone. (EEXIST:
      // our first chunk has just moved into the one recorded first; commit() commits the size.)
      if (int ce = commit(*f, cino); ce != 0) {
        std::lock_guard<std::mutex> s(f->state);
        if (f->asyncErr == 0) f->asyncErr = ce;
      }
      auto again = request();
      opOf(again).initSetattr().setIno(cino);
      opOf(again).getSetattr().setAttr(attrCopy.getRoot<proto::SetAttr>().asReader());
      r = client_.meta(kj::mv(again));
      reply = replyOf(r);
    }
    names_.dropAttr(ino);  // after the change: an answer read before it is not kept
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    if (f) {
      std::lock_guard<std::mutex> s(f->state);
      f->size = reply.getAttr().getSize();
      f->dirty = false;
      uint64_t keepChunks = (f->size + chunkSize_ - 1) / chunkSize_;
      f->chunks.erase(f->chunks.lower_bound(keepChunks), f->chunks.end());
      f->unsynced.erase(f->unsynced.lower_bound(keepChunks), f->unsynced.end());
      lock.unlock();
    }
    // The kernel refreshes a file's mode before a chown (to clear set-user-ID itself): that
    // getattr, right after tar's utimes, is answered with these. Not for a set-ID file: the
    // kernel would send the mode it read with the chown, and a mode changed elsewhere meanwhile
    // would be undone (without set-ID bits it sends none, and meta clears them itself).
    auto mode = reply.getAttr().getMode();
    if (S_ISREG(mode) && !(mode & (S_ISUID | S_ISGID))) noteAttr(cino, reply.getAttr());
    replyAttr(req, reply.getAttr());
  });
}

void CairnFs::readlink(fuse_req_t req, fuse_ino_t ino) {
  guard(req, "readlink", [&]() {
    auto m = request();
    opOf(m).setReadlink(toCluster(ino));
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    fuse_reply_readlink(req, reply.getTarget().cStr());
  });
}

void CairnFs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guard(req, "mknod", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    const fuse_ctx* ctx = fuse_req_ctx(req);
    auto m = request();
    auto op = opOf(m).initMknod();
    op.setParent(toCluster(parent));
    op.setName(name);
    op.setMode(mode);
    op.setRdev(static_cast<uint32_t>(rdev));
    op.setUid(ctx->uid);
    op.setGid(ctx->gid);
    op.setUmask(ctx->umask);  // meta applies it unless the directory has a default ACL
    op.setExclusive(true);
    uint64_t gen = names_.generation();
    auto sent = std::chrono::steady_clock::now();
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    auto reply = replyOf(r);
    nameChanged(toCluster(parent), name, true, reply, sent);
    names_.dropAttr(parent);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    if (S_ISDIR(mode))  // empty: every name is known
      known_.know(reply.getAttr().getIno(), reply.getAttr().getDirCookie());
    noteDirAttr(toCluster(parent), reply);
    replyMade(req, gen, parent, name, reply.getAttr(), sent);
  });
}

void CairnFs::symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guard(req, "symlink", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    const fuse_ctx* ctx = fuse_req_ctx(req);
    auto m = request();
    auto op = opOf(m).initSymlink();
    op.setParent(toCluster(parent));
    op.setName(name);
    op.setTarget(target);
    op.setUid(ctx->uid);
    op.setGid(ctx->gid);
    uint64_t gen = names_.generation();
    auto sent = std::chrono::steady_clock::now();
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    auto reply = replyOf(r);
    nameChanged(toCluster(parent), name, true, reply, sent);
    names_.dropAttr(parent);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    noteDirAttr(toCluster(parent), reply);
    replyMade(req, gen, parent, name, reply.getAttr(), sent);
  });
}

void CairnFs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newParent, const char* newName) {
  guard(req, "link", [&]() {
    if (int e = checkName(newName)) return (void)fuse_reply_err(req, e);
    auto m = request();
    auto op = opOf(m).initLink();
    op.setIno(toCluster(ino));
    op.setNewParent(toCluster(newParent));
    op.setNewName(newName);
    forgetDirAttr(toCluster(ino));  // its link count and ctime change
    uint64_t gen = names_.generation();
    auto sent = std::chrono::steady_clock::now();
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    auto reply = replyOf(r);
    nameChanged(toCluster(newParent), newName, true, reply, sent);
    names_.dropAttr(newParent);
    if (reply.getErr() != 0) {
      names_.dropAttr(ino);
      return (void)fuse_reply_err(req, reply.getErr());
    }
    noteDirAttr(toCluster(newParent), reply);
    replyMade(req, gen, newParent, newName, reply.getAttr(), sent);
  });
}

void CairnFs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
  guard(req, dir ? "rmdir" : "unlink", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    auto m = request();
    auto n = dir ? opOf(m).initRmdir() : opOf(m).initUnlink();
    n.setParent(toCluster(parent));
    n.setName(name);
    {
      // The removed inode (not known here) loses a link and its ctime changes: attributes
      // noted for it no longer hold (those of directories, for rmdir).
      std::lock_guard<std::mutex> lock(dirAttrMutex_);
      std::erase_if(dirAttrs_, [dir](const auto& e) { return dir || !S_ISDIR(e.second.st.st_mode); });
    }
    auto sent = std::chrono::steady_clock::now();
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    nameChanged(toCluster(parent), name, false, replyOf(r), sent);
    ownNamesChanged(parent, name, 0, nullptr, false);  // also when refused: the name may be gone
    if (replyOf(r).getErr() == 0) noteDirAttr(toCluster(parent), replyOf(r));
    fuse_reply_err(req, replyOf(r).getErr());
  });
}

void CairnFs::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newParent,
                     const char* newName, unsigned int flags) {
  guard(req, "rename", [&]() {
    if (int e = checkName(name)) return (void)fuse_reply_err(req, e);
    if (int e = checkName(newName)) return (void)fuse_reply_err(req, e);
    auto m = request();
    auto op = opOf(m).initRename();
    op.setParent(toCluster(parent));
    op.setName(name);
    op.setNewParent(toCluster(newParent));
    op.setNewName(newName);
    op.setFlags(flags);
    {
      std::lock_guard<std::mutex> lock(dirAttrMutex_);
      dirAttrs_.clear();  // both directories, and a moved directory itself, change
    }
    auto r = client_.meta(kj::mv(m));
    namespaceChanged();
    int err = replyOf(r).getErr();
    ownNamesChanged(parent, name, newParent, newName, (flags & RENAME_EXCHANGE) != 0);
    if (err != 0 || !(flags & RENAME_EXCHANGE)) {  // an exchange keeps both names
      nameChanged(toCluster(parent), name, false, err);
      nameChanged(toCluster(newParent), newName, true, err);
    }
    fuse_reply_err(req, err);
  });
}

void CairnFs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // The kernel may cache what we list (its copy is reset by its own changes of the directory,
  // and by ours through the invalidator); it keeps that copy for this open only when we listed
  // the directory to its end within the entry timeout and nothing changed it elsewhere since.
  fi->cache_readdir = 1;
  fi->keep_cache = listedLately(toCluster(ino)) ? 1 : 0;
  fuse_reply_open(req, fi);
}

void CairnFs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  listDir(req, ino, size, off, false);
}

void CairnFs::readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  listDir(req, ino, size, off, true);
}

namespace {
constexpr size_t MAX_KEPT_LISTING = 1024;  // entries of a listing kept for a second listing
}  // namespace

void CairnFs::listDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  guard(req, plus ? "readdirplus" : "readdir", [&]() {
    // Grown entry by entry up to `size`: the kernel asks with its whole buffer (1 MiB here) even
    // for a directory of one entry, and allocating and zeroing that much cost more than a
    // small directory's listing.
    std::string buf;
    size_t used = 0;
    // attr null: the name and type only (".", "..", or an entry meta sent no attributes for).
    auto add = [&](const char* name, uint64_t entryIno, uint32_t mode, off_t next,
                   const proto::Attr::Reader* attr) {
      size_t need;
      if (plus) {
        fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.attr.st_ino = entryIno;
        e.attr.st_mode = mode;
        if (attr) {  // counts as a lookup, as the kernel caches it
          struct stat st;
          fillStat(*attr, st);
          e = entryOf(st);
        }
        need = fuse_add_direntry_plus(req, nullptr, 0, name, &e, next);
        if (need > size - used) return false;
        buf.resize(used + need);
        fuse_add_direntry_plus(req, buf.data() + used, need, name, &e, next);
      } else {
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = entryIno;
        st.st_mode = mode;
        need = fuse_add_direntry(req, nullptr, 0, name, &st, next);
        if (need > size - used) return false;
        buf.resize(used + need);
        fuse_add_direntry(req, buf.data() + used, need, name, &st, next);
      }
      used += need;
      return true;
    };
    if (off < 1 && !add(".", ino, S_IFDIR, 1, nullptr))
      return (void)fuse_reply_buf(req, buf.data(), used);
    if (off < 2 && !add("..", ino, S_IFDIR, 2, nullptr))
      return (void)fuse_reply_buf(req, buf.data(), used);
    uint64_t after = off < 2 ? 2 : static_cast<uint64_t>(off);
    uint64_t dir = toCluster(ino);
    if (off >= 2 && takeDirEnd(dir, after)) return (void)fuse_reply_buf(req, nullptr, 0);
    if (off < 2) {
      std::optional<Listing> kept;
      {
        std::lock_guard<std::mutex> lock(dirEndMutex_);
        auto it = listings_.find(dir);
        if (it != listings_.end()) {
          if (std::chrono::steady_clock::now() - it->second.at < std::chrono::seconds(1))
            kept = std::move(it->second);
          listings_.erase(it);
        }
      }
      if (kept) {
        size_t added = 0;
        for (auto& e : kept->entries) {
          if (!add(e.name.c_str(), toFuse(e.ino), e.mode, static_cast<off_t>(e.cookie), nullptr))
            break;
          added++;
        }
        if (added == kept->entries.size())
          noteDirEnd(dir, added > 0 ? kept->entries.back().cookie : 2);
        if (options_.metrics)
          options_.metrics->counter("cairn_client_listings_kept_total",
                                    "Directory listings answered from the one kept here").inc();
        return (void)fuse_reply_buf(req, buf.data(), used);
      }
    }
    uint64_t gen = nsGen_.load();
    auto m = request();
    auto rd = opOf(m).initReaddir();
    rd.setIno(dir);
    rd.setAfter(after);
    // An entry with attributes takes about 150 bytes of the kernel's buffer, a bare one 32.
    uint32_t max = static_cast<uint32_t>(std::max<size_t>(16, size / (plus ? 128 : 32)));
    rd.setMaxEntries(max);
    rd.setAttrs(plus);
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    auto entries = reply.getEntries();
    uint32_t added = 0;
    for (auto e : entries) {
      auto attr = e.getAttr();
      if (!add(e.getName().cStr(), toFuse(e.getIno()), e.getMode(),
               static_cast<off_t>(e.getCookie()), plus && e.hasAttr() ? &attr : nullptr))
        break;
      added++;
    }
    // The last entries, all passed on: the kernel's next call (from the last cookie) is
    // answered "no more" without asking meta again.
    if (reply.getListEnd() && added == entries.size()) {
      if (added > 0) noteDirEnd(dir, entries[added - 1].getCookie());
      else if (off < 2) noteDirEnd(dir, 2);  // empty: the next call starts after ".."
      noteListed(dir);
      // The directory's own attributes: the kernel asks for them after a listing (which made
      // its atime unknown to it), and is answered with these once.
      noteDirAttr(dir, reply);
      if (off < 2 && entries.size() <= MAX_KEPT_LISTING) {
        Listing l;
        l.at = std::chrono::steady_clock::now();
        l.entries.reserve(entries.size());
        for (auto e : entries)
          l.entries.push_back(Listing::Entry{std::string(e.getName().cStr(), e.getName().size()),
                                              e.getIno(), e.getMode(), e.getCookie()});
        std::lock_guard<std::mutex> lock(dirEndMutex_);
        if (nsGen_.load() == gen) {
          if (listings_.size() >= 1024) listings_.clear();
          listings_[dir] = std::move(l);
        }
      }
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void CairnFs::statfs(fuse_req_t req, fuse_ino_t ino) {
  guard(req, "statfs", [&]() {
    auto m = request();
    opOf(m).setStatfsAt(toCluster(ino));  // inside a directory quota, the quota is the size
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    auto s = reply.getStatfs();
    struct statvfs st;
    memset(&st, 0, sizeof(st));
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = s.getTotalBytes() / 4096;
    st.f_bfree = s.getFreeBytes() / 4096;
    st.f_bavail = st.f_bfree;
    st.f_files = s.getFiles() + s.getFreeFiles();
    st.f_ffree = s.getFreeFiles();
    st.f_favail = st.f_ffree;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
  });
}

void CairnFs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                       size_t size, int flags) {
  guard(req, "setxattr", [&]() {
    changedElsewhere(toCluster(ino));
    // POSIX ACLs (system.posix_acl_*) arrive here too: meta checks them and keeps the mode in step.
    if (!options_.acl && strncmp(name, "system.posix_acl_", 17) == 0)
      return (void)fuse_reply_err(req, EOPNOTSUPP);
    auto m = request();
    auto x = opOf(m).initSetxattr();
    x.setIno(toCluster(ino));
    x.setName(name);
    x.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value), size));
    x.setFlags((flags & XATTR_CREATE ? 1u : 0u) | (flags & XATTR_REPLACE ? 2u : 0u));
    auto r = client_.meta(kj::mv(m));
    names_.dropAttr(ino);  // its ctime, and with an ACL its mode
    fuse_reply_err(req, replyOf(r).getErr());
  });
}

void CairnFs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guard(req, "getxattr", [&]() {
    if (!options_.acl && strncmp(name, "system.posix_acl_", 17) == 0)
      return (void)fuse_reply_err(req, EOPNOTSUPP);
    // The kernel asks for security.capability before every write (to drop file capabilities),
    // and for the access ACL at every chmod: a file without one is remembered for the
    // attribute timeout, or until it changes (here or elsewhere).
    int kind = absentKind(name);
    uint64_t cino = toCluster(ino);
    if (kind >= 0 && knownAbsent(cino, kind)) return (void)fuse_reply_err(req, ENODATA);
    auto m = request();
    auto x = opOf(m).initGetxattr();
    x.setIno(cino);
    x.setName(name);
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (kind >= 0 && reply.getErr() == ENODATA) rememberAbsent(cino, kind);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    auto v = reply.getValue();
    if (size == 0) return (void)fuse_reply_xattr(req, v.size());
    if (v.size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, reinterpret_cast<const char*>(v.begin()), v.size());
  });
}

void CairnFs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guard(req, "listxattr", [&]() {
    auto m = request();
    opOf(m).setListxattr(toCluster(ino));
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    std::string all;
    for (auto n : reply.getNames()) {
      all.append(n.cStr(), n.size());
      all.push_back('\0');
    }
    if (size == 0) return (void)fuse_reply_xattr(req, all.size());
    if (all.size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, all.data(), all.size());
  });
}

void CairnFs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guard(req, "removexattr", [&]() {
    changedElsewhere(toCluster(ino));
    auto m = request();
    auto x = opOf(m).initRemovexattr();
    x.setIno(toCluster(ino));
    x.setName(name);
    auto r = client_.meta(kj::mv(m));
    names_.dropAttr(ino);
    fuse_reply_err(req, replyOf(r).getErr());
  });
}

void CairnFs::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len) {
  guard(req, "fallocate", [&]() {
    if (off < 0 || len <= 0) return (void)fuse_reply_err(req, EINVAL);
    if (uint64_t(off) + uint64_t(len) > (1ull << 50)) return (void)fuse_reply_err(req, EFBIG);
    forgetDirAttr(toCluster(ino));
    // Space is not reserved ahead on chunk servers: the default mode extends the size, and
    // KEEP_SIZE alone changes nothing visible. PUNCH_HOLE (with KEEP_SIZE) and ZERO_RANGE make
    // the range read as zeros: whole chunks are dropped, partial ones are written with zeros.
    bool punch = mode & FALLOC_FL_PUNCH_HOLE, zero = mode & FALLOC_FL_ZERO_RANGE;
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
      return (void)fuse_reply_err(req, EOPNOTSUPP);
    if ((punch && !(mode & FALLOC_FL_KEEP_SIZE)) || (punch && zero))
      return (void)fuse_reply_err(req, EINVAL);
    if (!punch && !zero && (mode & FALLOC_FL_KEEP_SIZE)) return (void)fuse_reply_err(req, 0);
    uint64_t cino = toCluster(ino);
    auto f = file(cino, true);
    f->changed = true;
    std::unique_lock<std::shared_mutex> lock(f->mutex);
    if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
    // Meta punches only the chunks it knows of.
    if (int err = bindNow(*f, cino, true); err != 0) return (void)fuse_reply_err(req, err);
    uint64_t end = uint64_t(off) + uint64_t(len);
    if (punch || zero) {
      uint64_t size;
      {
        std::lock_guard<std::mutex> s(f->state);
        size = f->size;
      }
      if (int err = zeroRange(*f, cino, uint64_t(off), std::min(end, size), size))
        return (void)fuse_reply_err(req, err);
      if (punch || (mode & FALLOC_FL_KEEP_SIZE)) return (void)fuse_reply_err(req, commit(*f, cino));
    }
    {
      std::lock_guard<std::mutex> s(f->state);
      if (end > f->size) {
        f->size = end;
        f->dirty = true;
      }
    }
    fuse_reply_err(req, commit(*f, cino));
  });
}

int CairnFs::zeroRange(OpenFile& f, uint64_t cino, uint64_t off, uint64_t end, uint64_t size) {
  // Callers hold f.mutex exclusively, with the write-behind buffer written out.
  if (off >= end) return 0;
  uint64_t firstWhole = UINT64_MAX, wholeCount = 0;
  static const std::vector<char> zeros(1 << 20, 0);
  for (uint64_t index = off / chunkSize_; index <= (end - 1) / chunkSize_; index++) {
    uint64_t base = index * chunkSize_;
    uint64_t from = std::max(off, base), to = std::min(end, base + chunkSize_);
    // A chunk zeroed from its start to its end, or to the end of the file, goes entirely.
    if (from == base && (to == base + chunkSize_ || to >= size)) {
      if (firstWhole == UINT64_MAX) firstWhole = index;
      wholeCount++;
      continue;
    }
    ChunkLoc loc;
    int err = chunkFor(f, cino, index, false, loc);
    if (err == ENOENT) continue;  // a hole already
    if (err != 0) return err;
    for (uint64_t pos = from; pos < to;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(to - pos, zeros.size()));
      if ((err = writeRange(f, cino, zeros.data(), n, pos, size)) != 0) return err;
      pos += n;
    }
  }
  if (wholeCount > 0) {
    auto m = request();
    auto p = opOf(m).initPunch();
    p.setIno(cino);
    p.setFirst(firstWhole);
    p.setCount(wholeCount);
    auto r = client_.meta(kj::mv(m));
    if (int err = replyOf(r).getErr()) return err;
    std::lock_guard<std::mutex> s(f.state);
    for (uint64_t i = firstWhole; i < firstWhole + wholeCount; i++) {
      f.chunks.erase(i);
      f.unsynced.erase(i);
    }
  }
  std::lock_guard<std::mutex> s(f.state);
  f.dirty = true;  // mtime
  return 0;
}

void CairnFs::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence) {
  guard(req, "lseek", [&]() {
    if (whence != SEEK_DATA && whence != SEEK_HOLE) return (void)fuse_reply_err(req, EINVAL);
    if (off < 0) return (void)fuse_reply_err(req, ENXIO);
    uint64_t cino = toCluster(ino);
    uint64_t size = 0;
    // Chunks this mount holds that meta may not list yet: the first chunk of a new file is
    // written before meta records it (bound by the next commit).
    std::set<uint64_t> present;
    if (auto f = file(cino, false)) {
      std::unique_lock<std::shared_mutex> lock(f->mutex);
      if (int err = flushPending(*f, cino); err != 0) return (void)fuse_reply_err(req, err);
      for (const auto& [index, loc] : f->chunks)
        if (loc.unbound) present.insert(index);
      std::lock_guard<std::mutex> s(f->state);
      size = f->size;
    }
    // Holes are the chunks never written (or dropped); data is every chunk meta lists.
    auto m = request();
    opOf(m).setChunkList(cino);
    auto r = client_.meta(kj::mv(m));
    auto reply = replyOf(r);
    if (reply.getErr() != 0) return (void)fuse_reply_err(req, reply.getErr());
    auto g = request();
    opOf(g).setGetattr(cino);
    auto gr = client_.meta(kj::mv(g));
    if (replyOf(gr).getErr() == 0) size = std::max(size, replyOf(gr).getAttr().getSize());
    uint64_t pos = uint64_t(off);
    if (pos >= size) return (void)fuse_reply_err(req, ENXIO);
    for (auto c : reply.getChunks()) present.insert(c.getIndex());
    uint64_t index = pos / chunkSize_;
    uint64_t lastIndex = (size - 1) / chunkSize_;
    if (whence == SEEK_DATA) {
      auto it = present.lower_bound(index);
      if (it == present.end() || *it > lastIndex) return (void)fuse_reply_err(req, ENXIO);
      return (void)fuse_reply_lseek(req, static_cast<off_t>(std::max(pos, *it * chunkSize_)));
    }
    while (index <= lastIndex && present.count(index)) index++;
    uint64_t hole = std::min(size, std::max(pos, index * chunkSize_));
    fuse_reply_lseek(req, static_cast<off_t>(hole));
  });
}

namespace {
const fuse_lowlevel_ops OPS = [] {
  fuse_lowlevel_ops o;
  memset(&o, 0, sizeof(o));
  o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<CairnFs*>(userdata)->init(conn); };
  o.lookup = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r)->lookup(r, p, n); };
  o.forget = [](fuse_req_t r, fuse_ino_t, uint64_t) { fuse_reply_none(r); };
  o.getattr = [](fuse_req_t r, fuse_ino_t i, fuse_file_info*) { self(r)->getattr(r, i); };
  o.setattr = [](fuse_req_t r, fuse_ino_t i, struct stat* a, int s, fuse_file_info*) {
    self(r)->setattr(r, i, a, s);
  };
  o.readlink = [](fuse_req_t r, fuse_ino_t i) { self(r)->readlink(r, i); };
  o.mknod = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, dev_t d) {
    self(r)->mknod(r, p, n, m, d);
  };
  o.mkdir = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m) {
    self(r)->mknod(r, p, n, S_IFDIR | (m & 07777), 0);
  };
  o.unlink = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r)->unlink(r, p, n, false); };
  o.rmdir = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r)->unlink(r, p, n, true); };
  o.symlink = [](fuse_req_t r, const char* t, fuse_ino_t p, const char* n) {
    self(r)->symlink(r, t, p, n);
  };
  o.rename = [](fuse_req_t r, fuse_ino_t p, const char* n, fuse_ino_t np, const char* nn,
                unsigned int f) { self(r)->rename(r, p, n, np, nn, f); };
  o.link = [](fuse_req_t r, fuse_ino_t i, fuse_ino_t np, const char* nn) {
    self(r)->link(r, i, np, nn);
  };
  o.open = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->open(r, i, fi); };
  o.read = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info*) {
    self(r)->read(r, i, s, o);
  };
  o.write = [](fuse_req_t r, fuse_ino_t i, const char* b, size_t s, off_t o, fuse_file_info*) {
    self(r)->write(r, i, b, s, o);
  };
  o.flush = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->flush(r, i, fi); };
  o.release = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->release(r, i, fi); };
  o.getlk = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l) {
    self(r)->getlk(r, i, fi, l);
  };
  o.setlk = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l, int sleep) {
    self(r)->setlk(r, i, fi, l, sleep);
  };
  o.flock = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, int op) {
    self(r)->flock(r, i, fi, op);
  };
  o.fsync = [](fuse_req_t r, fuse_ino_t i, int d, fuse_file_info*) { self(r)->fsync(r, i, d); };
  o.opendir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->opendir(r, i, fi); };
  o.readdir = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info*) {
    self(r)->readdir(r, i, s, o);
  };
  o.readdirplus = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info*) {
    self(r)->readdirplus(r, i, s, o);
  };
  o.releasedir = [](fuse_req_t r, fuse_ino_t, fuse_file_info*) { fuse_reply_err(r, 0); };
  o.fsyncdir = [](fuse_req_t r, fuse_ino_t, int, fuse_file_info*) { self(r)->fsyncdir(r); };
  o.statfs = [](fuse_req_t r, fuse_ino_t ino) { self(r)->statfs(r, ino); };
  o.setxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, const char* v, size_t s, int f) {
    self(r)->setxattr(r, i, n, v, s, f);
  };
  o.getxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, size_t s) {
    self(r)->getxattr(r, i, n, s);
  };
  o.listxattr = [](fuse_req_t r, fuse_ino_t i, size_t s) { self(r)->listxattr(r, i, s); };
  o.removexattr = [](fuse_req_t r, fuse_ino_t i, const char* n) { self(r)->removexattr(r, i, n); };
  o.create = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, fuse_file_info* fi) {
    self(r)->create(r, p, n, m, fi);
  };
  o.lseek = [](fuse_req_t r, fuse_ino_t i, off_t off, int whence, fuse_file_info*) {
    self(r)->lseek(r, i, off, whence);
  };
  o.fallocate = [](fuse_req_t r, fuse_ino_t i, int m, off_t o, off_t l, fuse_file_info*) {
    self(r)->fallocate(r, i, m, o, l);
  };
  return o;
}();
}  // namespace

const fuse_lowlevel_ops* CairnFs::operations() { return &OPS; }

}  // namespace cairn::fs
