// The leader's side of coherence between clients: mounts long-poll the change feed (which also
// keeps their session alive), and are answered as soon as a committed change arrives or after
// their wait. See meta/change_feed.h.
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "meta/service.h"

namespace cairn::meta {

uint64_t MetaServer::newEpoch() {
  uint64_t e;
  randombytes_buf(&e, sizeof(e));
  return e | 1;
}

MetaServer::Reply MetaServer::changesReply(const ChangeFeed::Page& page) {
  auto reply = kj::heap<capnp::MallocMessageBuilder>();
  auto out = reply->initRoot<proto::MetaReply>().initChanges();
  out.setEpoch(page.epoch);
  out.setNext(page.next);
  out.setLost(page.lost);
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
  uint64_t client = request.getClientId();
  if (client != 0) {
    auto [it, fresh] = sessions_.try_emplace(client);
    if (fresh) {
      spdlog::info("session of client {:016x} ({}:{}) opened", client, w.getHost().cStr(),
                   w.getMount().cStr());
    }
    it->second.host = w.getHost().cStr();
    it->second.mount = w.getMount().cStr();
    it->second.lastSeen = std::chrono::steady_clock::now();
  }
  auto page = feed_.since(w.getEpoch(), w.getAfter(), MAX_PAGE);
  if (!page.changes.empty() || page.lost || w.getEpoch() != feed_.epoch() ||
      watchers_.size() >= MAX_WATCHERS) {
    return changesReply(page);
  }
  auto paf = kj::newPromiseAndFulfiller<Reply>();
  watchers_.push_back(Watcher{w.getEpoch(), w.getAfter(), kj::mv(paf.fulfiller)});
  uint32_t waitMs = std::min<uint32_t>(w.getWaitMs(), 30000);
  uint64_t epoch = w.getEpoch(), after = w.getAfter();
  return paf.promise.exclusiveJoin(
      io_->provider->getTimer().afterDelay(waitMs * kj::MILLISECONDS).then([this, epoch, after]() {
        return changesReply(feed_.since(epoch, after, MAX_PAGE));
      }));
}

void MetaServer::wakeWatchers() {
  if (watchers_.empty()) return;
  std::vector<Watcher> still;
  for (auto& w : watchers_) {
    if (!w.fulfiller->isWaiting()) continue;  // answered by its timeout
    auto page = feed_.since(w.epoch, w.after, MAX_PAGE);
    if (page.changes.empty() && !page.lost) {
      still.push_back(kj::mv(w));
      continue;
    }
    w.fulfiller->fulfill(changesReply(page));
  }
  watchers_ = kj::mv(still);
}

void MetaServer::expireSessions() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.lastSeen > SESSION_TIMEOUT) {
      spdlog::warn("session of client {:016x} ({}:{}) expired: silent for {} s; its locks are "
                   "released", it->first, it->second.host, it->second.mount,
                   SESSION_TIMEOUT.count());
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
