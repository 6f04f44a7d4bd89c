#include "meta/raft/log_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <kj/debug.h>
#include <lmdb.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "meta/store.h"

namespace cairn::raft {

namespace {

enum Kind : uint8_t { ENTRY = 1, HARD = 2, SNAPSHOT = 3, RESET = 4 };
constexpr size_t HEADER = 8;

void putU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void putU64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
uint32_t getU32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t getU64(const char* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

uint32_t crc(const char* p, size_t n) {
  return crc32_iscsi(reinterpret_cast<unsigned char*>(const_cast<char*>(p)), static_cast<int>(n),
                     0xffffffffu);
}

// Appends one record: header, then the body (kind and payload).
void record(std::string& out, Kind kind, const std::string& payload) {
  std::string body;
  body.reserve(1 + payload.size());
  body.push_back(static_cast<char>(kind));
  body += payload;
  putU32(out, static_cast<uint32_t>(body.size()));
  putU32(out, crc(body.data(), body.size()));
  out += body;
}

std::string entryPayload(const Entry& e) {
  std::string p;
  p.reserve(17 + e.data.size());
  putU64(p, e.index);
  putU64(p, e.term);
  p.push_back(static_cast<char>(e.type));
  p += e.data;
  return p;
}

std::string hardPayload(const HardState& h) {
  std::string p;
  putU64(p, h.term);
  putU64(p, h.vote);
  putU64(p, h.commit);
  return p;
}

std::string snapshotPayload(const SnapshotMeta& m) {
  std::string p;
  putU64(p, m.index);
  putU64(p, m.term);
  putU64(p, m.voters.size());
  for (auto v : m.voters) putU64(p, v);
  return p;
}

[[noreturn]] void fatal(const char* what, const std::string& path) {
  // Never retried and forgotten: stop, and let a restart recover from what is durable.
  spdlog::critical("raft log: {} failed on {}: {}", what, path, strerror(errno));
  abort();
}

void writeAll(int fd, const char* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fatal("write", path);
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

bool readAll(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return false;
  }
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return true;
}

// The log as it was kept before: an LMDB environment (entries, state).
Restored loadLmdb(const std::string& dir) {
  auto check = [](int rc, const char* what) {
    if (rc != 0) KJ_FAIL_ASSERT("reading the old raft log", what, mdb_strerror(rc));
  };
  MDB_env* env;
  check(mdb_env_create(&env), "env_create");
  KJ_DEFER(mdb_env_close(env));
  check(mdb_env_set_maxdbs(env, 4), "maxdbs");
  check(mdb_env_set_mapsize(env, size_t(32) << 30), "mapsize");
  check(mdb_env_open(env, dir.c_str(), MDB_NOTLS | MDB_RDONLY, 0600), "env_open");
  MDB_txn* t;
  check(mdb_txn_begin(env, nullptr, MDB_RDONLY, &t), "begin");
  KJ_DEFER(mdb_txn_abort(t));
  MDB_dbi entries, state;
  check(mdb_dbi_open(t, "entries", 0, &entries), "dbi entries");
  check(mdb_dbi_open(t, "state", 0, &state), "dbi state");
  Restored r;
  std::string hardKey = "hard", snapKey = "snapshot";
  MDB_val k{hardKey.size(), hardKey.data()}, v;
  if (mdb_get(t, state, &k, &v) == 0) {
    KJ_ASSERT(v.mv_size == 24, "bad hard state");
    auto p = static_cast<const char*>(v.mv_data);
    r.hardState = HardState{getU64(p), getU64(p + 8), getU64(p + 16)};
  }
  k = MDB_val{snapKey.size(), snapKey.data()};
  if (mdb_get(t, state, &k, &v) == 0) {
    auto p = static_cast<const char*>(v.mv_data);
    SnapshotMeta m;
    m.index = getU64(p);
    m.term = getU64(p + 8);
    uint64_t n = getU64(p + 16);
    KJ_ASSERT(v.mv_size == 24 + 8 * n, "bad snapshot record");
    for (uint64_t i = 0; i < n; i++) m.voters.push_back(getU64(p + 24 + 8 * i));
    r.snapshot = m;
  }
  MDB_cursor* c;
  check(mdb_cursor_open(t, entries, &c), "cursor");
  KJ_DEFER(mdb_cursor_close(c));
  Index expect = r.snapshot ? r.snapshot->index + 1 : 1;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    Index idx = meta::readBe64(std::string_view(static_cast<const char*>(k.mv_data), k.mv_size));
    if (idx < expect) continue;
    KJ_ASSERT(idx == expect, "gap in the old raft log", idx, expect);
    auto p = static_cast<const char*>(v.mv_data);
    KJ_ASSERT(v.mv_size >= 9, "bad raft entry");
    Entry e;
    e.index = idx;
    e.term = getU64(p);
    e.type = static_cast<EntryType>(p[8]);
    e.data.assign(p + 9, v.mv_size - 9);
    r.entries.push_back(std::move(e));
    expect++;
  }
  return r;
}

}  // namespace

LogStore::LogStore(const std::string& dir, uint64_t segmentBytes)
    : dir_(dir), segmentBytes_(segmentBytes) {
  ::mkdir(dir.c_str(), 0700);
  dirFd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KJ_REQUIRE(dirFd_ >= 0, "cannot open the raft log directory", dir, strerror(errno));
}

LogStore::~LogStore() {
  if (fd_ >= 0) ::close(fd_);
  if (dirFd_ >= 0) ::close(dirFd_);
}

std::string LogStore::segmentPath(uint64_t seq) const {
  char name[32];
  snprintf(name, sizeof(name), "wal-%016llu", static_cast<unsigned long long>(seq));
  return dir_ + "/" + name;
}

void LogStore::syncFile() {
  if (fdatasync(fd_) != 0) fatal("fdatasync", segmentPath(segments_.back().seq));
}

void LogStore::sync() {
  if (fd_ >= 0) syncFile();
}

int LogStore::duplicateTail() const { return fd_ >= 0 ? ::fcntl(fd_, F_DUPFD_CLOEXEC, 0) : -1; }

void LogStore::syncDir() {
  if (fsync(dirFd_) != 0) fatal("fsync", dir_);
}

void LogStore::openSegment(uint64_t seq, uint64_t minBytes) {
  uint64_t size = std::max(segmentBytes_, (minBytes + 4095) / 4096 * 4096);
  std::string path = segmentPath(seq), tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fatal("create", tmp);
  // Zeros written (not just allocated): appends then overwrite data blocks, and a sync has no
  // extent or size change to flush.
  static const std::string zeros(1 << 20, '\0');
  for (uint64_t off = 0; off < size; off += zeros.size())
    writeAll(fd, zeros.data(), std::min<uint64_t>(zeros.size(), size - off), off, tmp);
  if (fdatasync(fd) != 0) fatal("fdatasync", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fatal("rename", tmp);
  syncDir();
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  offset_ = 0;
  size_ = size;
  segments_.push_back(Segment{seq, 0});
}

std::string LogStore::stateRecords() const {
  std::string out;
  if (snapshot_) record(out, SNAPSHOT, snapshotPayload(*snapshot_));
  record(out, HARD, hardPayload(hard_));
  return out;
}

void LogStore::append(const std::string& records, bool sync) {
  if (fd_ < 0 || offset_ + records.size() > size_) {
    // The current segment is full (it was synced with its last record that asked for it; sync
    // it now for those that did not), and a new one starts with the state it needs alone.
    if (fd_ >= 0) syncFile();
    std::string head = stateRecords();
    uint64_t next = segments_.empty() ? 1 : segments_.back().seq + 1;
    openSegment(next, head.size() + records.size());
    writeAll(fd_, head.data(), head.size(), offset_, segmentPath(next));
    offset_ += head.size();
  }
  writeAll(fd_, records.data(), records.size(), offset_, segmentPath(segments_.back().seq));
  offset_ += records.size();
  if (sync) syncFile();
}

Restored LogStore::load() {
  KJ_REQUIRE(!loaded_, "the raft log is loaded once");
  loaded_ = true;
  std::vector<uint64_t> seqs;
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (auto* de = ::readdir(d)) {
      std::string name = de->d_name;
      if (name.size() == 20 && name.compare(0, 4, "wal-") == 0 &&
          name.find_first_not_of("0123456789", 4) == std::string::npos)
        seqs.push_back(std::stoull(name.substr(4)));
      else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0)
        ::unlinkat(dirFd_, name.c_str(), 0);  // a segment whose making was cut short
    }
    ::closedir(d);
  }
  std::sort(seqs.begin(), seqs.end());

