#include "rpc/meta_client.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <cerrno>

namespace cairn {

kj::Own<capnp::MallocMessageBuilder> newMetaRequest() {
  auto m = kj::heap<capnp::MallocMessageBuilder>();
  m->initRoot<proto::MetaRequest>();
  return m;
}

MetaClient::MetaClient(kj::AsyncIoContext& io, const ClusterSecret& secret,
                       std::vector<std::string> addrs, proto::Role role, uint64_t clientId,
                       kj::Duration retryFor, std::atomic<uint64_t>* sharedSeq)
    : io_(io), secret_(secret), addrs_(std::move(addrs)), role_(role), clientId_(clientId),
      sharedSeq_(sharedSeq), retryFor_(retryFor) {
  KJ_REQUIRE(!addrs_.empty(), "no meta server address given");
  for (auto& a : addrs_) peers_.push_back(std::make_unique<Peer>(io_, secret_, a, role_));
}

MetaClient::~MetaClient() = default;

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
  if (root.getSeq() == 0) root.setSeq(sharedSeq_ ? sharedSeq_->fetch_add(1) : nextSeq_++);
  auto deadline = io_.provider->getTimer().now() + retryFor_;
  auto holder = std::make_shared<kj::Own<capnp::MallocMessageBuilder>>(kj::mv(request));
  std::shared_ptr<capnp::MallocMessageBuilder> shared(holder, holder->get());
  return attempt(kj::mv(shared), deadline, 20 * kj::MILLISECONDS);
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
