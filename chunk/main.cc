// cairn-chunk: serves the blocks of the chunks in its data directories.
#include <CLI/CLI.hpp>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <ctime>
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
  std::string uuid, addr, host, zone, rack;
  uint32_t serverId = 0;
  uint64_t inventoryAfter = 0;  // where the next inventory page starts
  struct {
    uint64_t passChunks = 0, doneChunks = 0, corruptFound = 0;
    int64_t lastPassEnd = 0;
  } scrub;  // updated by the scrubber, reported with every beat
  static constexpr size_t INVENTORY_PAGE = 4096;

  kj::Promise<void> registerSelf() {
    auto req = newMetaRequest();
    auto u = store.usage();
    auto op = req->getRoot<proto::MetaRequest>().getOp().initRegisterServer();
    op.setUuid(uuid);
    op.setAddr(addr);
    op.setHost(host);
    op.setZone(zone);
    op.setRack(rack);
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
    // One page of our inventory per beat, walking the store so meta can spot orphaned copies.
    auto ids = store.idsAfter(inventoryAfter, INVENTORY_PAGE);
    op.setInventoryAfter(inventoryAfter);
    auto inv = op.initInventory(ids.size());
    for (size_t i = 0; i < ids.size(); i++) inv.set(i, ids[i]);
    uint64_t next = ids.size() < INVENTORY_PAGE ? 0 : ids.back();
    auto sp = op.initScrub();
    sp.setPassChunks(scrub.passChunks);
    sp.setDoneChunks(scrub.doneChunks);
    sp.setLastPassEnd(scrub.lastPassEnd);
    sp.setCorruptFound(scrub.corruptFound);
    return meta.call(kj::mv(req)).then([this, next](kj::Own<capnp::MallocMessageBuilder> reply) {
      auto r = reply->getRoot<proto::MetaReply>();
      if (r.getErr() == ENOENT) return registerSelf();
      inventoryAfter = next;  // meta forgot us (new cluster state)
      size_t removed = 0;
      uint64_t first = 0;
      for (auto id : r.getGarbage()) {
        if (!store.remove(id)) continue;
        spdlog::debug("removed chunk {:016x} (garbage)", id);
        if (removed++ == 0) first = id;
      }
      if (removed > 0)
        spdlog::info("removed {} chunks meta no longer needs here (garbage; first {:016x})",
                     removed, first);
      return kj::Promise<void>(kj::READY_NOW);
    });
  }

  // Beats at once (meta counts a server online from its first beat, so a server just
  // registered is usable now, not a second later), then every second.
  kj::Promise<void> loop() {
    return beat()
        .catch_([](kj::Exception&& e) {
          spdlog::warn("heartbeat failed: {}", e.getDescription().cStr());
        })
        .then([this]() { return io.provider->getTimer().afterDelay(1 * kj::SECONDS); })
        .then([this]() { return loop(); });
  }
};

// Verifies every stored block's checksum in the background at a bounded rate; a bad copy is
// reported to meta, which drops it and has the chunk repaired from a good one.
struct Scrubber {
  kj::AsyncIoContext& io;
  MetaClient& meta;
  chunk::ChunkStore& store;
  Heartbeat& hb;
  uint64_t rateBytesPerSec;
  Counter& scrubbed;
  Counter& corrupt;
  std::vector<uint64_t> queue;
  size_t next = 0;
  uint32_t block = 0;   // next block of queue[next]
  bool bad = false;     // queue[next] had a bad block
  uint64_t version = 0; // the version of queue[next] being verified
  kj::Duration passInterval = 3600 * kj::SECONDS;  // a new pass starts at most this often
  kj::Maybe<kj::TimePoint> lastPass;

