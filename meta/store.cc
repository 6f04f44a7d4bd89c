#include "meta/store.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace cairn::meta {

namespace {
void check(int rc, const char* what) {
  if (rc != 0) KJ_FAIL_ASSERT("lmdb", what, mdb_strerror(rc));
}
MDB_val val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
std::string_view view(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}
void putU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void putU64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
uint32_t getU32(std::string_view s, size_t& at) {
  KJ_ASSERT(at + 4 <= s.size(), "truncated record");
  uint32_t v;
  memcpy(&v, s.data() + at, 4);
  at += 4;
  return v;
}
uint64_t getU64(std::string_view s, size_t& at) {
  KJ_ASSERT(at + 8 <= s.size(), "truncated record");
  uint64_t v;
  memcpy(&v, s.data() + at, 8);
  at += 8;
  return v;
}
void putStr(std::string& s, std::string_view v) {
  putU32(s, static_cast<uint32_t>(v.size()));
  s.append(v);
}
std::string getStr(std::string_view s, size_t& at) {
  uint32_t n = getU32(s, at);
  KJ_ASSERT(at + n <= s.size(), "truncated record");
  std::string out(s.substr(at, n));
  at += n;
  return out;
}
}  // namespace

std::string be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; i--) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

uint64_t readBe64(std::string_view s, size_t at) {
  KJ_ASSERT(s.size() >= at + 8);
  uint64_t v = 0;
  for (size_t i = 0; i < 8; i++) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

Txn::Txn(MDB_env* env, bool write) {
  check(mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_), "txn_begin");
}

Txn::~Txn() {
  if (txn_ && owned_) mdb_txn_abort(txn_);
}

void Txn::commit() {
  KJ_REQUIRE(owned_, "commit of a borrowed transaction");
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;
  check(rc, "commit");
}

std::optional<std::string> Txn::get(MDB_dbi dbi, std::string_view key) {
  MDB_val k = val(key), v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  check(rc, "get");
  return std::string(view(v));
}

void Txn::put(MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = val(key), v = val(value);
  check(mdb_put(txn_, dbi, &k, &v, 0), "put");
}

bool Txn::del(MDB_dbi dbi, std::string_view key) {
  MDB_val k = val(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "del");
  return true;
}

Cursor::Cursor(Txn& txn, MDB_dbi dbi, std::string prefix, std::string start)
    : prefix_(std::move(prefix)) {
  check(mdb_cursor_open(txn.raw(), dbi, &cursor_), "cursor_open");
  if (start.size() < prefix_.size()) start = prefix_;
  MDB_val k = val(start), v;
  load(mdb_cursor_get(cursor_, &k, &v, start.empty() ? MDB_FIRST : MDB_SET_RANGE));
}

Cursor::~Cursor() { mdb_cursor_close(cursor_); }

void Cursor::load(int rc) {
  if (rc == MDB_NOTFOUND) {
    valid_ = false;
    return;
  }
  check(rc, "cursor_get");
  MDB_val k, v;
  check(mdb_cursor_get(cursor_, &k, &v, MDB_GET_CURRENT), "cursor_get");
  key_ = view(k);
  value_ = view(v);
  valid_ = key_.substr(0, prefix_.size()) == prefix_;
}

void Cursor::next() {
  MDB_val k, v;
  load(mdb_cursor_get(cursor_, &k, &v, MDB_NEXT));
}

namespace {
std::string bootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

void syncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

Store::Store(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  KJ_REQUIRE(!ec, "cannot create data directory", dir, ec.message());
  std::ifstream marker(dir_ + "/open-boot");
  std::string was;
  if (marker && std::getline(marker, was) && was != bootId()) {
    // Not opened at all (LMDB may not even recognise it): put aside until rebuilt.
    untrusted_ = true;
    ::rename((dir_ + "/data.mdb").c_str(), (dir_ + "/data.mdb.untrusted").c_str());
    ::unlink((dir_ + "/lock.mdb").c_str());
  }
  open();
  if (!untrusted_) markOpen();
}

void Store::markOpen() {
  std::string path = dir_ + "/open-boot", tmp = path + ".tmp";
  int fd;
  KJ_SYSCALL(fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), tmp);
  std::string id = bootId() + "\n";
  ssize_t n = ::write(fd, id.data(), id.size());
  int rc = n == ssize_t(id.size()) ? ::fdatasync(fd) : -1;
  ::close(fd);
  KJ_REQUIRE(rc == 0, "cannot record the boot the store is open in", tmp, strerror(errno));
  KJ_SYSCALL(::rename(tmp.c_str(), path.c_str()), tmp);
  syncDir(dir_);
}

Txn& Store::writer() {
  if (!writer_) {
    writer_ = std::make_unique<Txn>(env_, true);
    writerThread_ = std::this_thread::get_id();
  }
  return *writer_;
}

void Store::commitWrites() {
  if (!writer_) return;
  auto t = std::move(writer_);
  writerThread_ = std::thread::id();
  t->commit();
}

