// cairn-meta: the metadata server.
#include <CLI/CLI.hpp>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <csignal>

#include "meta/service.h"
#include "rpc/net.h"
#include "rpc/runtime.h"

using namespace cairn;

int main(int argc, char** argv) {
  CLI::App app{"cairn-meta: the metadata server of a cairn cluster"};
  std::string listen, dataDir, secretFile, metricsAddr, logLevel = "info", logFile;
  meta::Format format;
  uint64_t chunkSizeMiB = 64;
  int suspectMs = 3000, deadMs = 10000;
  app.add_option("--listen", listen, "address to serve on, host:port")->required();
  app.add_option("--data", dataDir, "directory of the LMDB store")->required();
  app.add_option("--secret-file", secretFile, "cluster secret file")->required();
  app.add_option("--chunk-size-mib", chunkSizeMiB, "chunk size, fixed when the store is created");
  app.add_option("--replicas", format.replicas, "copies of every chunk, fixed at creation")
      ->check(CLI::Range(1, 8));
  app.add_option("--suspect-after-ms", suspectMs, "chunk server silent this long is suspect");
  app.add_option("--dead-after-ms", deadMs, "chunk server silent this long is dead");
  app.add_option("--metrics", metricsAddr, "address for Prometheus /metrics, host:port");
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error");
  app.add_option("--log-file", logFile, "log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);
  format.chunkSizeBytes = chunkSizeMiB << 20;

  KjToSpdlog kjLogs;
  setupLogging("cairn-meta", logLevel, logFile);
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    auto io = kj::setupAsyncIo();
    auto secret = ClusterSecret::fromFile(secretFile);
    meta::Store store(dataDir);
    unsigned char raw[16];
    randombytes_buf(raw, sizeof(raw));
    meta::StateMachine(store).formatIfEmpty(format, wallClockNs(), toHex(raw, sizeof(raw)));

    Metrics metrics;
    meta::MetaServer server(store, metrics,
                            meta::ServerTimeouts{std::chrono::milliseconds(suspectMs),
                                                 std::chrono::milliseconds(deadMs)},
                            listen);
    capnp::Capability::Client service = kj::heap<meta::MetaServiceImpl>(server, metrics);
    RpcListener listener(io, secret, [service](proto::Role) mutable { return service; });
    uint port = listener.listen(listen).wait(io.waitScope);
    spdlog::info("serving metadata on {} (port {}), store in {}, log index {}", listen, port,
                 dataDir, server.lastLogIndex());
    if (!metricsAddr.empty()) {
      uint mport = metrics.serve(io, metricsAddr).wait(io.waitScope);
      spdlog::info("metrics on port {}", mport);
    }
    kj::UnixEventPort::captureSignal(SIGTERM);
    kj::UnixEventPort::captureSignal(SIGINT);
    auto term = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
    auto sig = term.wait(io.waitScope);
    spdlog::info("stopping on signal {}", sig.si_signo);
  } catch (kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
