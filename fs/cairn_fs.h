// The FUSE low-level filesystem of mount.cairn.
//
// Inode numbers are the cluster's, except that the mounted directory is FUSE_ROOT_ID.
// Lock order: filesMutex_ before OpenFile::mutex; no lock is held across a call into the
// cluster except the one OpenFile lock of the file being read or written.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <chrono>
#include <optional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "fs/client.h"
#include "fs/known_dirs.h"
#include "fs/invalidator.h"
#include "fs/name_cache.h"
#include "rpc/workers.h"
#include "rpc/metrics.h"

namespace cairn::fs {

struct FsOptions {
  Metrics* metrics = nullptr;  // per-operation counts and latency, bytes, chunk cache hits
  double attrTimeoutSec = 1.0;
  double entryTimeoutSec = 1.0;
  bool writebackCache = true;
  bool acl = true;  // POSIX ACLs (-o noacl: refused with EOPNOTSUPP)
  uint32_t readaheadBytes = 1 << 20;  // offered to the kernel at INIT (it keeps the smaller)
  double recordAfterSec = 2.0;  // a written, uncommitted first chunk is recorded after this
  size_t nameCacheEntries = 65536;  // names (and attributes) kept past the kernel's timeouts
};

class CairnFs final : public OpenFiles {
 public:
  CairnFs(ClusterClient& client, uint64_t rootIno, uint64_t chunkSizeBytes, FsOptions options);

  static const fuse_lowlevel_ops* operations();
  // The session the operations are served on (for notifications sent from them).
  void setSession(fuse_session* se) { session_ = se; }
  // The session is ending: a lock request still waiting gives up (ENOLCK) instead of waiting on.
  void endWaits() { ending_ = true; }

