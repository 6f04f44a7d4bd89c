// The Raft log's write-ahead segments: what is saved comes back, torn tails are dropped,
// covered segments are deleted, and a log kept in LMDB by an older version is carried over.
#include "meta/raft/log_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "meta/store.h"

namespace cairn::raft {
namespace {

class LogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cairn-logstore-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> segments() const {
    std::vector<std::string> out;
    for (auto& e : std::filesystem::directory_iterator(dir_)) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  static Entry entry(Index i, Term t, size_t bytes = 20) {
    Entry e;
    e.index = i;
    e.term = t;
    e.data = std::string(bytes, static_cast<char>('a' + i % 26));
    return e;
  }
  static std::vector<Entry> range(Index from, Index to, Term t, size_t bytes = 20) {
    std::vector<Entry> v;
    for (Index i = from; i <= to; i++) v.push_back(entry(i, t, bytes));
    return v;
  }

  std::string dir_;
};

TEST_F(LogStoreTest, EntriesHardStateAndReplacementComeBackAfterReopen) {
  HardState h{3, 2, 7};
  {
    LogStore s(dir_);
    Restored r = s.load();
    EXPECT_TRUE(r.entries.empty());
    EXPECT_FALSE(r.snapshot);
    s.save(range(1, 10, 1), &h, true);
    // A new leader's entries replace 6..10 with 6..8 of term 2.
    HardState h2{4, 0, 5};
    s.save(range(6, 8, 2), &h2, true);
  }
  LogStore s(dir_);
  Restored r = s.load();
  ASSERT_EQ(r.entries.size(), 8u);
  for (Index i = 1; i <= 8; i++) {
    EXPECT_EQ(r.entries[i - 1].index, i);
    EXPECT_EQ(r.entries[i - 1].term, i <= 5 ? 1u : 2u);
    EXPECT_EQ(r.entries[i - 1].data, entry(i, 1).data);
  }
  EXPECT_EQ(r.hardState, (HardState{4, 0, 5}));
  // Appending after a reopen continues the same log.
  s.save(range(9, 9, 2), nullptr, true);
  LogStore again(dir_ + "/");
  EXPECT_EQ(again.load().entries.size(), 9u);
}

TEST_F(LogStoreTest, ATornLastRecordIsDroppedAndNothingBehindItIsReadLater) {
  {
    LogStore s(dir_);
    s.load();
    s.save(range(1, 5, 1), nullptr, true);
    s.save(range(6, 6, 1, 5000), nullptr, true);
  }
  auto segs = segments();
  ASSERT_EQ(segs.size(), 1u);
  // Cut the last record in half by damaging its second half (as a torn write would leave it).
  int fd = ::open(segs[0].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::string junk(2000, 'x');
  // The segment starts with the hard state (8 + 1 + 24 bytes), then entries 1..5 of
  // 8 + 1 + 17 + 20 bytes each; entry 6 follows.
  off_t sixth = 33 + 5 * (8 + 1 + 17 + 20);
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), sixth + 3000), ssize_t(junk.size()));
  ::close(fd);
  {
    LogStore s(dir_);
    Restored r = s.load();
    ASSERT_EQ(r.entries.size(), 5u);
    EXPECT_EQ(r.entries.back().index, 5u);
    // A short record written where the torn one was must not make its remains readable.
    s.save(range(6, 6, 2, 10), nullptr, true);
  }
  LogStore s(dir_);
  Restored r = s.load();
  ASSERT_EQ(r.entries.size(), 6u);
  EXPECT_EQ(r.entries.back().term, 2u);
  EXPECT_EQ(r.entries.back().data.size(), 10u);
}

TEST_F(LogStoreTest, DamageBeforeTheEndOfAnOlderSegmentIsRefused) {
  {
    LogStore s(dir_, 64 << 10);
    s.load();
    for (Index i = 1; i <= 40; i++) s.save({entry(i, 1, 4000)}, nullptr, true);
  }
  auto segs = segments();
  ASSERT_GE(segs.size(), 2u);
  int fd = ::open(segs[0].c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "zz", 2, 200), 2);
  ::close(fd);
  LogStore s(dir_, 64 << 10);
  EXPECT_ANY_THROW(s.load());
}

TEST_F(LogStoreTest, SegmentsRollAndThoseCoveredByASnapshotAreDeleted) {
  const uint64_t seg = 64 << 10;
  {
    LogStore s(dir_, seg);
    s.load();
    HardState h{1, 1, 0};
    for (Index i = 1; i <= 100; i++) {
      h.commit = i;
      s.save({entry(i, 1, 3000)}, &h, true);
    }
    EXPECT_GE(s.segmentCount(), 4u);
    size_t before = s.segmentCount();
    s.saveSnapshot(SnapshotMeta{80, 1, {1, 2, 3}});
    EXPECT_LT(s.segmentCount(), before);
    EXPECT_EQ(segments().size(), s.segmentCount());
  }
  LogStore s(dir_, seg);
  Restored r = s.load();
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.snapshot->index, 80u);
  EXPECT_EQ(r.snapshot->voters, (std::vector<NodeId>{1, 2, 3}));
  ASSERT_EQ(r.entries.size(), 20u);
  EXPECT_EQ(r.entries.front().index, 81u);
  EXPECT_EQ(r.hardState.commit, 100u);
  EXPECT_EQ(r.hardState.term, 1u);
}

