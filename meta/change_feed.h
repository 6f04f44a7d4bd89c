// The change feed: what each committed mutation makes stale in other clients' kernel caches
// (directory entries, attributes, file data), kept in a bounded ring that mounts long-poll
// (MetaRequest.watch) and turn into FUSE invalidations. Every client gets every change (it
// ignores those about inodes its kernel does not cache); a client that falls more than the ring
// behind, or that moves to a new leader (a new feed), is told that it lost changes and relies on
// its attribute timeout for what it missed.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "meta/store.h"
#include "rpc/cairn.capnp.h"

namespace cairn::meta {

struct Change {
  uint64_t origin = 0;
  uint64_t ino = 0;     // name empty: attributes or data of this inode
  uint64_t parent = 0;  // name set: the entry (parent, name)
  std::string name;
};

class ChangeFeed {
 public:
  ChangeFeed(uint64_t epoch, size_t capacity) : epoch_(epoch), capacity_(capacity) {}

  // The changes `request` will make, read from the state before it is applied (names of what
  // it unlinks or replaces). Call in the apply transaction, before applying it.
  static std::vector<Change> changesOf(Store& store, Txn& t, proto::MetaRequest::Reader request);
  // Appends changes of a mutation that succeeded.
  void append(std::vector<Change> changes);

  struct Page {
    uint64_t epoch = 0, next = 0;
    bool lost = false;
    bool end = false;  // `next` is the newest change: the page holds all there is
    std::vector<Change> changes;
  };
  // Up to `max` changes after `after` of feed `epoch` (another epoch: from the oldest kept, lost),
  // leaving out those of `skipOrigin` (a client's own, which it needs not be told; 0: none).
  Page since(uint64_t epoch, uint64_t after, size_t max, uint64_t skipOrigin = 0) const;
  // Whether a watcher of `client` (0: none) after `after` of feed `epoch` has something to be
  // told: a change by someone else, lost changes, another feed, or so many changes of its own
  // (`max` or half the ring) that it would soon fall out of the ring. The
  // changes up to `checked` are known to be the watcher's own; it is moved on, so that each
  // change is looked at once however long the watcher sleeps.
  bool wakes(uint64_t epoch, uint64_t after, uint64_t client, size_t max, uint64_t& checked) const;
  uint64_t epoch() const { return epoch_; }
  uint64_t last() const { return first_ + ring_.size() - 1; }  // seq of the newest change

 private:
  uint64_t epoch_;
  size_t capacity_;
  uint64_t first_ = 1;  // seq of ring_.front()
  std::deque<Change> ring_;
};

}  // namespace cairn::meta
