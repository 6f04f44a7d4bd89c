// Durable Raft state of one meta server, in its own LMDB environment (DATA/raft):
//
//   entries   index (big-endian u64) -> term u64 | type u8 | data
//   state     "hard"     -> term u64 | vote u64 | commit u64
//             "snapshot" -> index u64 | term u64 | voter count u64 | voters u64...
//
// The environment is opened with MDB_NOSYNC; save() syncs explicitly when asked, so one fsync
// covers every entry and vote of a Ready (group commit). A failed sync is fatal: the store
// refuses to pretend anything is durable.
#pragma once

#include <lmdb.h>

#include <string>
#include <vector>

#include "meta/raft/core.h"

namespace cairn::raft {

class LogStore {
 public:
  explicit LogStore(const std::string& dir);
  ~LogStore();
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  Restored load();
  // Writes a Ready's durable parts: entries (replacing any from entries[0].index on) and the
  // hard state; syncs when `sync`.
  void save(const std::vector<Entry>& entries, const HardState* hard, bool sync);
  // Records a snapshot at meta.index and deletes the entries it covers.
  void saveSnapshot(const SnapshotMeta& meta);
  // Forgets every entry (a snapshot from the leader replaces the whole log).
  void resetTo(const SnapshotMeta& meta);

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi entries_ = 0, state_ = 0;
};

}  // namespace cairn::raft
