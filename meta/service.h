// cairn-meta's serving logic (MetaServer) and its thin Cap'n Proto adapter (MetaServiceImpl).
//
// Mutations become Commands (stamped with the leader's time and, for chunk allocation, its
// placement), are appended to the log and applied in one LMDB transaction per batch: every
// request that arrives while a batch commits joins the next one, so one fsync covers many
// changes (group commit). A reply is sent only after its batch is durable.
#pragma once

#include <capnp/message.h>
#include <kj/async-io.h>

#include <chrono>
#include <map>
#include <random>
#include <vector>

#include "meta/state_machine.h"
#include "rpc/metrics.h"

namespace cairn::meta {

struct ServerTimeouts {
  std::chrono::milliseconds suspectAfter{3000};
  std::chrono::milliseconds deadAfter{10000};
};

class MetaServer {
 public:
  MetaServer(Store& store, Metrics& metrics, ServerTimeouts timeouts, std::string selfAddr);

  using Reply = kj::Own<capnp::MallocMessageBuilder>;
  kj::Promise<Reply> handle(proto::MetaRequest::Reader request);

  uint64_t lastLogIndex() const { return lastIndex_; }

 private:
  struct LiveServer {
    uint64_t capacityBytes = 0;
    uint64_t usedBytes = 0;
    uint64_t chunks = 0;
    std::chrono::steady_clock::time_point lastBeat{};
    bool seen = false;
  };
  struct Pending {
    kj::Own<capnp::MallocMessageBuilder> command;
    kj::Own<kj::PromiseFulfiller<Reply>> fulfiller;
  };

  kj::Promise<Reply> propose(proto::MetaRequest::Reader request, std::vector<uint32_t> placement);
  void flush();
  Reply readOnly(proto::MetaRequest::Reader request);
  Reply status();
  Reply statfs();
  kj::Promise<Reply> heartbeat(proto::MetaRequest::Reader request);
  std::vector<uint32_t> place(Txn& t, uint32_t replicas);
  const char* stateOf(uint32_t id) const;

  Store& store_;
  StateMachine sm_;
  Metrics& metrics_;
  ServerTimeouts timeouts_;
  std::string selfAddr_;
  std::map<uint32_t, LiveServer> live_;
  std::vector<Pending> pending_;
  bool flushScheduled_ = false;
  uint64_t lastIndex_ = 0;
  std::mt19937_64 rng_;
  Counter& commits_;
  Counter& batchedCommands_;
  Histogram& commitLatency_;
};

class MetaServiceImpl final : public proto::Meta::Server {
 public:
  MetaServiceImpl(MetaServer& server, Metrics& metrics) : server_(server), metrics_(metrics) {}
  kj::Promise<void> call(CallContext context) override;

 private:
  MetaServer& server_;
  Metrics& metrics_;
};

}  // namespace cairn::meta
