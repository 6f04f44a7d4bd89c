#include "fs/invalidator.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace cairn::fs {

namespace {
// One poll; also how long stopping may take, and how long a mount whose caches start relying on
// the feed may wait for its first vouch (fs/name_cache.h).
constexpr uint32_t WAIT_MS = 1000;
}

Invalidator::Invalidator(ClusterClient& client, fuse_session* se, uint64_t rootIno,
                         std::string host, std::string mount, Metrics* metrics,
                         OpenFiles* files)
    : client_(client), se_(se), rootIno_(rootIno), host_(std::move(host)),
      mount_(std::move(mount)), files_(files) {
  if (metrics) {
    const char* name = "cairn_client_invalidations_total";
    const char* help = "Kernel cache invalidations for changes made by other clients";
    entries_ = &metrics->counter(name, help, "kind=\"entry\"");
    inodes_ = &metrics->counter(name, help, "kind=\"inode\"");
    lost_ = &metrics->counter(name, help, "kind=\"lost\"");
  }
}

Invalidator::~Invalidator() {
  stop_.raise();
  if (thread_.joinable()) thread_.join();
}

void Invalidator::start() { thread_ = std::thread([this]() { run(); }); }

void Invalidator::apply(proto::ChangePage::Reader page) {
  // Failpoint for tests: the feed's changes reach the kernel this much later, as when the mount
  // or its link to meta is slow (what close-to-open must not depend on).
  static const long delayMs = [] {
    const char* v = getenv("CAIRN_FAILPOINT_FEED_DELAY_MS");
    return v ? atol(v) : 0L;
  }();
  if (delayMs > 0 && page.getChanges().size() > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
  uint64_t self = client_.clientId();
  for (auto c : page.getChanges()) {
    if (c.getOrigin() == self) continue;  // our own kernel saw it through our replies
    if (c.getName().size() > 0) {
      fuse_ino_t parent = c.getParent() == rootIno_ ? FUSE_ROOT_ID : c.getParent();
      if (files_) files_->entryChangedElsewhere(c.getParent(), std::string_view(c.getName().cStr(), c.getName().size()));
      // -ENOENT: the kernel does not cache that entry; nothing to drop.
      fuse_lowlevel_notify_inval_entry(se_, parent, c.getName().cStr(), c.getName().size());
      if (entries_) entries_->inc();
    } else {
      fuse_ino_t ino = c.getIno() == rootIno_ ? FUSE_ROOT_ID : c.getIno();
      if (files_) files_->changedElsewhere(c.getIno());
      fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);  // attributes and every cached page
      if (inodes_) inodes_->inc();
    }
  }
}

void Invalidator::run() {
  // Without meta, a watch gives up after 10 s (logged, and sent again a second later) rather
  // than after the 120 s a FUSE request rides out. Stopping ends it at once (meta(req, stop_)).
  ClusterClient::setThreadRetry(10 * kj::SECONDS);
  auto pause = [this](int ms) { stop_.sleepFor(std::chrono::milliseconds(ms)); };
  uint64_t epoch = 0, after = 0;
  bool resync = true;  // the next watch tells every open file (a new feed: a new leader)
  while (!stop_.raised()) {
    auto start = std::chrono::steady_clock::now();
    if (files_) files_->tick();
    std::vector<OpenFiles::Ref> closed;
    try {
      auto req = newMetaRequest();
      auto w = req->getRoot<proto::MetaRequest>().getOp().initWatch();
      w.setEpoch(epoch);
      w.setAfter(after);
      uint32_t waitMs = files_ ? files_->watchWaitMs() : 0;
      w.setWaitMs(waitMs > 0 ? std::min(waitMs, WAIT_MS) : WAIT_MS);
      w.setHost(host_);
      w.setMount(mount_);
      if (files_) {
        closed = files_->takeClosed();
        auto c = w.initClosed(static_cast<unsigned>(closed.size()));
        for (size_t i = 0; i < closed.size(); i++) {
          c[i].setIno(closed[i].ino);
          c[i].setGen(closed[i].gen);
        }
        if (resync) {
          // A new feed (first watch, or a new leader): it learns every file we have open.
          auto open = files_->openNow();
          auto o = w.initOpened(static_cast<unsigned>(open.size()));
          for (size_t i = 0; i < open.size(); i++) {
            o[i].setIno(open[i].ino);
            o[i].setGen(open[i].gen);
          }
          w.setResync(true);
        }
      }
      auto reply = client_.meta(kj::mv(req), stop_);
      auto r = reply->getRoot<proto::MetaReply>();
      if (r.getErr() != 0 || !r.isChanges()) {
        if (files_) files_->putBackClosed(std::move(closed));
        resync = true;  // whoever answers next may be a new leader
        pause(500);
        continue;
      }
      auto page = r.getChanges();
      // Answered from another feed than we asked about (a new leader): it learns our open files
      // with the next watch. Otherwise the files went with this one.
      resync = page.getEpoch() != epoch;
      // A new feed starts where it is now: what changed before, since our caches were filled,
      // will never come. They are dropped here, after the feed's position is fixed, so that
      // what they hold from now on was read after it.
      if ((resync || page.getLost()) && files_) files_->feedLost();
      if (page.getLost()) {
        spdlog::info("coherence: changes of other clients were missed (new meta leader or too "
                     "far behind): cached entries and attributes may be stale for up to their "
                     "timeout");
        if (lost_) lost_->inc();
      }
      if (!stop_.raised()) apply(page);
      if (!stop_.raised() && files_ && page.getConfirmed() && !resync && !page.getLost())
        files_->feedVouches(start);
      epoch = page.getEpoch();
      after = page.getNext();
      if (page.getChanges().size() == 0 &&
          std::chrono::steady_clock::now() - start < std::chrono::milliseconds(50)) {
        pause(100);  // answered at once with nothing: do not spin
      }
    } catch (kj::Exception& e) {
      if (files_) files_->putBackClosed(std::move(closed));
      resync = true;
      spdlog::warn("coherence: watching changes failed: {}", e.getDescription().cStr());
      pause(1000);
    }
  }
}

}  // namespace cairn::fs
