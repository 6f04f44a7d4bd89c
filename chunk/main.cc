// cairn-chunk: serves the blocks of the chunks in its data directories.
#include <CLI/CLI.hpp>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <fstream>

#include "chunk/service.h"
#include "chunk/store.h"
#include "rpc/meta_client.h"
#include "rpc/runtime.h"

using namespace cairn;

namespace {

// The server's identity survives restarts: a random uuid kept in the first data directory.
std::string loadOrMakeUuid(const std::string& dir) {
  std::string path = dir + "/server.uuid";
  std::ifstream in(path);
  std::string uuid;
  if (in >> uuid && uuid.size() == 32) return uuid;
  unsigned char raw[16];
  randombytes_buf(raw, sizeof(raw));
  uuid = toHex(raw, sizeof(raw));
  std::ofstream out(path + ".tmp");
  out << uuid << "\n";
  out.close();
  KJ_SYSCALL(rename((path + ".tmp").c_str(), path.c_str()));
  return uuid;
}

struct Heartbeat {
  kj::AsyncIoContext& io;
  MetaClient& meta;
  chunk::ChunkStore& store;
  std::string uuid, addr, host;
  uint32_t serverId = 0;

  kj::Promise<void> registerSelf() {
    auto req = newMetaRequest();
    auto u = store.usage();
    auto op = req->getRoot<proto::MetaRequest>().getOp().initRegisterServer();
    op.setUuid(uuid);
    op.setAddr(addr);
    op.setHost(host);
    op.setCapacityBytes(u.capacityBytes);
    op.setUsedBytes(u.usedBytes);
    op.setChunks(u.chunks);
    return meta.call(kj::mv(req)).then([this](kj::Own<capnp::MallocMessageBuilder> reply) {
      auto r = reply->getRoot<proto::MetaReply>();
      KJ_REQUIRE(r.getErr() == 0, "registration refused", r.getErr());
      serverId = r.getServerId();
      spdlog::info("registered with meta as chunk server {} ({})", serverId, addr);
    });
  }

  kj::Promise<void> beat() {
    auto req = newMetaRequest();
    auto u = store.usage();
    auto op = req->getRoot<proto::MetaRequest>().getOp().initHeartbeat();
    op.setServer(serverId);
    op.setCapacityBytes(u.capacityBytes);
    op.setUsedBytes(u.usedBytes);
    op.setChunks(u.chunks);
    return meta.call(kj::mv(req)).then([this](kj::Own<capnp::MallocMessageBuilder> reply) {
      auto r = reply->getRoot<proto::MetaReply>();
      if (r.getErr() == ENOENT) return registerSelf();  // meta forgot us (new cluster state)
      for (auto id : r.getGarbage()) {
        if (store.remove(id)) spdlog::info("removed chunk {:016x} (garbage)", id);
      }
      return kj::Promise<void>(kj::READY_NOW);
    });
  }

  kj::Promise<void> loop() {
    return io.provider->getTimer().afterDelay(1 * kj::SECONDS).then([this]() {
      return beat().catch_([](kj::Exception&& e) {
        spdlog::warn("heartbeat failed: {}", e.getDescription().cStr());
      });
    }).then([this]() { return loop(); });
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn-chunk: stores the encrypted blocks of cairn chunks"};
  std::string listen, metaAddrs, secretFile, host, metricsAddr, logLevel = "info", logFile;
  std::vector<std::string> dirs;
  app.add_option("--listen", listen, "address to serve on, host:port")->required();
  app.add_option("--meta", metaAddrs, "meta server addresses, comma-separated")->required();
  app.add_option("--secret-file", secretFile, "cluster secret file")->required();
  app.add_option("--data", dirs, "data directory (repeat for several)")->required();
  app.add_option("--host", host, "failure-domain host label (default: the listen host)");
  app.add_option("--metrics", metricsAddr, "address for Prometheus /metrics, host:port");
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error");
  app.add_option("--log-file", logFile, "log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);

  KjToSpdlog kjLogs;
  setupLogging("cairn-chunk", logLevel, logFile);
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    auto io = kj::setupAsyncIo();
    auto secret = ClusterSecret::fromFile(secretFile);
    if (host.empty()) host = listen.substr(0, listen.rfind(':'));
    uint64_t clientId;
    randombytes_buf(&clientId, sizeof(clientId));
    MetaClient meta(io, secret, splitList(metaAddrs), proto::Role::SERVER, clientId,
                    24 * 3600 * kj::SECONDS);

    auto infoReq = newMetaRequest();
    infoReq->getRoot<proto::MetaRequest>().getOp().setClusterInfo();
    auto info = meta.call(kj::mv(infoReq)).wait(io.waitScope);
    uint64_t chunkSize = info->getRoot<proto::MetaReply>().getInfo().getChunkSizeBytes();
    KJ_REQUIRE(chunkSize > 0 && chunkSize % chunk::BLOCK_BYTES == 0, "bad chunk size from meta",
               chunkSize);

    chunk::ChunkStore store(dirs, static_cast<uint32_t>(chunkSize / chunk::BLOCK_BYTES));
    Metrics metrics;
    metrics.gauge("cairn_chunk_chunks", "Chunks stored", [&store]() {
      return static_cast<double>(store.list().size());
    });
    capnp::Capability::Client service = kj::heap<chunk::ChunkServiceImpl>(io, secret, store, metrics);
    RpcListener listener(io, secret, [service](proto::Role) mutable { return service; });
    uint port = listener.listen(listen).wait(io.waitScope);
    spdlog::info("serving chunks on {} (port {}), data in {}", listen, port, fmt::join(dirs, ", "));
    if (!metricsAddr.empty()) {
      uint mport = metrics.serve(io, metricsAddr).wait(io.waitScope);
      spdlog::info("metrics on port {}", mport);
    }

    Heartbeat hb{io, meta, store, loadOrMakeUuid(dirs[0]), listen, host};
    hb.registerSelf().wait(io.waitScope);
    auto beating = hb.loop().eagerlyEvaluate([](kj::Exception&& e) {
      spdlog::error("heartbeat loop ended: {}", e.getDescription().cStr());
    });

    spdlog::info("stopping on signal {}", waitForTermination(io));
  } catch (kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
