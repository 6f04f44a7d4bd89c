// The leader's side of coherence between clients: mounts long-poll the change feed (which also
// keeps their session alive), and are answered as soon as a committed change arrives or after
// their wait. See meta/change_feed.h.
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "meta/service.h"

#include <sys/stat.h>

namespace cairn::meta {

uint64_t MetaServer::newEpoch() {
  uint64_t e;
  randombytes_buf(&e, sizeof(e));
  return e | 1;
}

MetaServer::Reply MetaServer::changesReply(const ChangeFeed::Page& page, bool confirmed) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto out = reply->initRoot<proto::MetaReply>().initChanges();
  out.setEpoch(page.epoch);
  out.setNext(page.next);
  out.setLost(page.lost);
  out.setConfirmed(confirmed);
  auto list = out.initChanges(static_cast<unsigned>(page.changes.size()));
  for (size_t i = 0; i < page.changes.size(); i++) {
    auto& c = page.changes[i];
    list[i].setOrigin(c.origin);
    list[i].setIno(c.ino);
    list[i].setParent(c.parent);
    list[i].setName(c.name);
  }
  return reply;
}

kj::Promise<MetaServer::Reply> MetaServer::watch(proto::MetaRequest::Reader request) {
  auto w = request.getOp().getWatch();
  KJ_REQUIRE(w.getHost().size() <= 255 && w.getMount().size() <= 4096, "watch: name too long");
  std::erase_if(watchers_, [](Watcher& x) { return !x.fulfiller->isWaiting(); });
  KJ_REQUIRE(w.getOpened().size() <= MAX_OPEN_PER_SESSION &&
             w.getClosed().size() <= MAX_OPEN_PER_SESSION, "watch: too many files");
  uint64_t client = request.getClientId();
  if (client != 0) {
    auto& session = sessionOf(client);
    session.host = w.getHost().cStr();
    session.mount = w.getMount().cStr();
    session.lastSeen = std::chrono::steady_clock::now();
    for (auto o : w.getOpened()) fileOpened(client, o.getIno(), o.getGen());
    if (w.getResync() && !session.synced) {
      spdlog::info("session of client {:016x} ({}:{}) resumed with {} open files", client,
                   session.host, session.mount, session.open.size());
      session.synced = true;
    }
    for (auto c : w.getClosed()) fileClosed(client, c.getIno(), c.getGen());
  }
  uint64_t epoch = w.getEpoch(), after = w.getAfter();
  // Every answer is read from the feed after a linearizable read (the leader is still the
  // leader, and has applied every change committed before the watch was sent), so that a page
  // with room to spare vouches for the mount's caches as of the watch's sending.
  // The client's own changes are left out (it has nothing to drop for them).
  auto answer = [this, epoch, after, client]() {
    return afterRead([this, epoch, after, client]() {
      auto page = feed_.since(epoch, after, MAX_PAGE, client);
      return changesReply(page, !page.lost && page.epoch == epoch && page.end);
    });
  };
  auto page = feed_.since(epoch, after, MAX_PAGE, client);
  if (!page.changes.empty() || page.lost || epoch != feed_.epoch() ||
      watchers_.size() >= MAX_WATCHERS || !page.end) {
    return answer();
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  watchers_.push_back(Watcher{epoch, after, client, 0, kj::mv(paf.fulfiller)});
  uint32_t waitMs = std::min<uint32_t>(w.getWaitMs(), 30000);
  return paf.promise.exclusiveJoin(io_->provider->getTimer().afterDelay(waitMs * kj::MILLISECONDS))
      .then(kj::mv(answer));
}

void MetaServer::wakeWatchers() {
  if (watchers_.empty()) return;
  std::vector<Watcher> still;
  for (auto& w : watchers_) {
    if (!w.fulfiller->isWaiting()) continue;  // answered by its timeout
    // Only the watcher's own changes so far: it would drop nothing, so it sleeps on (a mount
    // writing many small files would otherwise be answered after every one of them).
    if (!feed_.wakes(w.epoch, w.after, w.client, MAX_PAGE, w.checked)) {
      still.push_back(kj::mv(w));
      continue;
    }
    w.fulfiller->fulfill();
  }
  watchers_ = kj::mv(still);
}

MetaServer::Session& MetaServer::sessionOf(uint64_t client) {
  auto [it, fresh] = sessions_.try_emplace(client);
  auto& s = it->second;
  if (fresh) s.lastSeen = std::chrono::steady_clock::now();
  if (!s.stored) {
    // In the log, so that a later leader waits for this client before reclaiming files.
    s.stored = true;
    spdlog::info("session of client {:016x} opened", client);
    capnp::MallocMessageBuilder req;
    auto so = req.initRoot<proto::MetaRequest>().getOp().initSessionStart();
    so.setClient(client);
    so.setHost(s.host.empty() ? "?" : s.host);
    so.setMount(s.mount);
    repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {}).ignoreResult());
  }
  return s;
}

