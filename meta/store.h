// The LMDB environment of one meta server and the encoding of its tables. Keys are big-endian so
// ranges scan in order. See docs/formats.md.
//
//   inodes     ino                      -> InodeRecord
//   dentries   parent ino || name       -> child ino, mode, cookie
//   cookies    parent ino || cookie     -> name          (readdir order, stable under change)
//   symlinks   ino                      -> target
//   xattrs     ino || name              -> value
//   chunks     ino || index             -> ChunkRecord
//   servers    server id                -> uuid, addr, host
//   garbage    chunk id                 -> time (ns) of the last addition, server ids still
//                                          holding it
//   replies    client id || seq         -> time, reply    (retried mutations answer the same)
//   replytime  time || client id || seq -> ""            (deterministic expiry of replies)
//   log        index                    -> Command
//   counters   name                     -> u64 or bytes ("applied": last applied Raft index)
//   members    meta server id           -> address
//   owners     chunk id                 -> ino || index   (who refers to a chunk)
//   quotas     directory ino            -> QuotaRecord    (limits and usage of its subtree)
//   locks      ino                      -> lock records   (meta/locks.h; POSIX and flock locks)
#pragma once

#include <lmdb.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace cairn::meta {

constexpr uint64_t ROOT_INO = 1;
constexpr uint64_t FIRST_COOKIE = 3;  // 1 and 2 are "." and ".."

struct InodeRecord {
  uint32_t format = 1;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint32_t rdev = 0;
  uint64_t size = 0;
  int64_t atimeNs = 0;
  int64_t mtimeNs = 0;
  int64_t ctimeNs = 0;
  uint64_t parent = 0;      // directories: the one parent (for the rename loop rule)
  uint64_t nextCookie = 0;  // directories: the next readdir cookie
  uint64_t realm = 0;       // the nearest directory with a quota above this inode (0: none)
};

// A directory quota. Usage counts every inode below the directory (not the directory itself)
// and their sizes, nested quota directories included; `parentRealm` is the directory's own
// realm, so a change is charged up the chain of enclosing quotas.
struct QuotaRecord {
  uint64_t limitBytes = 0;   // 0: unlimited
  uint64_t limitInodes = 0;  // 0: unlimited
  uint64_t usedBytes = 0;
  uint64_t usedInodes = 0;
  uint64_t parentRealm = 0;
};

struct DentryRecord {
  uint64_t ino = 0;
  uint32_t mode = 0;
  uint64_t cookie = 0;
};

struct ChunkRecord {
  uint64_t id = 0;
  uint64_t version = 0;
  std::vector<uint32_t> servers;
};

struct ServerRecord {
  std::string uuid;
  std::string addr;
  std::string host;
  std::string zone;
  std::string rack;
  bool draining = false;
};

// Copies waiting for deletion: the servers that must delete them and when the last was added.
struct GarbageRecord {
  int64_t sinceNs = 0;
  std::vector<uint32_t> servers;
};

std::string be64(uint64_t v);
uint64_t readBe64(std::string_view s, size_t at = 0);

// A transaction; aborts unless committed. Not shared between threads.
class Txn {
 public:
  Txn(MDB_env* env, bool write);
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  void commit();  // throws on failure (the store must then be reopened)
  MDB_txn* raw() { return txn_; }

  std::optional<std::string> get(MDB_dbi dbi, std::string_view key);
  void put(MDB_dbi dbi, std::string_view key, std::string_view value);
  bool del(MDB_dbi dbi, std::string_view key);

 private:
  friend class Store;
  struct Borrowed {};
  Txn(Borrowed, MDB_txn* txn) : txn_(txn), owned_(false) {}  // neither committed nor aborted
  MDB_txn* txn_ = nullptr;
  bool owned_ = true;
};

// Iterates keys with a given prefix, from `start` (inclusive) on.
class Cursor {
 public:
  Cursor(Txn& txn, MDB_dbi dbi, std::string prefix, std::string start);
  ~Cursor();
  bool valid() const { return valid_; }
  std::string_view key() const { return key_; }
  std::string_view value() const { return value_; }
  void next();

 private:
  void load(int rc);
  MDB_cursor* cursor_ = nullptr;
  std::string prefix_;
  bool valid_ = false;
  std::string_view key_, value_;
};