  Restored r;
  if (seqs.empty()) {
    struct stat st;
    if (::stat((dir_ + "/data.mdb").c_str(), &st) == 0) r = migrateFromLmdb();
    return r;
  }

  std::vector<Entry>& entries = r.entries;
  auto base = [&]() { return snapshot_ ? snapshot_->index : 0; };
  auto dropThrough = [&](Index idx) {
    auto it = std::find_if(entries.begin(), entries.end(),
                           [idx](const Entry& e) { return e.index > idx; });
    entries.erase(entries.begin(), it);
  };
  std::string buf;
  for (size_t si = 0; si < seqs.size(); si++) {
    std::string path = segmentPath(seqs[si]);
    KJ_REQUIRE(readAll(path, buf), "cannot read raft log segment", path, strerror(errno));
    Segment seg{seqs[si], 0};
    size_t pos = 0;
    bool torn = false;
    while (pos + HEADER <= buf.size()) {
      uint32_t len = getU32(buf.data() + pos);
      if (len == 0) break;  // the zeros after the last record
      if (pos + HEADER + len > buf.size() ||
          crc(buf.data() + pos + HEADER, len) != getU32(buf.data() + pos + 4)) {
        torn = true;
        break;
      }
      const char* b = buf.data() + pos + HEADER;
      uint8_t kind = static_cast<uint8_t>(b[0]);
      const char* p = b + 1;
      size_t n = len - 1;
      switch (kind) {
        case ENTRY: {
          KJ_REQUIRE(n >= 17, "short raft log entry", path, pos);
          Entry e;
          e.index = getU64(p);
          e.term = getU64(p + 8);
          KJ_REQUIRE(uint8_t(p[16]) <= uint8_t(EntryType::NOOP), "bad raft entry type", path, pos);
          e.type = static_cast<EntryType>(p[16]);
          e.data.assign(p + 17, n - 17);
          seg.lastIndex = std::max(seg.lastIndex, e.index);
          if (e.index <= base()) break;
          if (!entries.empty() && e.index <= entries.back().index) {
            // Replaces the entries from here on.
            entries.erase(std::find_if(entries.begin(), entries.end(),
                                       [&](const Entry& x) { return x.index >= e.index; }),
                          entries.end());
          }
          // A gap appears only where segments covered by a later snapshot were deleted: the
          // check after replay makes sure the log left starts right after the snapshot.
          if (!entries.empty() && e.index != entries.back().index + 1) entries.clear();
          entries.push_back(std::move(e));
          break;
        }
        case HARD:
          KJ_REQUIRE(n == 24, "bad raft hard state", path, pos);
          hard_ = HardState{getU64(p), getU64(p + 8), getU64(p + 16)};
          break;
        case SNAPSHOT:
        case RESET: {
          KJ_REQUIRE(n >= 24 && n == 24 + 8 * getU64(p + 16), "bad raft snapshot record", path, pos);
          SnapshotMeta m;
          m.index = getU64(p);
          m.term = getU64(p + 8);
          for (uint64_t i = 0; i < getU64(p + 16); i++) m.voters.push_back(getU64(p + 24 + 8 * i));
          snapshot_ = m;
          if (kind == RESET)
            entries.clear();
          else
            dropThrough(m.index);
          break;
        }
        default:
          KJ_FAIL_REQUIRE("unknown raft log record", path, pos, kind);
      }
      pos += HEADER + len;
    }
    bool last = si + 1 == seqs.size();
    KJ_REQUIRE(!torn || last, "raft log segment damaged before its end", path, pos);
    segments_.push_back(seg);
    if (last) {
      fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      KJ_REQUIRE(fd_ >= 0, "cannot open raft log segment", path, strerror(errno));
      offset_ = pos;
      size_ = buf.size();
      if (torn) {
        // The last write was cut short: zero what it left, so that nothing after the tear can
        // be taken for a record once new ones are written over it.
        spdlog::warn("raft log: {} ends in a torn record at offset {}: dropped", path, pos);
        std::string zeros(size_ - pos, '\0');
        writeAll(fd_, zeros.data(), zeros.size(), pos, path);
        syncFile();
      }
    }
  }
  dropThrough(base());
  KJ_REQUIRE(entries.empty() || entries.front().index == base() + 1, "gap in the raft log",
             base(), entries.front().index);
  r.hardState = hard_;
  r.snapshot = snapshot_;
  return r;
}

