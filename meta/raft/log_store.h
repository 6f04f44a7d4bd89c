// Durable Raft state of one meta server: an append-only write-ahead log in DATA/raft.
//
// The log is a series of segment files `wal-NNNNNNNNNNNNNNNN` (a sequence number), each filled
// with zeros when made so that appending overwrites allocated blocks and a sync flushes data
// only. A segment holds records, each
//
//   u32 length of body | u32 CRC-32C of body | body = u8 kind, payload
//
//   ENTRY     index u64 | term u64 | type u8 | data    (replaces any entry from `index` on)
//   HARD      term u64 | vote u64 | commit u64
//   SNAPSHOT  index u64 | term u64 | voter count u64 | voters u64...  (drops entries <= index)
//   RESET     like SNAPSHOT, and drops every entry (a snapshot from the leader replaces the log)
//
// Replay reads the segments in order and applies the records in order; it stops at the first
// record that is short, zero or fails its CRC (a torn last write), and zeros the rest of that
// segment so that nothing after the tear can be read as a record later. Every new segment
// starts with the current snapshot and hard state, so that segments whose entries are all
// covered by a snapshot can be deleted whole.
//
// save() writes a Ready's records with one write and, when asked, one fdatasync (group
// commit). A failed write or sync is fatal: the store never pretends anything is durable.
//
// A data directory from before holds the log in LMDB (data.mdb): it is read once, written
// into the new log, and removed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "meta/raft/core.h"

namespace cairn::raft {

class LogStore {
 public:
  // `segmentBytes`: the size each segment is made with (tests use small ones).
  explicit LogStore(const std::string& dir, uint64_t segmentBytes = 64ull << 20);
  ~LogStore();
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  Restored load();
  // Writes a Ready's durable parts: entries (replacing any from entries[0].index on) and the
  // hard state; syncs when `sync`.
  void save(const std::vector<Entry>& entries, const HardState* hard, bool sync);
  // Records a snapshot at meta.index and deletes the segments it covers.
  void saveSnapshot(const SnapshotMeta& meta);
  // Forgets every entry (a snapshot from the leader replaces the whole log).
  void resetTo(const SnapshotMeta& meta);

  // Syncs everything written so far.
  void sync();
  // A duplicate of the segment being appended to (-1: none yet), for a sync on another
  // thread: every earlier segment was synced when the next one began, so a sync of this
  // descriptor makes everything written before it durable. The caller closes it.
  int duplicateTail() const;

  // For tests and metrics.
  size_t segmentCount() const { return segments_.size(); }

 private:
  struct Segment {
    uint64_t seq;
    Index lastIndex;  // the highest entry index written into it (0: none)
  };

  std::string segmentPath(uint64_t seq) const;
  void openSegment(uint64_t seq, uint64_t minBytes);
  void append(const std::string& records, bool sync);
  void syncFile();
  void syncDir();
  void dropCoveredSegments();
  std::string stateRecords() const;
  Restored migrateFromLmdb();

  std::string dir_;
  uint64_t segmentBytes_;
  int dirFd_ = -1;
  int fd_ = -1;              // the segment being appended to
  uint64_t offset_ = 0;      // where the next record goes in it
  uint64_t size_ = 0;        // its size
  std::vector<Segment> segments_;
  bool loaded_ = false;
  // The latest durable state, to start each new segment with.
  HardState hard_;
  std::optional<SnapshotMeta> snapshot_;
};

}  // namespace cairn::raft
