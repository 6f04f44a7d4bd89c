#include "rpc/net.h"

#include <arpa/inet.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "rpc/runtime.h"

namespace cairn {

capnp::ReaderOptions rpcReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = MAX_MESSAGE_BYTES / 8;
  options.nestingLimit = 32;
  return options;
}

namespace {
std::string peerName(kj::AsyncIoStream& stream) {
  struct sockaddr_storage ss;
  uint len = sizeof(ss);
  try {
    stream.getpeername(reinterpret_cast<struct sockaddr*>(&ss), &len);
  } catch (...) {
    return "unknown peer";
  }
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<struct sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in->sin6_port));
  }
  return "unix peer";
}
}  // namespace

struct RpcListener::Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client gate)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, rpcReaderOptions()),
        rpc(capnp::makeRpcServer(network, kj::mv(gate))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

void RpcListener::ErrorHandler::taskFailed(kj::Exception&& e) {
  spdlog::warn("listener: {}", e.getDescription().cStr());
}

RpcListener::RpcListener(kj::AsyncIoContext& io, const ClusterSecret& secret,
                         GateImpl::ServiceFor serviceFor)
    : io_(io), secret_(secret), serviceFor_(kj::mv(serviceFor)), tasks_(errorHandler_) {}

RpcListener::~RpcListener() = default;

kj::Promise<uint> RpcListener::listen(std::string addr) {
  return io_.provider->getNetwork()
      .parseAddress(addr)
      .then([this](kj::Own<kj::NetworkAddress> a) {
        auto receiver = a->listen();
        uint port = receiver->getPort();
        tasks_.add(acceptLoop(*receiver));
        receivers_.add(kj::mv(receiver));
        return port;
      });
}

kj::Promise<void> RpcListener::acceptLoop(kj::ConnectionReceiver& receiver) {
  return receiver.accept().then([this, &receiver](kj::Own<kj::AsyncIoStream> stream) {
    auto name = peerName(*stream);
    capnp::Capability::Client gate = kj::heap<GateImpl>(secret_, serviceFor_, name);
    connections_.push_back(kj::heap<Connection>(kj::mv(stream), kj::mv(gate)));
    auto it = std::prev(connections_.end());
    tasks_.add((*it)->network.onDisconnect().then([this, it]() {
      // Destroy later: we are inside the connection's own callback.
      auto own = kj::mv(*it);
      connections_.erase(it);
      tasks_.add(kj::evalLater([own = kj::mv(own)]() {}));
    }));
    return acceptLoop(receiver);
  });
}

struct Peer::Live {
  Live(kj::Own<kj::AsyncIoStream> s)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, rpcReaderOptions()),
        rpc(capnp::makeRpcClient(network)) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  kj::Maybe<capnp::Capability::Client> service;
  bool broken = false;

  capnp::Capability::Client bootstrap() {
    capnp::word scratch[4];
    memset(scratch, 0, sizeof(scratch));
    capnp::MallocMessageBuilder message(scratch);
    auto vatId = message.getRoot<capnp::rpc::twoparty::VatId>();
    vatId.setSide(capnp::rpc::twoparty::Side::SERVER);
    return rpc.bootstrap(vatId);
  }
};

Peer::Peer(kj::AsyncIoContext& io, const ClusterSecret& secret, std::string addr, proto::Role role,
           PeerOptions options)
    : io_(io),
      secret_(secret),
      addr_(std::move(addr)),
      role_(role),
      options_(options),
      backoff_(options.minBackoff),
      notBefore_(io.provider->getTimer().now()) {}

Peer::~Peer() = default;

void Peer::reset() {
  if (live_) live_->broken = true;
}

kj::Promise<capnp::Capability::Client> Peer::get() {
  if (live_ && !live_->broken) {
    KJ_IF_MAYBE(s, live_->service) { return *s; }
  }
  KJ_IF_MAYBE(c, connecting_) { return c->addBranch(); }
  auto forked = connect().fork();
  auto branch = forked.addBranch();
  connecting_ = kj::mv(forked);
  return branch;
}

kj::Promise<capnp::Capability::Client> Peer::connect() {
  auto& timer = io_.provider->getTimer();
  auto wait = notBefore_ > timer.now() ? timer.atTime(notBefore_) : kj::Promise<void>(kj::READY_NOW);
  auto attempt = wait.then([this]() {
    if (live_) {
      // Keep the broken connection's objects alive until the loop has unwound them.
      auto old = kj::mv(live_);
      kj::evalLater([old = kj::mv(old)]() {}).detach([](kj::Exception&&) {});
    }
    return io_.provider->getNetwork().parseAddress(addr_);
  }).then([](kj::Own<kj::NetworkAddress> a) {
    return a->connect().attach(kj::mv(a));
  }).then([this](kj::Own<kj::AsyncIoStream> stream) {
    live_ = kj::heap<Live>(kj::mv(stream));
    auto gate = live_->bootstrap().castAs<proto::Gate>();
    return authenticate(gate, secret_, role_);
  });
  return timer.timeoutAfter(options_.connectTimeout, kj::mv(attempt))
      .then(
          [this](capnp::Capability::Client service) {
            live_->service = service;
            backoff_ = options_.minBackoff;
            connecting_ = nullptr;
            return service;
          },
          [this](kj::Exception&& e) -> capnp::Capability::Client {
            auto& timer = io_.provider->getTimer();
            notBefore_ = timer.now() + backoff_;
            backoff_ = kj::min(backoff_ * 2, options_.maxBackoff);
            connecting_ = nullptr;
            if (live_) live_->broken = true;
            spdlog::debug("connect to {} failed: {}", addr_, e.getDescription().cStr());
            kj::throwFatalException(kj::mv(e));
          });
}

kj::Maybe<int> Peer::fd() const {
  if (!live_ || live_->broken) return nullptr;
  return live_->stream->getFd();
}

bool isRetryable(const kj::Exception& e) {
  return e.getType() == kj::Exception::Type::DISCONNECTED ||
         e.getType() == kj::Exception::Type::OVERLOADED;
}

}  // namespace cairn
