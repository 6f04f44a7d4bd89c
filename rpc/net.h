// Connections between cairn processes: a listener that puts a Gate in front of every accepted
// connection, and a Peer that connects, authenticates, and reconnects with backoff.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/vector.h>
#include <kj/timer.h>

#include <functional>
#include <list>
#include <string>

#include "rpc/auth.h"

namespace cairn {

capnp::ReaderOptions rpcReaderOptions();

// Accepts connections on one address and serves each through its own Gate.
class RpcListener {
 public:
  RpcListener(kj::AsyncIoContext& io, const ClusterSecret& secret, GateImpl::ServiceFor serviceFor);
  ~RpcListener();

  // Binds `addr` ("host:port", port 0 picks one) and returns the bound port. Serving goes on in
  // the background until the listener is destroyed.
  kj::Promise<uint> listen(std::string addr);

  size_t connectionCount() const { return connections_.size(); }

 private:
  struct Connection;
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver);

  kj::AsyncIoContext& io_;
  const ClusterSecret& secret_;
  GateImpl::ServiceFor serviceFor_;
  kj::Vector<kj::Own<kj::ConnectionReceiver>> receivers_;
  std::list<kj::Own<Connection>> connections_;
  kj::TaskSet tasks_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
};

struct PeerOptions {
  kj::Duration connectTimeout = 5 * kj::SECONDS;
  kj::Duration minBackoff = 50 * kj::MILLISECONDS;
  kj::Duration maxBackoff = 2 * kj::SECONDS;
};

// One authenticated connection to a server at a fixed address, made on first use and made again
// after it breaks. Lives on one event loop.
class Peer {
 public:
  Peer(kj::AsyncIoContext& io, const ClusterSecret& secret, std::string addr, proto::Role role,
       PeerOptions options = {});
  ~Peer();

  // The authenticated service capability. Connects (or waits out the backoff) when needed.
  kj::Promise<capnp::Capability::Client> get();

  // Drops the connection after a call saw it fail, so the next get() reconnects.
  void reset();

  const std::string& addr() const { return addr_; }
  // The live connection's socket, if there is one.
  kj::Maybe<int> fd() const;

 private:
  struct Live;
  kj::Promise<capnp::Capability::Client> connect();

  kj::AsyncIoContext& io_;
  const ClusterSecret& secret_;
  std::string addr_;
  proto::Role role_;
  PeerOptions options_;
  kj::Own<Live> live_;
  kj::Maybe<kj::ForkedPromise<capnp::Capability::Client>> connecting_;
  kj::Duration backoff_;
  kj::TimePoint notBefore_;
};

// True for failures that a reconnect and resend can cure.
bool isRetryable(const kj::Exception& e);

}  // namespace cairn
