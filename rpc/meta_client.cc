#include "rpc/meta_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <cerrno>

namespace cairn {

kj::Own<capnp::MallocMessageBuilder> newMetaRequest() {
  auto m = kj::heap<capnp::MallocMessageBuilder>();
  m->initRoot<proto::MetaRequest>();
  return m;
}

uint64_t SeqSource::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  outstanding_.insert(next_);
  return next_++;
}

void SeqSource::done(uint64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  outstanding_.erase(seq);
}

uint64_t SeqSource::ackedBelow() {
  std::lock_guard<std::mutex> lock(mutex_);
  return outstanding_.empty() ? next_ : *outstanding_.begin();
}

MetaClient::MetaClient(kj::AsyncIoContext& io, const ClusterSecret& secret,
                       std::vector<std::string> addrs, proto::Role role, uint64_t clientId,
                       kj::Duration retryFor, std::shared_ptr<SeqSource> seqs)
    : io_(io), secret_(secret), addrs_(std::move(addrs)), role_(role), clientId_(clientId),
      seqs_(seqs ? std::move(seqs) : std::make_shared<SeqSource>()), retryFor_(retryFor) {
  KJ_REQUIRE(!addrs_.empty(), "no meta server address given");
  for (auto& a : addrs_) peers_.push_back(std::make_unique<Peer>(io_, secret_, a, role_));
}

MetaClient::~MetaClient() = default;

void MetaClient::release() { dropHeldAt(1); }

kj::Maybe<int> MetaClient::leaderFd() const {
  if (leader_ >= peers_.size()) return nullptr;
  return peers_[leader_]->fd();
}

void MetaClient::releaseAndFlush(kj::WaitScope& waitScope) {
  if (!heldReach(1)) return waitScope.poll();
  int fd = -1;
  KJ_IF_MAYBE(f, leaderFd()) { fd = *f; }
  int on = 1, off = 0;
  bool corked = fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0;
  release();
  waitScope.poll();
  if (corked) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof(off));
}

bool MetaClient::heldReach(size_t times) const {
  return held_.size() >= times * RELEASE_BATCH || heldBytes_ >= times * RELEASE_BYTES;
}

void MetaClient::dropHeldAt(size_t times) {
  if (!heldReach(times)) return;
  held_.clear();
  heldBytes_ = 0;
}

size_t MetaClient::indexOf(const std::string& addr) {
  for (size_t i = 0; i < addrs_.size(); i++)
    if (addrs_[i] == addr) return i;
  addrs_.push_back(addr);
  peers_.push_back(std::make_unique<Peer>(io_, secret_, addr, role_));
  return addrs_.size() - 1;
}

kj::Promise<kj::Own<capnp::MallocMessageBuilder>> MetaClient::call(
    kj::Own<capnp::MallocMessageBuilder> request) {
  auto root = request->getRoot<proto::MetaRequest>();
  root.setClientId(clientId_);
  uint64_t taken = 0;
  if (root.getSeq() == 0) root.setSeq(taken = seqs_->take());
  root.setAckedBelow(seqs_->ackedBelow());
  auto deadline = io_.provider->getTimer().now() + retryFor_;
  auto holder = std::make_shared<kj::Own<capnp::MallocMessageBuilder>>(kj::mv(request));
  std::shared_ptr<capnp::MallocMessageBuilder> shared(holder, holder->get());
  auto p = attempt(kj::mv(shared), deadline, 20 * kj::MILLISECONDS);
  if (taken == 0) return p;
  // Answered, or given up on (never to be resent): its reply may be forgotten.
  return p.attach(kj::defer([seqs = seqs_, taken]() { seqs->done(taken); }));
}

kj::Promise<kj::Own<capnp::MallocMessageBuilder>> MetaClient::attempt(
    std::shared_ptr<capnp::MallocMessageBuilder> request, kj::TimePoint deadline,
    kj::Duration backoff) {
  auto& timer = io_.provider->getTimer();
  size_t which = leader_;
  auto sent = peers_[which]->get().then([request](capnp::Capability::Client cap) {
    auto req = cap.castAs<proto::Meta>().callRequest();
    req.setRequest(request->getRoot<proto::MetaRequest>().asReader());
    return req.send();
  });
  auto next = kj::min(backoff * 2, 1 * kj::SECONDS);
  return timer.timeoutAfter(30 * kj::SECONDS, kj::mv(sent))
      .then(
          [this, request, deadline, backoff, next](
              capnp::Response<proto::Meta::CallResults> response) mutable
              -> kj::Promise<kj::Own<capnp::MallocMessageBuilder>> {
            auto reply = response.getReply();
            auto& timer = io_.provider->getTimer();
            if (reply.getErr() == EAGAIN && timer.now() < deadline) {
              // Not the leader: go where it points, or try the next server while an election
              // runs.
              if (reply.getLeader().size() > 0) {
                leader_ = indexOf(reply.getLeader());
              } else {
                leader_ = (leader_ + 1) % addrs_.size();
              }
              return timer.afterDelay(backoff).then([this, request, deadline, next]() mutable {
                return attempt(kj::mv(request), deadline, next);
              });
            }
            auto out = kj::heap<capnp::MallocMessageBuilder>();
            out->setRoot(reply);
            dropHeldAt(2);
            heldBytes_ += response.totalSize().wordCount * sizeof(capnp::word);
            held_.push_back(kj::mv(response));
            return kj::mv(out);
          },
          [this, request, which, deadline, backoff, next](kj::Exception&& e) mutable
              -> kj::Promise<kj::Own<capnp::MallocMessageBuilder>> {
            auto& timer = io_.provider->getTimer();
            if (!isRetryable(e) || timer.now() > deadline) kj::throwFatalException(kj::mv(e));
            peers_[which]->reset();
            if (addrs_.size() > 1 && leader_ == which) leader_ = (which + 1) % addrs_.size();
            spdlog::warn("meta {}: {}; retrying", addrs_[which], e.getDescription().cStr());
            return timer.afterDelay(backoff).then([this, request, deadline, next]() mutable {
              return attempt(kj::mv(request), deadline, next);
            });
          });
}

}  // namespace cairn