TEST_F(LogStoreTest, AReplacementAcrossSegmentsSurvivesTheDeletionOfOlderOnes) {
  // Entries 1..60 of term 1 span segments; a new leader replaces 30.. with term 2; a snapshot
  // at 50 deletes what it covers. The log left must be term 2's from 51 on, never term 1's.
  const uint64_t seg = 64 << 10;
  {
    LogStore s(dir_, seg);
    s.load();
    for (Index i = 1; i <= 60; i++) s.save({entry(i, 1, 3000)}, nullptr, true);
    for (Index i = 30; i <= 70; i++) s.save({entry(i, 2, 3000)}, nullptr, true);
    s.saveSnapshot(SnapshotMeta{50, 2, {1}});
  }
  LogStore s(dir_, seg);
  Restored r = s.load();
  ASSERT_EQ(r.entries.size(), 20u);
  for (auto& e : r.entries) EXPECT_EQ(e.term, 2u) << e.index;
  EXPECT_EQ(r.entries.front().index, 51u);
}

TEST_F(LogStoreTest, ResetForgetsEveryEntryAndOlderSegments) {
  const uint64_t seg = 64 << 10;
  {
    LogStore s(dir_, seg);
    s.load();
    for (Index i = 1; i <= 50; i++) s.save({entry(i, 1, 3000)}, nullptr, true);
    s.resetTo(SnapshotMeta{500, 4, {1, 2}});
    EXPECT_EQ(s.segmentCount(), 1u);
    s.save(range(501, 502, 4), nullptr, true);
  }
  LogStore s(dir_, seg);
  Restored r = s.load();
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.snapshot->index, 500u);
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(r.entries.front().index, 501u);
}

TEST_F(LogStoreTest, ALogKeptInLmdbIsCarriedOverOnce) {
  // The layout of the older store: entries (big-endian index -> term | type | data) and
  // state ("hard", "snapshot").
  {
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, dir_.c_str(), MDB_NOTLS, 0600), 0);
    MDB_txn* t;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
    MDB_dbi entries, state;
    ASSERT_EQ(mdb_dbi_open(t, "entries", MDB_CREATE, &entries), 0);
    ASSERT_EQ(mdb_dbi_open(t, "state", MDB_CREATE, &state), 0);
    auto u64 = [](uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); };
    for (Index i = 11; i <= 15; i++) {
      std::string k = meta::be64(i), v = u64(2) + std::string(1, '\0') + "cmd" + std::to_string(i);
      MDB_val kv{k.size(), k.data()}, vv{v.size(), v.data()};
      ASSERT_EQ(mdb_put(t, entries, &kv, &vv, 0), 0);
    }
    std::string hk = "hard", hv = u64(2) + u64(1) + u64(14);
    std::string sk = "snapshot", sv = u64(10) + u64(1) + u64(1) + u64(1);
    MDB_val a{hk.size(), hk.data()}, b{hv.size(), hv.data()};
    MDB_val c{sk.size(), sk.data()}, d{sv.size(), sv.data()};
    ASSERT_EQ(mdb_put(t, state, &a, &b, 0), 0);
    ASSERT_EQ(mdb_put(t, state, &c, &d, 0), 0);
    ASSERT_EQ(mdb_txn_commit(t), 0);
    mdb_env_close(env);
  }
  for (int round = 0; round < 2; round++) {
    LogStore s(dir_);
    Restored r = s.load();
    ASSERT_TRUE(r.snapshot);
    EXPECT_EQ(r.snapshot->index, 10u);
    EXPECT_EQ(r.hardState, (HardState{2, 1, 14}));
    ASSERT_EQ(r.entries.size(), 5u);
    EXPECT_EQ(r.entries.front().index, 11u);
    EXPECT_EQ(r.entries.back().data, "cmd15");
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/data.mdb"));
  }
}

TEST_F(LogStoreTest, RandomHistoriesReplayToWhatWasSaved) {
  // A model log kept beside the store through random appends, replacements, snapshots and
  // reopenings on small segments: every reopen gives the model back.
  const uint64_t seg = 32 << 10;
  std::mt19937_64 rng(42);
  std::vector<Entry> model;
  Index snap = 0;
  Term term = 1;
  HardState hard;
  auto store = std::make_unique<LogStore>(dir_, seg);
  store->load();
  for (int step = 0; step < 3000; step++) {
    int what = static_cast<int>(rng() % 100);
    Index last = model.empty() ? snap : model.back().index;
    if (what < 70) {
      auto es = range(last + 1, last + 1 + rng() % 4, term, rng() % 2000);
      model.insert(model.end(), es.begin(), es.end());
      hard.commit = model.back().index;
      store->save(es, &hard, true);
    } else if (what < 80 && model.size() > 2) {
      Index from = model[rng() % model.size()].index;
      if (from <= snap) continue;
      term++;
      auto es = range(from, from + rng() % 3, term, rng() % 500);
      model.erase(model.begin() + static_cast<long>(from - model.front().index), model.end());
      model.insert(model.end(), es.begin(), es.end());
      store->save(es, nullptr, true);
    } else if (what < 88 && !model.empty()) {
      Index to = model[rng() % model.size()].index;
      snap = to;
      model.erase(model.begin(), model.begin() + static_cast<long>(to - model.front().index + 1));
      store->saveSnapshot(SnapshotMeta{snap, term, {1}});
    } else {
      store = std::make_unique<LogStore>(dir_, seg);
      Restored r = store->load();
      ASSERT_EQ(r.entries.size(), model.size()) << "step " << step;
      for (size_t i = 0; i < model.size(); i++) ASSERT_EQ(r.entries[i], model[i]) << step;
      ASSERT_EQ(r.hardState, hard);
      if (snap) {
        ASSERT_TRUE(r.snapshot);
        ASSERT_EQ(r.snapshot->index, snap);
      }
    }
  }
  EXPECT_LE(store->segmentCount(), segments().size());
}

}  // namespace
}  // namespace cairn::raft