  // One step verifies at most 256 blocks (1 MiB), so the event loop is never held long.
  kj::Promise<void> loop() {
    if (next >= queue.size()) {
      if (!queue.empty() && hb.scrub.passChunks != 0) {
        hb.scrub.lastPassEnd = time(nullptr);  // the pass that just ended
        hb.scrub.passChunks = 0;
      }
      auto now = io.provider->getTimer().now();
      KJ_IF_MAYBE(last, lastPass) {
        if (now - *last < passInterval) {
          // Every copy was verified recently: wait for the next pass (checking every second
          // so that a shorter interval set at start applies at once).
          return io.provider->getTimer().afterDelay(1 * kj::SECONDS).then([this]() { return loop(); });
        }
      }
      queue.clear();
      for (auto& [id, version] : store.list()) queue.push_back(id);
      next = 0;
      block = 0;
      bad = false;
      if (queue.empty()) {
        // Nothing stored: a pass over nothing is done. The first copies written are verified
        // one interval later, not while they are still being written.
        lastPass = now;
        return io.provider->getTimer().afterDelay(1 * kj::SECONDS).then([this]() { return loop(); });
      }
      lastPass = now;
      hb.scrub.passChunks = queue.size();
      hb.scrub.doneChunks = 0;
    }
    uint64_t id = queue[next];
    uint64_t bytes = 0;
    bool done = true;
    if (auto* f = store.find(id)) {
      if (block == 0 || f->version() != version) {
        // A new copy (repaired, or fenced to a new version) since the scan began: start over.
        block = 0;
        bad = false;
        version = f->version();
      }
      chunk::BlockData b;
      uint32_t limit = f->blockLimit();  // never written beyond: nothing to verify there
      uint32_t end = std::min<uint32_t>(limit, block + 256);
      for (; block < end; block++) {
        auto st = f->read(block, b);
        if (st == chunk::ReadStatus::ABSENT) continue;
        bytes += chunk::BLOCK_BYTES;
        if (st == chunk::ReadStatus::CORRUPT) {
          spdlog::error("scrub: chunk {:016x} block {}: checksum mismatch", id, block);
          corrupt.inc();
          bad = true;
        }
      }
      done = block >= limit;
    }
    scrubbed.inc(bytes);
    kj::Promise<void> report = kj::READY_NOW;
    if (done) {
      if (bad && hb.serverId != 0) {
        auto req = newMetaRequest();
        auto op = req->getRoot<proto::MetaRequest>().getOp().initChunkCorrupt();
        op.setId(id);
        op.setServer(hb.serverId);
        op.setVersion(version);
        report = meta.call(kj::mv(req))
                     .then([id](kj::Own<capnp::MallocMessageBuilder> reply) {
                       spdlog::warn("scrub: reported chunk {:016x} as corrupt (meta: {})", id,
                                    reply->getRoot<proto::MetaReply>().getErr());
                     })
                     .catch_([](kj::Exception&& e) {
                       spdlog::warn("scrub: report failed: {}", e.getDescription().cStr());
                     });
      }
      if (bad) hb.scrub.corruptFound++;
      next++;
      hb.scrub.doneChunks = next;
      block = 0;
      bad = false;
    }
    // Pace by the bytes verified; a step over blocks never written costs only its records and
    // just yields the event loop.
    auto pause = rateBytesPerSec == 0
                     ? 10 * kj::MILLISECONDS
                     : static_cast<int64_t>(bytes * 1000000 / rateBytesPerSec) * kj::MICROSECONDS;
    return report
        .then([this, pause]() -> kj::Promise<void> {
          if (pause == 0 * kj::MICROSECONDS) return kj::evalLater([]() {});
          return io.provider->getTimer().afterDelay(pause + 1 * kj::MILLISECONDS);
        })
        .then([this]() { return loop(); });
  }
};

}  // namespace