  // The operations, called from FUSE worker threads.
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void getattr(fuse_req_t req, fuse_ino_t ino);
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newParent, const char* newName);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newParent,
              const char* newName, unsigned int flags);
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  // File locks, held by meta for every client (fs/locks.cc).
  void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock);
  void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep);
  void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op);
  void fsync(fuse_req_t req, fuse_ino_t ino, int datasync);
  void fsyncdir(fuse_req_t req);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  // The same with each entry's attributes, which the kernel caches as if looked up (rm -r,
  // ls -l and find then ask nothing per entry).
  void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void listDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
  // Where a listing just ended (meta sent its last entries): the kernel's next call, from that
  // cookie, is answered "no more" here, once and within a second (entries made meanwhile may
  // or may not appear in a listing under way, as POSIX allows).
  void noteDirEnd(uint64_t dir, uint64_t cookie);
  bool takeDirEnd(uint64_t dir, uint64_t cookie);
  struct DirEnd {
    uint64_t cookie;
    std::chrono::steady_clock::time_point at;
  };
  // Directories listed to their end lately: an opendir within a second keeps the kernel's
  // cached listing (FOPEN_CACHE_DIR), which our own changes reset in the kernel and changes
  // elsewhere reset through the invalidator (changedElsewhere of the directory).
  void noteListed(uint64_t dir);
  bool listedLately(uint64_t dir);
  // A small directory's whole listing, kept once and for a second: a program that lists a
  // directory twice in a row (rm -r: once to count, once to remove) is answered the second
  // time here, with names only (the kernel looks up what it no longer knows). Any change of
  // the namespace through this mount forgets every one (nsGen_ tells a listing that crossed
  // one not to keep what it read); a change elsewhere forgets that directory's.
  struct Listing {
    struct Entry {
      std::string name;
      uint64_t ino;
      uint32_t mode;
      uint64_t cookie;
    };
    std::vector<Entry> entries;
    std::chrono::steady_clock::time_point at;
  };
  void namespaceChanged();
  // Directories whose every name is known here (made by us, or listed whole), for an entry
  // timeout from when that was learnt: a lookup of another name is answered "no such entry"
  // without asking meta, as a negative entry the kernel cached then would be. Our own changes
  // keep the names current (a failed one forgets the directory: its state is unknown); changes
  // elsewhere forget it (changedElsewhere).
  // Our own change of a name in `dir`, with meta's reply to it, asked at `sent` (KnownDirs).
  void nameChanged(uint64_t dir, const char* name, bool added, int err);
  void nameChanged(uint64_t dir, const char* name, bool added, proto::MetaReply::Reader reply,
                   std::chrono::steady_clock::time_point sent);
  std::mutex dirEndMutex_;  // guards dirEnds_, listed_ and listings_; taken alone
  std::unordered_map<uint64_t, DirEnd> dirEnds_;
  std::unordered_map<uint64_t, std::chrono::steady_clock::time_point> listed_;
  std::unordered_map<uint64_t, Listing> listings_;
  std::atomic<uint64_t> nsGen_{0};
  void statfs(fuse_req_t req, fuse_ino_t ino);
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len);
  // SEEK_DATA and SEEK_HOLE, at chunk granularity (a chunk never written is a hole).
  void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence);

  // OpenFiles, for this mount's session with meta.
  std::vector<Ref> openNow() override;
  std::vector<Ref> takeClosed() override;
  void putBackClosed(std::vector<Ref> refs) override;
  void changedElsewhere(uint64_t ino) override;
  void entryChangedElsewhere(uint64_t parent, std::string_view name) override;
  void feedVouches(std::chrono::steady_clock::time_point sent) override;
  void feedLost() override;
  uint32_t watchWaitMs() override;

 private:
  // Lock order: mutex, then state. `mutex` is held shared by reads and block-aligned writes
  // (which touch disjoint blocks or whole blocks) and exclusively by partial-block writes
  // (read-modify-write), truncation, flush and fsync. `state` guards the fields below it and is
  // never held across a call to the cluster.
  // A background write not yet begun (its bytes; taken: a writer has it, with state held).
  struct Queued {
    uint64_t off;
    std::string data;
    bool taken;
  };
  struct OpenFile {
    std::shared_mutex mutex;
    std::mutex state;
    int refs = 0;
    uint64_t openGen = 0;     // of the open that took refs from 0 (told to meta)
    uint64_t size = 0;        // best known size (meta's, or ours when larger)
    bool dirty = false;       // size/mtime not yet committed to meta
    std::atomic<bool> changed{false};  // written, truncated or allocated here since first open
    std::set<uint64_t> unsynced;             // chunks written since the last fsync
    std::map<uint64_t, ChunkLoc> chunks;     // index -> location
    // The first chunk meta offered when we created the file (used by the first write of it,
    // then bound by the next commit), and which blocks of it were written while unbound: they
    // move to another writer's chunk if that one was recorded first.
    std::optional<ChunkLoc> offered;
    std::vector<bool> unboundWritten;
    std::chrono::steady_clock::time_point offeredAt;     // when meta offered it
    std::chrono::steady_clock::time_point unboundSince;  // when the offer was taken
    // Small consecutive writes not yet sent (write-behind), guarded by `mutex` held
    // exclusively; `pendingBytes` mirrors pending.size() for a check without the lock.
    std::string pending;
    uint64_t pendingOff = 0;
    uint64_t sizeBeforePending = 0;  // the file's size before the buffered writes (state)
    std::atomic<size_t> pendingBytes{0};
    // Whole-block writes sent in the background (state): how many, their bytes, and the first
    // error one of them met, told at the next write, read, flush, fsync or close.
    int inflight = 0;
    size_t inflightBytes = 0;
    std::multimap<uint64_t, uint64_t> inflightRanges;  // start -> end of each, for ordering
    // Those not yet begun, by offset: a writer takes the others of the same chunk with its own.
    std::map<uint64_t, std::shared_ptr<Queued>> queued;
    int asyncErr = 0;
    std::condition_variable drained;  // with `state`
  };
  static constexpr size_t WRITE_BEHIND_BYTES = 1 << 20;
  static constexpr size_t ASYNC_BYTES_PER_FILE = 8 << 20;  // background writes of one file
  static constexpr size_t ASYNC_BYTES = 64 << 20;           // of the whole mount
  static constexpr size_t MAX_BATCH_BLOCKS = 256;          // blocks of one scattered write

  uint64_t toCluster(fuse_ino_t ino) const { return ino == FUSE_ROOT_ID ? rootIno_ : ino; }
  fuse_ino_t toFuse(uint64_t ino) const { return ino == rootIno_ ? FUSE_ROOT_ID : ino; }
  void fillStat(proto::Attr::Reader a, struct stat& st) const;
  // A positive entry for `st`, cached by the kernel for the entry and attribute timeouts.
  fuse_entry_param entryOf(const struct stat& st) const;
  void replyAttr(fuse_req_t req, proto::Attr::Reader a);
  std::shared_ptr<OpenFile> file(uint64_t ino, bool create);
  // A copy of the chunk's location (asking meta when not cached).
  int chunkFor(OpenFile& f, uint64_t ino, uint64_t index, bool allocate, ChunkLoc& out);
  void forgetChunk(OpenFile& f, uint64_t index);
  void rememberChunk(OpenFile& f, const ChunkLoc& loc);
  // Reads blocks of one chunk, refreshing a stale location from meta.
  int readFresh(OpenFile& f, uint64_t ino, ChunkLoc& loc, uint32_t first, uint32_t count,
                unsigned char* out);
  int readRange(OpenFile& f, uint64_t ino, uint64_t off, size_t len, unsigned char* out);
  int commit(OpenFile& f, uint64_t ino);
  int syncMeta();
  // The commit's bind of an unbound first chunk, when there is one (callers hold f.mutex).
  bool addBind(OpenFile& f, proto::MetaRequest::CommitWriteOp::Builder op);
  // After a commit that carried a bind: bound now (ok), or another chunk was recorded first
  // (EEXIST, `reply` names it): our blocks move into it. Returns an errno.
  int afterBind(OpenFile& f, uint64_t ino, proto::MetaReply::Reader reply);
  int moveUnbound(OpenFile& f, uint64_t ino, ChunkLoc winner);
  // A commit of nothing but the bind (a write to the unbound chunk failed: meta must know the
  // chunk before it can change its chain; or the chunk has been unbound for a while: meta
  // takes offers back after max(10 s, gc grace / 2)). Moving the blocks into another chunk
  // (`mayMove`) needs f.mutex held exclusively with no write in flight; without, it is EIO.
  int bindNow(OpenFile& f, uint64_t ino, bool mayMove);
  void tick() override;  // binds chunks unbound for options_.recordAfterSec or more
  // Writes [off, off + size) through the replica chains (read-modify-write of partial blocks).
  // Callers hold f.mutex: exclusively when a block is partial.
  // `fileSize`: the size of what is stored (blocks past it read as zeros, not from servers).
  int writeRange(OpenFile& f, uint64_t cino, const char* data, size_t size, uint64_t off,
                 uint64_t fileSize);
  // Sends whole blocks [off, off + data.size()) in the background, after any background write
  // it overlaps (so the last write wins). Callers hold f.mutex (shared or exclusive).
  int writeBehind(const std::shared_ptr<OpenFile>& f, uint64_t cino, std::string data,
                  uint64_t off);
  // Takes `piece` off f.queued, with the other queued pieces of its chunk (up to
  // MAX_BATCH_BLOCKS blocks), sorted by offset. Callers hold f.state.
  void takeQueued(OpenFile& f, const std::shared_ptr<Queued>& piece,
                  std::vector<std::shared_ptr<Queued>>& batch);
  // Writes a taken batch: one piece as writeRange does, several in one scattered write.
  int writeQueued(OpenFile& f, uint64_t cino, const std::vector<std::shared_ptr<Queued>>& batch);
  // Writes `count` whole blocks of chunk `index` through its chain: to blocks first.. or, with
  // `at`, to blocks at[i] (ascending). Binds an unbound chunk whose write failed, follows a
  // changed chain (ESTALE) and notes the chunk unsynced. ENOSYS: `at` is not understood there.
  int sendBlocks(OpenFile& f, uint64_t cino, uint64_t index, ChunkLoc& loc, uint32_t first,
                 uint32_t count, const uint32_t* at, const unsigned char* blocks);
  // The blocks [first, first + count) of a chunk with [pos, end) replaced by `data`: partial
  // head and tail blocks read from the servers (zeros past `fileSize`).
  int mergeBlocks(OpenFile& f, uint64_t cino, ChunkLoc& loc, uint32_t first, uint32_t count,
                  uint64_t pos, uint64_t end, uint64_t firstStart, uint64_t lastStart,
                  uint64_t fileSize, const char* data, unsigned char* plain);
  // Waits for the file's background writes; their first error (once).
  int drainWrites(OpenFile& f);
  // Writes out the write-behind buffer. Callers hold f.mutex exclusively.
  int flushPending(OpenFile& f, uint64_t cino);
  int truncateData(OpenFile& f, uint64_t ino, uint64_t newSize);
  // [off, end) reads as zeros after it (punch hole, zero range): whole chunks are dropped by
  // meta, partial ones written with zeros. Callers hold f.mutex exclusively.
  int zeroRange(OpenFile& f, uint64_t cino, uint64_t off, uint64_t end, uint64_t size);
  // Runs fn, answering EIO (and logging) when the cluster cannot be reached.
  template <typename Fn>
  void guard(fuse_req_t req, const char* op, Fn&& fn);

  ClusterClient& client_;
  fuse_session* session_ = nullptr;
  uint64_t rootIno_;
  uint64_t chunkSize_;
  uint64_t chunkBlocks_;
  FsOptions options_;
  Counter* writtenBytes_;  // of options_.metrics (null without)
  Counter* scatteredBlocks_;
  std::atomic<bool> scatteredWrites_{true};  // false once a chunk server refused writeAt
  Counter* knownAbsent_;   // lookups answered here (null without metrics)
  KnownDirs known_;
  // Names and attributes kept past the kernel's timeouts while the change feed vouches for them
  // (fs/name_cache.h), by FUSE inode number. Never used for a file this mount has open or holds
  // unwritten data of (files_): its size and times are the open's own. Our own changes drop what
  // they touch; a file written here loses its attributes at each write and at its last close.
  NameCache names_;
  Counter* namesAnswered_ = nullptr;  // lookups answered from names_
  Counter* attrsAnswered_ = nullptr;  // getattrs answered from names_
  bool heldHere(uint64_t cino);       // in files_ (open, or data not yet committed)
  // Keeps what meta answered for (parent, name) or an inode, asked at `asked` with generation
  // `gen` of names_, unless the file is held here.
  void keepEntry(uint64_t gen, fuse_ino_t parent, const char* name, const struct stat& st,
                 std::chrono::steady_clock::time_point asked);
  void keepAttr(uint64_t gen, const struct stat& st, std::chrono::steady_clock::time_point asked);
  // Answers the kernel with what our own change made, (parent, name) naming the inode of `a`,
  // and keeps it (NameCache::putOwn, with `gen` read before asking at `asked`).
  void replyMade(fuse_req_t req, uint64_t gen, fuse_ino_t parent, const char* name,
                 proto::Attr::Reader a, std::chrono::steady_clock::time_point asked);
  // After our own unlink or rmdir (newName null) or rename, before the kernel hears the result:
  // the names, their directories' attributes and those of the inodes they named are dropped.
  void ownNamesChanged(fuse_ino_t parent, const char* name, fuse_ino_t newParent,
                       const char* newName, bool exchange);
  // Sends one lock request; granted, or a conflict in `conflict` (may be null). With `wait`, asks
  // again (backing off) until granted or the request is interrupted (EINTR).
  int lockRequest(fuse_req_t req, uint64_t cino, uint64_t owner, uint32_t pid, int type,
                  uint64_t start, uint64_t end, bool flock, bool wait, bool test,
                  struct flock* conflict);
  // Releases the locks of `owner` on `cino` if this mount holds any (at close).
  void releaseLocks(uint64_t cino, uint64_t owner, bool flock);
  std::atomic<bool> ending_{false};
  std::mutex locksMutex_;  // guards heldLocks_; taken alone
  std::set<std::tuple<uint64_t, uint64_t, bool>> heldLocks_;  // (ino, owner, flock) with locks

  // Whether the file's data is as it was when this mount last opened it (then open keeps the
  // kernel's cached pages); records the version seen now.
  bool unchangedSinceCached(uint64_t cino, proto::Attr::Reader a);
  struct CachedVersion {
    int64_t mtimeNs = 0, ctimeNs = 0;
    uint64_t size = 0;
    bool operator==(const CachedVersion&) const = default;
  };
  static constexpr size_t MAX_CACHED_VERSIONS = 1 << 17;
  std::mutex cachedMutex_;  // guards cached_; taken alone
  std::unordered_map<uint64_t, CachedVersion> cached_;
  std::mutex filesMutex_;
  std::unordered_map<uint64_t, std::shared_ptr<OpenFile>> files_;
  // Opens and closes for meta: a file's first open takes a new generation; its last close
  // queues (ino, generation) for the next watch (see fs/invalidator.h).
  // The file for an open now starting (refs taken), and the generation of that open.
  std::shared_ptr<OpenFile> acquire(uint64_t ino, uint64_t& gen);
  void closed(uint64_t ino, uint64_t gen);
  std::atomic<uint64_t> openGens_{0};
  // Attributes the kernel asks for again and again, remembered as absent (see getxattr): which
  // of them `name` is (-1: none), and whether `ino` is known to be without it.
  static int absentKind(const char* name);
  bool knownAbsent(uint64_t ino, int kind);
  void rememberAbsent(uint64_t ino, int kind);
  // A directory's attributes from the reply to a change made in it here: the kernel drops its
  // copy after each such change and asks at once; that one getattr is answered from here.
  // Forgotten when the directory changes elsewhere, by setattr or xattrs here, or any rename.
  // The same for a regular file's attributes from its creation or a setattr here (forgotten
  // by any write, commit or fallocate here).
  void noteDirAttr(uint64_t dir, proto::MetaReply::Reader reply);
  void noteAttr(uint64_t ino, proto::Attr::Reader attr);
  bool takeDirAttr(uint64_t dir, struct stat& st);
  void forgetDirAttr(uint64_t dir);
  std::mutex dirAttrMutex_;  // guards dirAttrs_; taken alone
  struct DirAttr {
    struct stat st;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<uint64_t, DirAttr> dirAttrs_;
  std::mutex absentMutex_;  // guards absent_ (until when each kind is known absent); taken alone
  std::unordered_map<uint64_t, std::array<std::chrono::steady_clock::time_point, 3>> absent_;
  std::mutex closedMutex_;  // guards closed_; taken last
  std::vector<Ref> closed_;
  // Background whole-block writes: their bytes across the mount (asyncMutex_, taken alone),
  // and the threads sending them (last member: destroyed first, after finishing its queue).
  std::mutex asyncMutex_;
  std::condition_variable asyncRoom_;
  size_t asyncBytes_ = 0;
  TaskQueue writers_{16};
};