Txn Store::reader() {
  if (writerThread_.load() == std::this_thread::get_id() && writer_)
    return Txn(Txn::Borrowed{}, writer_->raw());
  return Txn(env_, false);
}

void Store::rebuild(const std::string& path) {
  commitWrites();
  {
    std::lock_guard<std::mutex> lock(swap_);
    if (path.empty()) {
      mdb_env_close(env_);
      env_ = nullptr;
      ::unlink((dir_ + "/data.mdb").c_str());
      open();
    } else {
      replaceLocked(path);
    }
  }
  check(mdb_env_sync(env_, 1), "env_sync");
  untrusted_ = false;
  markOpen();  // syncs the directory too
  ::unlink((dir_ + "/data.mdb.untrusted").c_str());
}

void Store::replaceWith(const std::string& path) {
  commitWrites();
  std::lock_guard<std::mutex> lock(swap_);
  replaceLocked(path);
}

void Store::replaceLocked(const std::string& path) {
  mdb_env_close(env_);
  env_ = nullptr;
  std::string target = dir_ + "/data.mdb";
  KJ_SYSCALL(::rename(path.c_str(), target.c_str()), path, target);
  syncDir(dir_);
  open();
}

uint64_t Store::copyTo(const std::string& path) {
  std::lock_guard<std::mutex> lock(swap_);
  int fd;
  KJ_SYSCALL(fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), path);
  int rc = mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  if (rc == 0 && fdatasync(fd) != 0) rc = errno;
  ::close(fd);
  check(rc, "env_copy");
  // The log is compacted up to this copy: make the store itself durable up to it too (it holds
  // at least what the copy holds), so that a power loss cannot take it back behind the log.
  check(mdb_env_sync(env_, 1), "env_sync");
  return counterIn(path, "applied");
}

uint64_t Store::counterIn(const std::string& path, const char* name) {
  MDB_env* env = nullptr;
  check(mdb_env_create(&env), "env_create");
  struct Closer {
    MDB_env* e;
    ~Closer() { mdb_env_close(e); }
  } closer{env};
  check(mdb_env_set_maxdbs(env, 24), "set_maxdbs");
  check(mdb_env_open(env, path.c_str(), MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600), path.c_str());
  MDB_txn* txn;
  check(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "txn_begin");
  MDB_dbi dbi;
  int rc = mdb_dbi_open(txn, "counters", 0, &dbi);
  MDB_val k{strlen(name), const_cast<char*>(name)}, v;
  if (rc == 0) rc = mdb_get(txn, dbi, &k, &v);
  uint64_t x = 0;
  if (rc == 0 && v.mv_size == 8) memcpy(&x, v.mv_data, 8);
  mdb_txn_abort(txn);
  if (rc != MDB_NOTFOUND) check(rc, "copy: counters");
  return x;
}

void Store::open() {
  const std::string& dir = dir_;
  check(mdb_env_create(&env_), "env_create");
  check(mdb_env_set_maxdbs(env_, 24), "set_maxdbs");
  check(mdb_env_set_mapsize(env_, size_t(64) << 30), "set_mapsize");
  // No sync per commit: see the class comment.
  check(mdb_env_open(env_, dir.c_str(), MDB_NOTLS | MDB_NOSYNC, 0600), "env_open");
  Txn t(env_, true);
  auto openDbi = [&](const char* name) {
    MDB_dbi dbi;
    check(mdb_dbi_open(t.raw(), name, MDB_CREATE, &dbi), name);
    return dbi;
  };
  inodes = openDbi("inodes");
  dentries = openDbi("dentries");
  cookies = openDbi("cookies");
  symlinks = openDbi("symlinks");
  xattrs = openDbi("xattrs");
  chunks = openDbi("chunks");
  servers = openDbi("servers");
  garbage = openDbi("garbage");
  replies = openDbi("replies");
  replytime = openDbi("replytime");
  log = openDbi("log");
  counters = openDbi("counters");
  members = openDbi("members");
  owners = openDbi("owners");
  quotas = openDbi("quotas");
  locks = openDbi("locks");
  sessions = openDbi("sessions");
  unlinked = openDbi("unlinked");
  t.commit();
}

Store::~Store() {
  if (!env_) return;
  try {
    commitWrites();
  } catch (const kj::Exception& e) {
    spdlog::critical("meta store: the last commit at close failed: {} (the Raft log holds what "
                     "it had)", e.getDescription().cStr());
  }
  // A clean close: everything on disk, and nothing to rebuild at the next boot.
  bool synced = mdb_env_sync(env_, 1) == 0;
  mdb_env_close(env_);
  if (synced && !untrusted_ && ::unlink((dir_ + "/open-boot").c_str()) == 0) syncDir(dir_);
}

std::optional<InodeRecord> Store::getInode(Txn& t, MDB_dbi dbi, uint64_t ino) {
  auto v = t.get(dbi, be64(ino));
  if (!v) return std::nullopt;
  KJ_ASSERT(v->size() == sizeof(InodeRecord), "bad inode record", ino, v->size());
  InodeRecord r;
  memcpy(&r, v->data(), sizeof(r));
  return r;
}