void MetaServer::fileOpened(uint64_t client, uint64_t ino, uint64_t gen) {
  auto& open = sessionOf(client).open;
  if (open.size() >= MAX_OPEN_PER_SESSION && !open.count(ino)) {
    spdlog::warn("client {:016x} holds more than {} open files: not recording more", client,
                 MAX_OPEN_PER_SESSION);
    return;
  }
  auto& g = open[ino];
  g = std::max(g, gen);
}

void MetaServer::fileClosed(uint64_t client, uint64_t ino, uint64_t gen) {
  auto it = sessions_.find(client);
  if (it == sessions_.end()) return;
  auto f = it->second.open.find(ino);
  if (f != it->second.open.end() && f->second <= gen) it->second.open.erase(f);
}

kj::Promise<MetaServer::Reply> MetaServer::openFile(proto::MetaRequest::Reader request) {
  uint64_t client = request.getClientId();
  uint64_t ino = request.getOp().getOpenFile().getIno();
  uint64_t gen = request.getOp().getOpenFile().getGen();
  // Open before the read: a reclaim decided after this point sees the file held.
  if (client != 0) fileOpened(client, ino, gen);
  auto copy = kj::heap<capnp::MallocMessageBuilder>();
  auto get = copy->initRoot<proto::MetaRequest>();
  get.setClientId(client);
  get.getOp().setGetattr(ino);
  return afterRead([this, copy = kj::mv(copy), client, ino, gen]() mutable {
    auto reply = readOnly(copy->getRoot<proto::MetaRequest>());
    if (reply->getRoot<proto::MetaReply>().getErr() != 0) fileClosed(client, ino, gen);
    return reply;
  });
}

kj::Promise<MetaServer::Reply> MetaServer::createAndOpen(proto::MetaRequest::Reader request) {
  uint64_t client = request.getClientId();
  uint64_t gen = request.getOp().getMknod().getOpenGen();
  std::vector<uint32_t> placement;
  if (request.getOp().getMknod().getFirstChunk() && S_ISREG(request.getOp().getMknod().getMode())) {
    // Replicas for the new file's first chunk, offered with the reply (StateMachine::offerChunk).
    Txn t = store_.reader();
    placement = place(t, sm_.replicas(t));
  }
  return propose(request, kj::mv(placement)).then([this, client, gen](Reply reply) {
    auto r = reply->getRoot<proto::MetaReply>();
    if (client != 0 && r.getErr() == 0 && r.isAttr()) fileOpened(client, r.getAttr().getIno(), gen);
    return reply;
  });
}

void MetaServer::reclaimUnlinked() {
  if (reclaiming_) return;
  for (auto& [client, s] : sessions_)
    if (!s.synced) return;  // it may hold any of them open
  std::vector<uint64_t> due;
  {
    Txn t = store_.reader();
    uint64_t after = 0;
    while (due.size() < MAX_RECLAIM) {
      auto batch = sm_.unlinkedFiles(t, after, 4096);
      if (batch.empty()) break;
      for (auto ino : batch) {
        bool held = false;
        for (auto& [client, s] : sessions_) held = held || s.open.count(ino) > 0;
        if (!held && due.size() < MAX_RECLAIM) due.push_back(ino);
      }
      after = batch.back() + 1;
    }
  }
  if (due.empty()) return;
  capnp::MallocMessageBuilder req;
  auto list = req.initRoot<proto::MetaRequest>().getOp().initReclaim(
      static_cast<unsigned>(due.size()));
  for (size_t i = 0; i < due.size(); i++) list.set(static_cast<unsigned>(i), due[i]);
  reclaiming_ = true;
  repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {})
                        .then([this](Reply) { reclaiming_ = false; },
                              [this](kj::Exception&&) { reclaiming_ = false; }));
}

void MetaServer::expireSessions() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.lastSeen > SESSION_TIMEOUT) {
      spdlog::warn("session of client {:016x} ({}:{}) expired: silent for {} s; its locks are "
                   "released and its {} open files closed", it->first, it->second.host,
                   it->second.mount, SESSION_TIMEOUT.count(), it->second.open.size());
      capnp::MallocMessageBuilder req;
      req.initRoot<proto::MetaRequest>().getOp().setSessionEnd(it->first);
      repairTasks_->add(propose(req.getRoot<proto::MetaRequest>().asReader(), {}).ignoreResult());
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace cairn::meta