int main(int argc, char** argv) {
  cairn::keepLargeBuffers();
  CLI::App app{"cairn-chunk: stores the encrypted blocks of cairn chunks"};
  std::string listen, metaAddrs, secretFile, host, metricsAddr, logLevel = "info", logFile;
  std::vector<std::string> dirs;
  app.add_option("--listen", listen, "address to serve on, host:port")->required();
  app.add_option("--meta", metaAddrs, "meta server addresses, comma-separated")->required();
  app.add_option("--secret-file", secretFile, "cluster secret file")->required();
  app.add_option("--data", dirs, "data directory (repeat for several)")->required();
  std::string zone, rack;
  app.add_option("--host", host, "failure-domain host label (default: the listen host)");
  app.add_option("--zone", zone, "failure-domain zone label (replicas spread over zones first)");
  app.add_option("--rack", rack, "failure-domain rack label (then over racks)");
  uint64_t scrubMiBps = 20, scrubIntervalSec = 3600;
  app.add_option("--scrub-mib-per-sec", scrubMiBps, "background checksum verification rate (0 off)");
  app.add_option("--scrub-interval-s", scrubIntervalSec,
                 "start a new verification pass over every copy at most this often");
  app.add_option("--metrics", metricsAddr, "address for Prometheus /metrics, host:port");
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error");
  app.add_option("--log-file", logFile, "log to this file instead of stderr");
  uint64_t capacity = 0;
  app.add_option("--capacity", capacity,
                 "bytes this server offers, at most its disks' size (default: all of it)");
  CLI11_PARSE(app, argc, argv);

  KjToSpdlog kjLogs;
  setupLogging("cairn-chunk", logLevel, logFile);
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    // Metrics outlive the event loop: a request still in flight when it is torn down observes
    // its latency as it goes; what serves /metrics stops while the loop is still there.
    Metrics metrics;
    auto io = kj::setupAsyncIo();
    KJ_DEFER(metrics.stopServing());
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
    store.limitCapacity(capacity);
    metrics.gauge("cairn_chunk_chunks", "Chunks stored",
                  [&store]() { return static_cast<double>(store.count()); });
    metrics.gauge("cairn_chunk_capacity_bytes", "Bytes this server offers (its disks or --capacity)",
                  [&store]() { return static_cast<double>(store.usage().capacityBytes); });
    metrics.gauge("cairn_chunk_used_bytes", "Bytes its chunk files take on disk",
                  [&store]() { return static_cast<double>(store.usage().usedBytes); });
    metrics.gauge("cairn_chunk_spare_files", "Empty files ready to become new chunks",
                  [&store]() { return static_cast<double>(store.spares()); });
    metrics.gauge("cairn_chunk_discarded_files",
                  "Removed chunks' files renamed away and not yet unlinked",
                  [&store]() { return static_cast<double>(store.discarding()); });
    capnp::Capability::Client service = kj::heap<chunk::ChunkServiceImpl>(io, secret, store, metrics);
    RpcListener listener(io, secret, [service](proto::Role) mutable { return service; });
    uint port = listener.listen(listen).wait(io.waitScope);
    spdlog::info("serving chunks on {} (port {}), data in {}", listen, port, fmt::join(dirs, ", "));
    if (!metricsAddr.empty()) {
      uint mport = metrics.serve(io, metricsAddr).wait(io.waitScope);
      spdlog::info("metrics on port {}", mport);
    }

    Heartbeat hb{io, meta, store, loadOrMakeUuid(dirs[0]), listen, host, zone, rack};
    hb.registerSelf().wait(io.waitScope);
    auto beating = hb.loop().eagerlyEvaluate([](kj::Exception&& e) {
      spdlog::error("heartbeat loop ended: {}", e.getDescription().cStr());
    });
    Scrubber scrubber{io, meta, store, hb, scrubMiBps << 20,
                      metrics.counter("cairn_chunk_scrubbed_bytes_total", "Bytes verified by the scrubber"),
                      metrics.counter("cairn_chunk_scrub_corrupt_total", "Corrupt chunks found by the scrubber"),
                      {}, 0, 0, false};
    scrubber.passInterval = static_cast<int64_t>(scrubIntervalSec) * kj::SECONDS;
    kj::Promise<void> scrubbing = kj::READY_NOW;
    if (scrubMiBps > 0) {
      scrubbing = scrubber.loop().eagerlyEvaluate([](kj::Exception&& e) {
        spdlog::error("scrubber ended: {}", e.getDescription().cStr());
      });
    }

    spdlog::info("stopping on signal {}", waitForTermination(io));
  } catch (kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
