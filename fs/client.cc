#include "fs/client.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "chunk/chunk_file.h"
#include "fs/read_buffer.h"

namespace cairn::fs {

namespace {
constexpr uint32_t MAX_BLOCKS_PER_RPC = 256;  // 1 MiB
constexpr uint32_t SPLIT_BLOCKS = 32;         // a read of 2 x 128 KiB or more uses several replicas
constexpr size_t SEAL_GRAIN = 32, OPEN_GRAIN = 32;  // blocks per piece of pool work
static_assert(BLOCK == chunk::BLOCK_BYTES && AUX == chunk::AUX_BYTES);
std::atomic<uint64_t> nextInstance{1};

// What a thread that talks to the cluster keeps: its event loop and, per ClusterClient, the
// secret and the connections (members are destroyed bottom up: connections before the loop).
struct ThreadIo {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::map<uint64_t, kj::Own<ClusterSecret>> secrets;
  std::map<uint64_t, kj::Own<MetaClient>> metas;
  std::map<uint64_t, std::map<std::string, std::unique_ptr<Peer>>> chunkPeers;
};
thread_local std::unique_ptr<ThreadIo> threadIo;
thread_local bool threadHasOtherLoop = false;
thread_local bool threadLoopRan = false;  // since the last settle()
thread_local ClusterClient::WaitCompanion waitCompanion = nullptr;
thread_local kj::Duration threadRetry = 120 * kj::SECONDS;
thread_local const void* loopThreadOf = nullptr;  // on a client's shared loop thread: the client

}  // namespace

void toChunkLoc(proto::ChunkInfo::Reader c, ChunkLoc& out) {
  out.index = c.getIndex();
  out.id = c.getId();
  out.version = c.getVersion();
  out.addrs.clear();
  out.servers.clear();
  out.unbound = false;
  for (auto rep : c.getReplicas()) {
    out.addrs.emplace_back(rep.getAddr().cStr());
    out.servers.push_back(rep.getServer());
  }
}

void fromChunkLoc(const ChunkLoc& loc, proto::ChunkInfo::Builder out) {
  out.setIndex(loc.index);
  out.setId(loc.id);
  out.setVersion(loc.version);
  auto reps = out.initReplicas(static_cast<unsigned>(loc.addrs.size()));
  for (size_t i = 0; i < loc.addrs.size(); i++) {
    reps[i].setAddr(loc.addrs[i]);
    if (i < loc.servers.size()) reps[i].setServer(loc.servers[i]);
  }
}

ClusterClient::ClusterClient(std::vector<std::string> metaAddrs, const std::string& secretBytes,
                             BlockCipher& cipher)
    : cipher_(cipher), instance_(nextInstance.fetch_add(1)), metaAddrs_(metaAddrs) {
  secret_ = kj::heap<ClusterSecret>(ClusterSecret::fromBytes(secretBytes));
  randombytes_buf(&clientId_, sizeof(clientId_));
  clientId_ |= 1;  // never 0 (0 means "no retry memory")
  uint64_t clientId = clientId_;
  loop_.run([&]() {
    loopThreadOf = this;
    meta_ = kj::heap<MetaClient>(loop_.io(), *secret_, metaAddrs, proto::Role::CLIENT, clientId,
                                 120 * kj::SECONDS, seqs_);
  });
}

ClusterClient::~ClusterClient() {
  loop_.run([this]() {
    if (served_) served_->stopServing();  // its sockets belong to this loop
    peers_.clear();
    meta_ = nullptr;
  });
}

bool ClusterClient::ownLoop() {
  if (loopThreadOf == this || threadHasOtherLoop) return false;
  if (!threadIo) {
    try {
      threadIo = std::make_unique<ThreadIo>();
    } catch (const kj::Exception&) {  // this thread runs an event loop of its own
      threadHasOtherLoop = true;
      return false;
    }
  }
  auto& secret = threadIo->secrets[instance_];
  if (!secret) secret = kj::heap<ClusterSecret>(*secret_);
  // The loop has not run since this thread's last request: let it see the time (a timeout set
  // from a clock left minutes behind would fire at once) and what its sockets say.
  threadIo->io.waitScope.poll();
  threadLoopRan = true;
  return true;
}

template <typename Func>
auto ClusterClient::onLoop(Func&& func) {
  if (ownLoop()) {
    auto promise = kj::evalNow(kj::fwd<Func>(func));
    if (waitCompanion)
      promise = kj::mv(promise).attach(
          waitCompanion(threadIo->io).eagerlyEvaluate(nullptr));
    return promise.wait(threadIo->io.waitScope);
  }
  return loop_.run(kj::fwd<Func>(func));
}

void ClusterClient::setWaitCompanion(WaitCompanion companion) { waitCompanion = companion; }

void ClusterClient::setThreadRetry(kj::Duration retryFor) { threadRetry = retryFor; }

kj::Timer& ClusterClient::timer() {
  return (loopThreadOf == this ? loop_.io() : threadIo->io).provider->getTimer();
}

kj::Promise<Reply> ClusterClient::callMeta(kj::Own<capnp::MallocMessageBuilder> request) {
  if (loopThreadOf == this) return meta_->call(kj::mv(request));
  auto& m = threadIo->metas[instance_];
  if (!m)
    m = kj::heap<MetaClient>(threadIo->io, *threadIo->secrets[instance_], metaAddrs_,
                             proto::Role::CLIENT, clientId_, threadRetry, seqs_);
  return m->call(kj::mv(request));
}

Reply ClusterClient::meta(kj::Own<capnp::MallocMessageBuilder> request) {
  return onLoop([this, &request]() { return callMeta(kj::mv(request)); });
}

void StopSignal::raise() {
  std::lock_guard lock(mu_);
  raised_ = true;
  if (waiter_) waiter_->fulfill();
  waiter_ = nullptr;
  sleepers_.notify_all();
}

bool StopSignal::sleepFor(std::chrono::milliseconds pause) {
  std::unique_lock lock(mu_);
  return sleepers_.wait_for(lock, pause, [this]() { return raised_.load(); });
}

kj::Promise<void> StopSignal::wait() {
  std::lock_guard lock(mu_);
  if (raised_) return kj::READY_NOW;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

Reply ClusterClient::meta(kj::Own<capnp::MallocMessageBuilder> request, StopSignal& stop) {
  if (stop.raised()) throw KJ_EXCEPTION(DISCONNECTED, "the mount is stopping");
  return onLoop([this, &request, &stop]() {
    return callMeta(kj::mv(request)).exclusiveJoin(stop.wait().then([]() -> kj::Promise<Reply> {
      return KJ_EXCEPTION(DISCONNECTED, "the mount is stopping");
    }));
  });
}

void ClusterClient::settle() {
  if (!threadLoopRan || !threadIo) return;
  threadLoopRan = false;
  auto m = threadIo->metas.find(instance_);
  if (m != threadIo->metas.end() && m->second)
    m->second->releaseAndFlush(threadIo->io.waitScope);
  else
    threadIo->io.waitScope.poll();
}

unsigned ClusterClient::serveMetrics(Metrics& metrics, const std::string& addr) {
  served_ = &metrics;
  return loop_.run([&]() { return metrics.serve(loop_.io(), addr); });
}

Peer& ClusterClient::chunkPeer(const std::string& addr) {
  bool shared = loopThreadOf == this;
  auto& p = shared ? peers_[addr] : threadIo->chunkPeers[instance_][addr];
  if (!p)
    p = std::make_unique<Peer>(shared ? loop_.io() : threadIo->io,
                               shared ? *secret_ : *threadIo->secrets[instance_], addr,
                               proto::Role::CLIENT);
  return *p;
}

int ClusterClient::getChunk(uint64_t ino, uint64_t index, bool allocate, ChunkLoc& out) {
  auto req = newMetaRequest();
  auto g = req->getRoot<proto::MetaRequest>().getOp().initChunkGet();
  g.setIno(ino);
  g.setIndex(index);
  g.setAllocate(allocate);
  auto reply = meta(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return r.getErr();
  toChunkLoc(r.getChunk(), out);
  return 0;
}

kj::Promise<ClusterClient::RawRead> ClusterClient::readRawAsync(const std::string& addr,
                                                               const ChunkLoc& loc,
                                                               uint32_t first, uint32_t count) {
  auto& peer = chunkPeer(addr);
  auto p = peer.get().then([&loc, first, count](capnp::Capability::Client cap) {
    auto req = cap.castAs<proto::Chunk>().readRequest();
    req.getChunk().setId(loc.id);
    req.getChunk().setVersion(loc.version);
    req.setFirstBlock(first);
    req.setCount(count);
    return req.send();
  });
  return timer()
      .timeoutAfter(30 * kj::SECONDS, kj::mv(p))
      .then(
          [count, keep = loopThreadOf != this](capnp::Response<proto::Chunk::ReadResults> resp) {
            RawRead out;
            out.err = resp.getErr();
            if (out.err != 0) return out;
            auto blocks = resp.getBlocks();
            if (blocks.size() != count) {
              out.err = EIO;
              return out;
            }
            out.present.resize(count);
            out.aux.resize(count);
            out.data.resize(count);
            if (!keep) out.copy.reset(new unsigned char[size_t(count) * (AUX + BLOCK)]);
            for (uint32_t i = 0; i < count; i++) {
              auto b = blocks[i];
              if (!b.getPresent()) continue;
              if (b.getAux().size() != AUX || b.getData().size() != BLOCK) {
                out.err = EIO;
                return out;
              }
              out.present[i] = true;
              out.aux[i] = b.getAux().begin();
              out.data[i] = b.getData().begin();
              if (!keep) {
                unsigned char* c = out.copy.get() + size_t(i) * (AUX + BLOCK);
                memcpy(c, out.aux[i], AUX);
                memcpy(c + AUX, out.data[i], BLOCK);
                out.aux[i] = c;
                out.data[i] = c + AUX;
              }
            }
            if (keep) out.reply = kj::mv(resp);
            return out;
          },
          [&peer, &addr](kj::Exception&& e) {
            spdlog::warn("read from {}: {}", addr, e.getDescription().cStr());
            peer.reset();
            RawRead out;
            out.err = EIO;
            return out;
          });
}

ClusterClient::RawRead ClusterClient::readRaw(const std::string& addr, const ChunkLoc& loc,
                                              uint32_t first, uint32_t count) {
  try {
    return onLoop([&]() { return readRawAsync(addr, loc, first, count); });
  } catch (kj::Exception& e) {
    RawRead out;
    out.err = EIO;
    return out;
  }
}

bool ClusterClient::openBlocks(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks,
                               uint32_t first, const RawRead& raw, uint32_t n,
                               unsigned char* out, const std::string& addr, bool quiet) {
  std::atomic<bool> good{true};
  workers_.parallelFor(n, OPEN_GRAIN, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end && good; i++) {
      unsigned char* dst = out + i * BLOCK;
      if (!raw.present[i]) {
        memset(dst, 0, BLOCK);
        continue;
      }
      uint64_t blockNo = loc.index * chunkBlocks + first + i;
      if (!cipher_.open(ino, blockNo, raw.data[i], raw.aux[i], dst)) {
        if (!quiet)
          spdlog::error("inode {} block {}: authentication failed on replica {} (wrong data key, "
                      "or corrupted data)", ino, blockNo, addr);
        good = false;
      }
    }
  });
  return good;
}

LocalChunks::Located ClusterClient::locate(const std::string& addr, const ChunkLoc& loc) {
  try {
    return onLoop([&]() {
      auto& peer = chunkPeer(addr);
      auto p = peer.get().then([&loc](capnp::Capability::Client cap) {
        auto req = cap.castAs<proto::Chunk>().locateRequest();
        req.getChunk().setId(loc.id);
        req.getChunk().setVersion(loc.version);
        return req.send();
      });
      return timer()
          .timeoutAfter(30 * kj::SECONDS, kj::mv(p))
          .then(
              [](capnp::Response<proto::Chunk::LocateResults> r) {
                LocalChunks::Located out;
                if (r.getErr() != 0) return out;
                out.path = r.getPath().cStr();
                out.bootId = r.getBootId().cStr();
                out.device = r.getDevice();
                out.inode = r.getInode();
                return out;
              },
              [&peer](kj::Exception&& e) -> LocalChunks::Located {
                if (e.getType() != kj::Exception::Type::UNIMPLEMENTED) peer.reset();
                kj::throwFatalException(kj::mv(e));
              });
    });
  } catch (kj::Exception& e) {
    // A server that predates locate, or one that fails: read through it as before, and ask it
    // again only in a minute.
    spdlog::info("locate chunk {:016x} on {}: {}; reading through it", loc.id, addr,
                 e.getDescription().cStr());
    local_.refuse(addr);
    return {};
  }
}

bool ClusterClient::readLocal(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks,
                              uint32_t first, uint32_t count, unsigned char* out) {
  // Only the replica a read through the servers asks first: what is read is what it would
  // answer (see fs/local_chunks.h).
  size_t up = 0;
  auto order = readOrder(loc, &up);
  if (up == 0) return false;
  const std::string& addr = order[0];
  auto file = local_.open(addr, loc.id, loc.version,
                          [&](const std::string& a) { return locate(a, loc); });
  if (!file) return false;
  if (readFromFile(*file, ino, loc, chunkBlocks, first, count, out, addr)) {
    if (localBytes_) localBytes_->inc(uint64_t(count) * BLOCK);
    return true;
  }
  // Changed under us (a write, a truncation) or damaged: the same server reads it again, checks
  // its checksums and reports what is wrong, and the others answer if it cannot.
  local_.forget(addr, loc.id);
  if (localRetried_) localRetried_->inc();
  return false;
}

bool ClusterClient::readFromFile(const chunk::ChunkFile& file, uint64_t ino, const ChunkLoc& loc,
                                 uint64_t chunkBlocks, uint32_t first, uint32_t count,
                                 unsigned char* out, const std::string& addr) {
  if (uint64_t(first) + count > file.maxBlocks()) return false;
  // The ciphertext goes straight to its place in `out` when that is aligned for O_DIRECT and is
  // opened in place there; otherwise through an aligned scratch buffer.
  bool inPlace = reinterpret_cast<uintptr_t>(out) % 4096 == 0;
  std::optional<ReadBuffer> scratchBuffer;
  unsigned char* scratch = nullptr;
  if (!inPlace) {
    scratchBuffer.emplace(size_t(MAX_BLOCKS_PER_RPC) * BLOCK);
    if (!(scratch = scratchBuffer->get())) return false;
  }
  thread_local std::vector<chunk::BlockMeta> meta;
  try {
    for (uint32_t done = 0; done < count;) {
      uint32_t n = std::min(count - done, MAX_BLOCKS_PER_RPC);
      unsigned char* dst = out + size_t(done) * BLOCK;
      unsigned char* cipher = inPlace ? dst : scratch;
      file.readMeta(first + done, n, meta);
      std::vector<unsigned char*> into(n, nullptr);
      RawRead raw;
      raw.present.resize(n);
      raw.aux.resize(n);
      raw.data.resize(n);
      for (uint32_t i = 0; i < n; i++) {
        if (!meta[i].present) continue;
        into[i] = cipher + size_t(i) * BLOCK;
        raw.present[i] = true;
        raw.aux[i] = meta[i].aux;
        raw.data[i] = into[i];
      }
      file.readData(first + done, into);
      if (!openBlocks(ino, loc, chunkBlocks, first + done, raw, n, dst, addr, true)) return false;
      done += n;
    }
  } catch (kj::Exception& e) {
    spdlog::warn("reading chunk {:016x} from the file of {}'s copy: {}", loc.id, addr,
                 e.getDescription().cStr());
    return false;
  }
  return true;
}

int ClusterClient::readBlocks(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks,
                              uint32_t first, uint32_t count, unsigned char* out) {
  if (localReads_ && readLocal(ino, loc, chunkBlocks, first, count, out)) return 0;
  // Pieces of at most MAX_BLOCKS_PER_RPC blocks. A large read that is the only one in flight
  // is spread over the replicas that answer: its pieces go out at once, each to the next
  // replica, and are opened on the worker pool; a piece that fails is read again replica by
  // replica. Reads that run beside others (readahead keeps up to 16 of a stream in flight) stay
  // whole, one request to the first replica that answers: split, each cost three requests'
  // handling for no more parallelism (a cold 1 GiB read through 3 replicas: 659-676 MB/s split,
  // 755-777 whole). Turning whole reads over the replicas by position gained nothing there and
  // cost random 4 KiB reads 6-7% (15,257-16,449 IOPS against 16,265-17,868).
  size_t up = 0;
  auto order = readOrder(loc, &up);
  bool alone = readsInFlight_.fetch_add(1) == 0;
  KJ_DEFER(readsInFlight_.fetch_sub(1));
  uint32_t pieceBlocks = MAX_BLOCKS_PER_RPC;
  if (alone && up > 1 && count >= 2 * SPLIT_BLOCKS)
    pieceBlocks = std::min<uint32_t>(
        MAX_BLOCKS_PER_RPC,
        std::max<uint32_t>(SPLIT_BLOCKS, static_cast<uint32_t>((count + up - 1) / up)));
  struct Piece {
    uint32_t first, n;
    RawRead raw;
  };
  std::vector<Piece> pieces;
  for (uint32_t done = 0; done < count; done += pieceBlocks)
    pieces.push_back(Piece{first + done, std::min(count - done, pieceBlocks), {}});
  if (pieces.size() > 1 && up > 1) {
    try {
      auto raws = onLoop([&]() {
        auto promises = kj::heapArrayBuilder<kj::Promise<RawRead>>(pieces.size());
        for (size_t i = 0; i < pieces.size(); i++)
          promises.add(readRawAsync(order[i % up], loc, pieces[i].first, pieces[i].n));
        return kj::joinPromises(promises.finish());
      });
      for (size_t i = 0; i < pieces.size(); i++) pieces[i].raw = kj::mv(raws[i]);
    } catch (kj::Exception& e) {
      for (auto& p : pieces) p.raw.err = EIO;
    }
  }
  for (size_t i = 0; i < pieces.size(); i++) {
    auto& p = pieces[i];
    unsigned char* dst = out + size_t(p.first - first) * BLOCK;
    if (pieces.size() > 1 && up > 1) {
      const std::string& addr = order[i % up];
      noteReplica(addr, p.raw.err != EIO);
      if (p.raw.err == 0) {
        if (openBlocks(ino, loc, chunkBlocks, p.first, p.raw, p.n, dst, addr)) continue;
        reportCorrupt(loc, addr);
      } else if (p.raw.err == EBADMSG) {
        reportCorrupt(loc, addr);
      }
    }
    if (int err = readPiece(ino, loc, chunkBlocks, order, p.first, p.n, dst)) return err;
  }
  return 0;
}

int ClusterClient::readPiece(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks,
                             const std::vector<std::string>& order, uint32_t first, uint32_t n,
                             unsigned char* out) {
  int lastErr = EIO;
  bool stale = false;
  size_t missing = 0;
  for (size_t r = 0; r < order.size(); r++) {
    auto raw = readRaw(order[r], loc, first, n);
    noteReplica(order[r], raw.err != EIO);
    if (raw.err != 0) {
      lastErr = raw.err;
      if (raw.err == EBADMSG) reportCorrupt(loc, order[r]);
      if (raw.err == ENOENT) missing++;
      if (raw.err == ESTALE) stale = true;
      continue;
    }
    if (openBlocks(ino, loc, chunkBlocks, first, raw, n, out, order[r])) return 0;
    lastErr = EIO;
    reportCorrupt(loc, order[r]);
  }
  if (missing == loc.addrs.size() && missing > 0) {
    // No replica has the chunk: allocated but never written, so it is a hole.
    memset(out, 0, size_t(n) * BLOCK);
    return 0;
  }
  // A live replica at a newer version (a repair fenced our location) outranks a dead one:
  // ESTALE makes the caller ask meta for the new chain. EBADMSG everywhere reads as EIO.
  return stale || lastErr == ESTALE ? ESTALE : EIO;
}

std::vector<std::string> ClusterClient::readOrder(const ChunkLoc& loc, size_t* upCount) {
  std::vector<std::string> up, down;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(downMutex_);
  for (auto& a : loc.addrs) {
    auto it = downUntil_.find(a);
    (it != downUntil_.end() && it->second > now ? down : up).push_back(a);
  }
  if (upCount) *upCount = up.size();
  up.insert(up.end(), down.begin(), down.end());
  return up;
}

void ClusterClient::noteReplica(const std::string& addr, bool reachable) {
  std::lock_guard<std::mutex> lock(downMutex_);
  if (reachable) {
    downUntil_.erase(addr);
  } else {
    downUntil_[addr] = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  }
}

void ClusterClient::reportCorrupt(const ChunkLoc& loc, const std::string& addr) {
  try {
    auto req = newMetaRequest();
    auto op = req->getRoot<proto::MetaRequest>().getOp().initChunkCorrupt();
    op.setId(loc.id);
    op.setAddr(addr);
    op.setVersion(loc.version);
    meta(kj::mv(req));
    spdlog::warn("chunk {:016x}: replica {} returned a bad block; reported", loc.id, addr);
  } catch (kj::Exception& e) {
    spdlog::warn("chunk {:016x}: reporting bad replica {}: {}", loc.id, addr,
                 e.getDescription().cStr());
  }
}

int ClusterClient::reportFailure(uint64_t ino, ChunkLoc& loc, const std::string& failedAddr) {
  auto req = newMetaRequest();
  auto f = req->getRoot<proto::MetaRequest>().getOp().initChunkFail();
  f.setIno(ino);
  f.setIndex(loc.index);
  f.setId(loc.id);
  f.setVersion(loc.version);
  f.setFailedAddr(failedAddr);
  auto reply = meta(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return r.getErr();
  toChunkLoc(r.getChunk(), loc);
  spdlog::warn("chunk {:016x}: replica {} failed; writing on {} replicas at version {}", loc.id,
               failedAddr, loc.addrs.size(), loc.version);
  return 0;
}

int ClusterClient::writeBlocks(uint64_t ino, ChunkLoc& loc, uint64_t chunkBlocks,
                               uint32_t first, uint32_t count, const unsigned char* plain,
                               bool sync, const uint32_t* at) {
  if (loc.addrs.empty()) return EIO;
  for (uint32_t done = 0; done < count;) {
    uint32_t n = std::min(count - done, MAX_BLOCKS_PER_RPC);
    auto blockAt = [&](uint32_t i) { return at ? at[done + i] : first + done + i; };
    int err = 0;
    std::string failed;
    for (int attempt = 0; attempt < 8; attempt++) {
      std::tie(err, failed) = [&]() -> std::pair<int, std::string> {
        try {
          // Fills and sends either kind of write request (write: blocks from firstBlock on;
          // writeAt: each to its own index). It lives here, not in the function run on the
          // loop: the continuation that calls it runs after that function has returned.
          auto send = [&](auto req) -> kj::Promise<std::pair<int, std::string>> {
            req.getChunk().setId(loc.id);
            req.getChunk().setVersion(loc.version);
            // Sealed (and checksummed) straight into the request, on the worker pool and
            // this thread.
            auto blocks = req.initBlocks(n);
            std::vector<unsigned char*> data(n), aux(n);
            for (uint32_t i = 0; i < n; i++) {
              blocks[i].setPresent(true);
              data[i] = blocks[i].initData(BLOCK).begin();
              aux[i] = blocks[i].initAux(AUX).begin();
            }
            std::vector<uint32_t> crcs(n);
            workers_.parallelFor(n, SEAL_GRAIN, [&](size_t begin, size_t end) {
              for (size_t i = begin; i < end; i++) {
                uint64_t blockNo = loc.index * chunkBlocks + blockAt(i);
                cipher_.seal(ino, blockNo, plain + (done + i) * BLOCK, data[i], aux[i]);
                crcs[i] = chunk::blockCrc(aux[i], AUX, data[i], BLOCK);
              }
            });
            for (uint32_t i = 0; i < n; i++) blocks[i].setCrc(crcs[i]);
            auto chain = req.initChain(loc.addrs.size() - 1);
            for (size_t i = 1; i < loc.addrs.size(); i++) chain.set(i - 1, loc.addrs[i]);
            req.setSync(sync);
            return req.send().then([](auto resp) {
              return std::make_pair(int(resp.getErr()), std::string(resp.getFailedAddr().cStr()));
            });
          };
          return onLoop([&]() {
            auto& peer = chunkPeer(loc.addrs[0]);
            auto p = peer.get().then([&](capnp::Capability::Client cap) {
              auto chunk = cap.castAs<proto::Chunk>();
              if (at) {
                auto req = chunk.writeAtRequest();
                auto list = req.initAt(n);
                for (uint32_t i = 0; i < n; i++) list.set(i, blockAt(i));
                return send(kj::mv(req));
              }
              auto req = chunk.writeRequest();
              req.setFirstBlock(first + done);
              return send(kj::mv(req));
            });
            return timer()
                .timeoutAfter(60 * kj::SECONDS, kj::mv(p))
                .catch_([&peer, &loc](kj::Exception&& e) {
                  if (e.getType() == kj::Exception::Type::UNIMPLEMENTED) {
                    // A chunk server older than writeAt: the caller writes run by run.
                    return std::make_pair(int(ENOSYS), std::string());
                  }
                  spdlog::warn("write to {}: {}", loc.addrs[0], e.getDescription().cStr());
                  peer.reset();
                  return std::make_pair(int(EIO), loc.addrs[0]);
                });
          });
        } catch (kj::Exception& e) {
          return {EIO, loc.addrs[0]};
        }
      }();
      if (err == 0 || err == ESTALE || err == ENOSYS) break;
      spdlog::warn("write of chunk {:016x} failed at {} ({}), attempt {}", loc.id, failed,
                   strerror(err), attempt + 1);
      if (!failed.empty()) {
        int rerr = reportFailure(ino, loc, failed);
        if (rerr != 0) return rerr;
      }
    }
    if (err != 0) return err;
    done += n;
  }
  return 0;
}

kj::Promise<int> ClusterClient::headCallAsync(
    const ChunkLoc& loc, kj::Function<kj::Promise<int>(proto::Chunk::Client)>& send) {
  if (loc.addrs.empty()) return 0;
  auto& peer = chunkPeer(loc.addrs[0]);
  return peer.get()
      .then([&send](capnp::Capability::Client cap) { return send(cap.castAs<proto::Chunk>()); })
      .catch_([&peer](kj::Exception&& e) {
        peer.reset();
        return int(EIO);
      });
}

int ClusterClient::headCall(const ChunkLoc& loc,
                            kj::Function<kj::Promise<int>(proto::Chunk::Client)> send) {
  try {
    return onLoop([&]() { return headCallAsync(loc, send); });
  } catch (kj::Exception& e) {
    return EIO;
  }
}

namespace {
template <typename Request>
void fillChain(Request& req, const ChunkLoc& loc) {
  req.getChunk().setId(loc.id);
  req.getChunk().setVersion(loc.version);
  auto chain = req.initChain(loc.addrs.size() - 1);
  for (size_t i = 1; i < loc.addrs.size(); i++) chain.set(i - 1, loc.addrs[i]);
}
}  // namespace

int ClusterClient::syncChunks(const std::vector<ChunkLoc>& locs) {
  // Every chunk at once: the servers heading different chains sync in parallel.
  std::vector<kj::Function<kj::Promise<int>(proto::Chunk::Client)>> sends;
  for (auto& loc : locs) {
    sends.emplace_back([&loc](proto::Chunk::Client c) {
      auto req = c.syncRequest();
      fillChain(req, loc);
      return req.send().then([](auto resp) { return int(resp.getErr()); });
    });
  }
  try {
    auto errs = onLoop([&]() {
      auto all = kj::heapArrayBuilder<kj::Promise<int>>(locs.size());
      for (size_t i = 0; i < locs.size(); i++) all.add(headCallAsync(locs[i], sends[i]));
      return kj::joinPromises(all.finish());
    });
    for (int err : errs)
      if (err != 0) return err;
    return 0;
  } catch (kj::Exception& e) {
    return EIO;
  }
}

int ClusterClient::truncateChunk(const ChunkLoc& loc, uint32_t keepBlocks) {
  return headCall(loc, [&loc, keepBlocks](proto::Chunk::Client c) {
    auto req = c.truncateRequest();
    fillChain(req, loc);
    req.setBlocks(keepBlocks);
    return req.send().then([](auto resp) { return int(resp.getErr()); });
  });
}

}  // namespace cairn::fs