// The state machine's LMDB environment, opened with MDB_NOSYNC: a commit reaches the page
// cache only, and what makes a change durable is the Raft log, synced before the change is
// applied. A process that dies leaves a consistent store (LMDB writes its meta page last), so a
// restart in the same boot trusts it; a power loss or crash of the machine may leave any mix of
// pages on disk. The store therefore records the boot it is open in (DATA/open-boot, removed at
// a clean close, after a sync): found under another boot, the store is not trusted, and the
// Raft node rebuilds it from its last snapshot and the log before using it.
class Store {
 public:
  explicit Store(const std::string& dir);
  // Opened after an unclean stop under another boot: its contents must not be used.
  bool untrusted() const { return untrusted_; }
  // Replaces the environment with the copy at `path`, or with an empty one when `path` is
  // empty, and trusts it from now on.
  void rebuild(const std::string& path);
  // Replaces the whole environment with the LMDB copy at `path` (a snapshot from the leader).
  void replaceWith(const std::string& path);
  // Writes a compacted, consistent copy of the environment to `path`, durable, after making
  // the store itself durable up to it; returns the last applied Raft index the copy holds. Safe
  // on another thread while the event loop commits (LMDB copies from a read transaction);
  // replacing the environment waits for it.
  uint64_t copyTo(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  MDB_env* env() { return env_; }

  // Applied commands go into one write transaction that stays open across applies until
  // commitWrites(): a commit writes every page it changed (about 15 for an unlink: a path from
  // the root of each table touched), so one commit for the changes of a few milliseconds writes
  // a page changed by many of them once. Committing later loses nothing: what is applied is in
  // the Raft log first, and a restart applies the log from the last committed `applied` counter.
  // writer() opens the transaction on the first call, on the thread that applies.
  Txn& writer();
  void commitWrites();  // throws on failure (nothing the open transaction held was kept)
  // A transaction to read in. On the thread that applies, while a write transaction is open,
  // this is that transaction (so that reads see every applied command); anywhere else a read
  // transaction of its own, which sees what was committed last. Never keep one across a turn
  // of the event loop: the open transaction may be committed in between.
  Txn reader();
  // The counter `name` in the LMDB copy at `path` (a file written by copyTo).
  static uint64_t counterIn(const std::string& path, const char* name);
  const std::string& dir() const { return dir_; }

  MDB_dbi inodes, dentries, cookies, symlinks, xattrs, chunks, servers, garbage, replies,
      replytime, log, counters, members, owners, quotas, locks, sessions, unlinked;

  // Typed accessors.
  static std::optional<InodeRecord> getInode(Txn& t, MDB_dbi dbi, uint64_t ino);
  std::optional<InodeRecord> getInode(Txn& t, uint64_t ino) { return getInode(t, inodes, ino); }
  void putInode(Txn& t, uint64_t ino, const InodeRecord& r);
  std::optional<DentryRecord> getDentry(Txn& t, uint64_t parent, std::string_view name);
  std::optional<ChunkRecord> getChunk(Txn& t, uint64_t ino, uint64_t index);
  void putChunk(Txn& t, uint64_t ino, uint64_t index, const ChunkRecord& r);
  std::optional<ServerRecord> getServer(Txn& t, uint32_t id);
  void putServer(Txn& t, uint32_t id, const ServerRecord& r);
  std::optional<QuotaRecord> getQuota(Txn& t, uint64_t ino);
  void putQuota(Txn& t, uint64_t ino, const QuotaRecord& q);
  uint64_t getCounter(Txn& t, std::string_view name, uint64_t dflt = 0);
  void putCounter(Txn& t, std::string_view name, uint64_t v);

  static std::string encodeDentry(const DentryRecord& d);
  static DentryRecord decodeDentry(std::string_view v);
  static std::string encodeChunk(const ChunkRecord& r);
  static ChunkRecord decodeChunk(std::string_view v);
  static std::string encodeServers(const std::vector<uint32_t>& ids);
  static std::string encodeGarbage(const GarbageRecord& g);
  static GarbageRecord decodeGarbage(std::string_view v);
  static std::vector<uint32_t> decodeServers(std::string_view v);

 private:
  void open();
  void markOpen();
  void replaceLocked(const std::string& path);
  std::string dir_;
  MDB_env* env_ = nullptr;
  std::mutex swap_;  // held while a copy reads env_ and while env_ is replaced
  std::unique_ptr<Txn> writer_;
  std::atomic<std::thread::id> writerThread_{};  // the thread that holds writer_, while open
  bool untrusted_ = false;
};

}  // namespace cairn::meta
