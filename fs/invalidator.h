// Keeps this mount's kernel caches coherent with other clients' changes: a thread long-polls
// meta's change feed (which also keeps the mount's session alive) and turns each change made by
// another client into a FUSE invalidation of the directory entry or the inode (attributes and
// cached pages), and into drops from the mount's own caches, which each confirmed answer of the
// feed vouches for (fs/name_cache.h). Changes lost (a new meta leader, or this mount fell far
// behind) are bounded by the attribute and entry timeouts.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fs/client.h"
#include "rpc/metrics.h"

namespace cairn::fs {

// The files a mount has open, told to meta with every watch: a file unlinked while open stays
// until its last close on every client (then meta reclaims it).
class OpenFiles {
 public:
  struct Ref {
    uint64_t ino, gen;  // gen: which open (grows with every first open of a file)
  };
  virtual ~OpenFiles() = default;
  virtual std::vector<Ref> openNow() = 0;
  virtual std::vector<Ref> takeClosed() = 0;              // closed since the last call
  virtual void putBackClosed(std::vector<Ref> refs) = 0;  // the watch carrying them failed
  // Another client changed the inode: whatever the mount remembers of it beyond the kernel's
  // caches goes too.
  virtual void changedElsewhere(uint64_t ino) {}
  // Another client changed the entry (parent, name).
  virtual void entryChangedElsewhere(uint64_t parent, std::string_view name) {}
  // The feed vouches for the mount's caches as of `sent`, when its watch was sent (every
  // change committed elsewhere before then has been applied: NameCache).
  virtual void feedVouches(std::chrono::steady_clock::time_point sent) {}
  // Changes may have been missed (a new feed, or this mount fell behind).
  virtual void feedLost() {}
  // How long a watch may wait for changes: shorter while the mount's caches rely on the feed's
  // vouching (0: no preference).
  virtual uint32_t watchWaitMs() { return 0; }
  // Called from every poll (at least every few seconds), for the mount's own timed chores.
  virtual void tick() {}
};

class Invalidator {
 public:
  // `rootIno` is the cluster inode mounted as FUSE_ROOT_ID.
  Invalidator(ClusterClient& client, fuse_session* se, uint64_t rootIno, std::string host,
              std::string mount, Metrics* metrics, OpenFiles* files);
  ~Invalidator();  // stops the thread at once, waiting meta or not

  void start();

 private:
  void run();
  void apply(proto::ChangePage::Reader page);

  ClusterClient& client_;
  fuse_session* se_;
  uint64_t rootIno_;
  std::string host_, mount_;
  OpenFiles* files_;
  Counter* entries_ = nullptr;
  Counter* inodes_ = nullptr;
  Counter* lost_ = nullptr;
  StopSignal stop_;
  std::thread thread_;
};

}  // namespace cairn::fs