Restored LogStore::migrateFromLmdb() {
  Restored old = loadLmdb(dir_);
  hard_ = old.hardState;
  snapshot_ = old.snapshot;
  std::string records;
  for (auto& e : old.entries) record(records, ENTRY, entryPayload(e));
  append(records, true);
  if (!old.entries.empty()) segments_.back().lastIndex = old.entries.back().index;
  ::unlink((dir_ + "/data.mdb").c_str());
  ::unlink((dir_ + "/lock.mdb").c_str());
  syncDir();
  spdlog::info("raft log: moved {} entries from LMDB into {}", old.entries.size(),
               segmentPath(segments_.back().seq));
  return old;
}

void LogStore::save(const std::vector<Entry>& entries, const HardState* hard, bool sync) {
  if (entries.empty() && !hard) {
    if (sync && fd_ >= 0) syncFile();
    return;
  }
  std::string records;
  for (auto& e : entries) record(records, ENTRY, entryPayload(e));
  if (hard) record(records, HARD, hardPayload(*hard));
  append(records, sync);
  if (!entries.empty()) {
    segments_.back().lastIndex = std::max(segments_.back().lastIndex, entries.back().index);
  }
  if (hard) hard_ = *hard;
}

void LogStore::dropCoveredSegments() {
  // Only a prefix: a later segment may replace entries of an earlier one.
  size_t n = 0;
  while (n + 1 < segments_.size() && snapshot_ && segments_[n].lastIndex <= snapshot_->index) n++;
  if (n == 0) return;
  for (size_t i = 0; i < n; i++) ::unlink(segmentPath(segments_[i].seq).c_str());
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<long>(n));
  syncDir();
}

void LogStore::saveSnapshot(const SnapshotMeta& m) {
  std::string records;
  record(records, SNAPSHOT, snapshotPayload(m));
  append(records, true);
  snapshot_ = m;
  dropCoveredSegments();
}

void LogStore::resetTo(const SnapshotMeta& m) {
  std::string records;
  record(records, RESET, snapshotPayload(m));
  append(records, true);
  snapshot_ = m;
  // Every earlier segment is superseded by the reset.
  for (auto& s : segments_) s.lastIndex = 0;
  dropCoveredSegments();
}

}  // namespace cairn::raft