void Store::putInode(Txn& t, uint64_t ino, const InodeRecord& r) {
  t.put(inodes, be64(ino), std::string_view(reinterpret_cast<const char*>(&r), sizeof(r)));
}

std::optional<DentryRecord> Store::getDentry(Txn& t, uint64_t parent, std::string_view name) {
  auto v = t.get(dentries, be64(parent) + std::string(name));
  if (!v) return std::nullopt;
  return decodeDentry(*v);
}

std::string Store::encodeDentry(const DentryRecord& d) {
  std::string s(20, '\0');
  memcpy(s.data(), &d.ino, 8);
  memcpy(s.data() + 8, &d.mode, 4);
  memcpy(s.data() + 12, &d.cookie, 8);
  return s;
}

DentryRecord Store::decodeDentry(std::string_view v) {
  size_t at = 0;
  DentryRecord d;
  d.ino = getU64(v, at);
  d.mode = getU32(v, at);
  d.cookie = getU64(v, at);
  return d;
}

std::string Store::encodeChunk(const ChunkRecord& r) {
  std::string s;
  putU64(s, r.id);
  putU64(s, r.version);
  s += encodeServers(r.servers);
  return s;
}

ChunkRecord Store::decodeChunk(std::string_view v) {
  ChunkRecord r;
  size_t at = 0;
  r.id = getU64(v, at);
  r.version = getU64(v, at);
  r.servers = decodeServers(v.substr(at));
  return r;
}

std::string Store::encodeServers(const std::vector<uint32_t>& ids) {
  std::string s;
  putU32(s, static_cast<uint32_t>(ids.size()));
  for (auto id : ids) putU32(s, id);
  return s;
}

std::string Store::encodeGarbage(const GarbageRecord& g) {
  std::string s;
  putU64(s, static_cast<uint64_t>(g.sinceNs));
  return s + encodeServers(g.servers);
}

GarbageRecord Store::decodeGarbage(std::string_view v) {
  GarbageRecord g;
  size_t at = 0;
  g.sinceNs = static_cast<int64_t>(getU64(v, at));
  g.servers = decodeServers(v.substr(at));
  return g;
}

std::vector<uint32_t> Store::decodeServers(std::string_view v) {
  size_t at = 0;
  uint32_t n = getU32(v, at);
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < n; i++) out.push_back(getU32(v, at));
  return out;
}

std::optional<ChunkRecord> Store::getChunk(Txn& t, uint64_t ino, uint64_t index) {
  auto v = t.get(chunks, be64(ino) + be64(index));
  if (!v) return std::nullopt;
  return decodeChunk(*v);
}

void Store::putChunk(Txn& t, uint64_t ino, uint64_t index, const ChunkRecord& r) {
  t.put(chunks, be64(ino) + be64(index), encodeChunk(r));
  t.put(owners, be64(r.id), be64(ino) + be64(index));
}

std::optional<ServerRecord> Store::getServer(Txn& t, uint32_t id) {
  auto v = t.get(servers, be64(id));
  if (!v) return std::nullopt;
  size_t at = 0;
  ServerRecord r;
  r.uuid = getStr(*v, at);
  r.addr = getStr(*v, at);
  r.host = getStr(*v, at);
  r.zone = getStr(*v, at);
  r.rack = getStr(*v, at);
  r.draining = at < v->size() && (*v)[at] != 0;
  return r;
}

void Store::putServer(Txn& t, uint32_t id, const ServerRecord& r) {
  std::string s;
  putStr(s, r.uuid);
  putStr(s, r.addr);
  putStr(s, r.host);
  putStr(s, r.zone);
  putStr(s, r.rack);
  s.push_back(r.draining ? 1 : 0);
  t.put(servers, be64(id), s);
}

std::optional<QuotaRecord> Store::getQuota(Txn& t, uint64_t ino) {
  auto v = t.get(quotas, be64(ino));
  if (!v) return std::nullopt;
  KJ_ASSERT(v->size() == sizeof(QuotaRecord), "bad quota record", ino, v->size());
  QuotaRecord q;
  memcpy(&q, v->data(), sizeof(q));
  return q;
}

void Store::putQuota(Txn& t, uint64_t ino, const QuotaRecord& q) {
  t.put(quotas, be64(ino), std::string_view(reinterpret_cast<const char*>(&q), sizeof(q)));
}

uint64_t Store::getCounter(Txn& t, std::string_view name, uint64_t dflt) {
  auto v = t.get(counters, name);
  if (!v) return dflt;
  KJ_ASSERT(v->size() == 8);
  uint64_t x;
  memcpy(&x, v->data(), 8);
  return x;
}

void Store::putCounter(Txn& t, std::string_view name, uint64_t v) {
  t.put(counters, name, std::string_view(reinterpret_cast<const char*>(&v), 8));
}

}  // namespace cairn::meta