// Every operation runs inside guard: its latency is measured, and an exception (the cluster out
// of reach) becomes EIO with a log line instead of a lost request.
template <typename Fn>
void CairnFs::guard(fuse_req_t req, const char* op, Fn&& fn) {
  std::optional<ScopedLatency> latency;
  if (options_.metrics) {
    // Looked up once per thread and operation, not per request (the registry takes a lock).
    thread_local std::map<std::pair<const Metrics*, const char*>, Histogram*> byOp;
    auto& h = byOp[{options_.metrics, op}];
    if (!h)
      h = &options_.metrics->histogram("cairn_client_request_seconds",
                                       "FUSE request latency by operation",
                                       std::string("op=\"") + op + "\"");
    latency.emplace(*h);
  }
  try {
    fn();
  } catch (kj::Exception& e) {
    spdlog::error("{}: {}", op, e.getDescription().cStr());
    names_.clear();  // a change may have been made without our hearing of it
    fuse_reply_err(req, EIO);
  } catch (std::exception& e) {
    spdlog::error("{}: {}", op, e.what());
    names_.clear();
    fuse_reply_err(req, EIO);
  }
  latency.reset();
  try {
    client_.settle();  // answered: now what the thread's connections owe their servers
  } catch (kj::Exception& e) {
    spdlog::warn("{}: {}", op, e.getDescription().cStr());
  }
}

}  // namespace cairn::fs
