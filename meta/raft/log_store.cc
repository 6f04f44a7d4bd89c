#include "meta/raft/log_store.h"

#include <kj/debug.h>
#include <sys/stat.h>

#include <cstring>

#include "meta/store.h"

namespace cairn::raft {

namespace {
void check(int rc, const char* what) {
  if (rc != 0) KJ_FAIL_ASSERT("raft log lmdb", what, mdb_strerror(rc));
}
MDB_val val(const std::string& s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
uint64_t getU64(const char* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
struct WriteTxn {
  MDB_txn* t = nullptr;
  explicit WriteTxn(MDB_env* env) { check(mdb_txn_begin(env, nullptr, 0, &t), "begin"); }
  ~WriteTxn() {
    if (t) mdb_txn_abort(t);
  }
  void commit() {
    int rc = mdb_txn_commit(t);
    t = nullptr;
    check(rc, "commit");
  }
};
void deleteFrom(MDB_txn* t, MDB_dbi dbi, uint64_t from, uint64_t upTo) {
  // Deletes keys in [from, upTo] (upTo = UINT64_MAX for "to the end").
  MDB_cursor* c;
  check(mdb_cursor_open(t, dbi, &c), "cursor");
  std::string start = meta::be64(from);
  MDB_val k = val(start), v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    uint64_t idx = meta::readBe64(std::string_view(static_cast<const char*>(k.mv_data), k.mv_size));
    if (idx > upTo) break;
    check(mdb_cursor_del(c, 0), "cursor_del");
    rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
    if (rc == MDB_NOTFOUND) break;
    if (rc == 0) {
      uint64_t now = meta::readBe64(std::string_view(static_cast<const char*>(k.mv_data), k.mv_size));
      if (now == idx) rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
  }
  mdb_cursor_close(c);
}
}  // namespace

LogStore::LogStore(const std::string& dir) {
  ::mkdir(dir.c_str(), 0700);
  check(mdb_env_create(&env_), "env_create");
  check(mdb_env_set_maxdbs(env_, 4), "maxdbs");
  check(mdb_env_set_mapsize(env_, size_t(32) << 30), "mapsize");
  check(mdb_env_open(env_, dir.c_str(), MDB_NOSYNC | MDB_NOTLS, 0600), "env_open");
  WriteTxn t(env_);
  check(mdb_dbi_open(t.t, "entries", MDB_CREATE, &entries_), "dbi entries");
  check(mdb_dbi_open(t.t, "state", MDB_CREATE, &state_), "dbi state");
  t.commit();
}

LogStore::~LogStore() {
  if (env_) mdb_env_close(env_);
}

Restored LogStore::load() {
  Restored r;
  MDB_txn* t;
  check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t), "begin");
  std::string hardKey = "hard", snapKey = "snapshot";
  MDB_val k = val(hardKey), v;
  if (mdb_get(t, state_, &k, &v) == 0) {
    KJ_ASSERT(v.mv_size == 24, "bad hard state");
    auto p = static_cast<const char*>(v.mv_data);
    r.hardState = HardState{getU64(p), getU64(p + 8), getU64(p + 16)};
  }
  k = val(snapKey);
  if (mdb_get(t, state_, &k, &v) == 0) {
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
  check(mdb_cursor_open(t, entries_, &c), "cursor");
  int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  Index expect = r.snapshot ? r.snapshot->index + 1 : 1;
  while (rc == 0) {
    Index idx = meta::readBe64(std::string_view(static_cast<const char*>(k.mv_data), k.mv_size));
    if (idx >= expect) {
      KJ_ASSERT(idx == expect, "gap in the raft log", idx, expect);
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
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  return r;
}

void LogStore::save(const std::vector<Entry>& entries, const HardState* hard, bool sync) {
  if (!entries.empty() || hard) {
    WriteTxn t(env_);
    if (!entries.empty()) {
      deleteFrom(t.t, entries_, entries.front().index, UINT64_MAX);
      for (auto& e : entries) {
        std::string key = meta::be64(e.index);
        std::string value = u64(e.term);
        value.push_back(static_cast<char>(e.type));
        value += e.data;
        MDB_val k = val(key), v = val(value);
        check(mdb_put(t.t, entries_, &k, &v, 0), "put entry");
      }
    }
    if (hard) {
      std::string key = "hard";
      std::string value = u64(hard->term) + u64(hard->vote) + u64(hard->commit);
      MDB_val k = val(key), v = val(value);
      check(mdb_put(t.t, state_, &k, &v, 0), "put hard");
    }
    t.commit();
  }
  if (sync) {
    int rc = mdb_env_sync(env_, 1);
    if (rc != 0) {
      // Never retried and forgotten: stop, and let a restart recover from what is durable.
      KJ_LOG(FATAL, "raft log fsync failed", mdb_strerror(rc));
      abort();
    }
  }
}

void LogStore::saveSnapshot(const SnapshotMeta& m) {
  WriteTxn t(env_);
  std::string key = "snapshot";
  std::string value = u64(m.index) + u64(m.term) + u64(m.voters.size());
  for (auto v : m.voters) value += u64(v);
  MDB_val k = val(key), v = val(value);
  check(mdb_put(t.t, state_, &k, &v, 0), "put snapshot");
  deleteFrom(t.t, entries_, 0, m.index);
  t.commit();
  int rc = mdb_env_sync(env_, 1);
  if (rc != 0) {
    KJ_LOG(FATAL, "raft log fsync failed", mdb_strerror(rc));
    abort();
  }
}

void LogStore::resetTo(const SnapshotMeta& m) {
  {
    WriteTxn t(env_);
    deleteFrom(t.t, entries_, 0, UINT64_MAX);
    t.commit();
  }
  saveSnapshot(m);
}

}  // namespace cairn::raft
