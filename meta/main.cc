// cairn-meta: the metadata server, one member of a Raft group of 1, 3 or 5.
#include <CLI/CLI.hpp>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <csignal>

#include "meta/raft/node.h"
#include "meta/service.h"
#include "rpc/net.h"
#include "rpc/runtime.h"

using namespace cairn;

int main(int argc, char** argv) {
  cairn::keepLargeBuffers();
  CLI::App app{"cairn-meta: the metadata server of a cairn cluster"};
  std::string listen, dataDir, secretFile, metricsAddr, peersList, logLevel = "info", logFile;
  meta::Format format;
  uint64_t chunkSizeMiB = 64;
  uint64_t id = 1;
  int suspectMs = 3000, deadMs = 10000, tickMs = 100, electionTicks = 10;
  int64_t gcGraceMs = 60000;
  uint64_t snapshotEvery = 10000;
  int logSyncDelayMs = 5;
  uint64_t repairMiBps = 100;
  size_t repairConcurrency = 2;
  app.add_option("--listen", listen, "address to serve on, host:port")->required();
  app.add_option("--data", dataDir, "directory of the LMDB stores")->required();
  app.add_option("--secret-file", secretFile, "cluster secret file")->required();
  app.add_option("--id", id, "this server's Raft id (1, 2, ...)")->check(CLI::Range(1, 1 << 30));
  app.add_option("--peers", peersList,
                 "initial members as ID=HOST:PORT,... (default: this server alone); "
                 "empty on a server that joins later through `cairn meta add`");
  app.add_flag("--join", [&](int64_t) { peersList = "join"; },
               "start with no members: wait to be added by `cairn meta add`");
  app.add_option("--chunk-size-mib", chunkSizeMiB, "chunk size, fixed when the cluster is formatted");
  app.add_option("--replicas", format.replicas, "copies of every chunk, fixed at format")
      ->check(CLI::Range(1, 8));
  app.add_option("--suspect-after-ms", suspectMs, "chunk server silent this long is suspect");
  app.add_option("--dead-after-ms", deadMs, "chunk server silent this long is dead");
  app.add_option("--gc-grace-ms", gcGraceMs,
                 "deleted copies wait this long before removal; an orphaned copy must be seen "
                 "this long")
      ->check(CLI::Range(int64_t(0), int64_t(7) * 24 * 3600 * 1000));
  app.add_option("--tick-ms", tickMs, "Raft tick");
  app.add_option("--election-ticks", electionTicks, "Raft election timeout, in ticks (randomized up to twice)");
  app.add_option("--snapshot-every", snapshotEvery, "compact the Raft log every this many entries");
  app.add_option("--log-sync-delay-ms", logSyncDelayMs,
                 "the leader syncs its own log entries behind them, this long after the first "
                 "one not synced (0: at once); fsync() and admin commands always wait for it")
      ->check(CLI::Range(0, 10000));
  app.add_option("--repair-mib-per-sec", repairMiBps, "total throttle of chunk repair copies");
  app.add_option("--repair-concurrency", repairConcurrency, "chunk repairs at a time");
  app.add_option("--metrics", metricsAddr, "address for Prometheus /metrics, host:port");
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error");
  app.add_option("--log-file", logFile, "log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);
  format.chunkSizeBytes = chunkSizeMiB << 20;

  KjToSpdlog kjLogs;
  setupLogging("cairn-meta", logLevel, logFile);
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    raft::NodeOptions options;
    options.id = id;
    options.dataDir = dataDir;
    options.selfAddr = listen;
    options.tick = tickMs * kj::MILLISECONDS;
    options.electionTicks = electionTicks;
    options.snapshotEvery = snapshotEvery;
    options.logSyncDelay = logSyncDelayMs * kj::MILLISECONDS;
    if (peersList.empty()) {
      options.peers[id] = listen;
    } else if (peersList != "join") {
      for (auto& p : splitList(peersList)) {
        auto eq = p.find('=');
        KJ_REQUIRE(eq != std::string::npos, "--peers wants ID=HOST:PORT entries", p);
        options.peers[std::stoull(p.substr(0, eq))] = p.substr(eq + 1);
      }
      KJ_REQUIRE(options.peers.count(id), "--peers must include this server's own id", id);
    }

    // Metrics outlive the event loop: a request still in flight when it is torn down observes
    // its latency as it goes; what serves /metrics stops while the loop is still there.
    Metrics metrics;
    auto io = kj::setupAsyncIo();
    KJ_DEFER(metrics.stopServing());
    auto secret = ClusterSecret::fromFile(secretFile);
    meta::Store store(dataDir);
    meta::MetaServer server(store, metrics,
                            meta::ServerTimeouts{std::chrono::milliseconds(suspectMs),
                                                 std::chrono::milliseconds(deadMs),
                                                 std::chrono::milliseconds(gcGraceMs)},
                            format);
    raft::RaftNode node(io, secret, options, server, metrics);
    server.attach(node);
    capnp::Capability::Client client =
        kj::heap<meta::MetaServiceImpl>(server, metrics, proto::Role::CLIENT);
    capnp::Capability::Client chunkServer =
        kj::heap<meta::MetaServiceImpl>(server, metrics, proto::Role::SERVER);
    capnp::Capability::Client admin =
        kj::heap<meta::MetaServiceImpl>(server, metrics, proto::Role::ADMIN);
    capnp::Capability::Client peer = kj::heap<meta::MetaPeerImpl>(node);
    RpcListener listener(io, secret, [=](proto::Role role) mutable -> capnp::Capability::Client {
      switch (role) {
        case proto::Role::PEER: return peer;
        case proto::Role::SERVER: return chunkServer;
        case proto::Role::ADMIN: return admin;
        default: return client;
      }
    });
    uint port = listener.listen(listen).wait(io.waitScope);
    node.start();
    server.startRepairs(io, secret, repairMiBps << 20, repairConcurrency);
    spdlog::info("serving metadata on {} (port {}) as meta server {}, stores in {}", listen, port,
                 id, dataDir);
    if (!metricsAddr.empty()) {
      uint mport = metrics.serve(io, metricsAddr).wait(io.waitScope);
      spdlog::info("metrics on port {}", mport);
    }
    spdlog::info("stopping on signal {}", waitForTermination(io));
  } catch (kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
