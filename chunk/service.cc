#include "chunk/service.h"

#include <sys/stat.h>

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <cerrno>

#include "rpc/prefault.h"

namespace cairn::chunk {

namespace {
constexpr uint32_t MAX_BLOCKS_PER_CALL = 1024;  // 4 MiB
constexpr uint32_t MAX_CHAIN = 8;
constexpr uint32_t IO_THREAD_BLOCKS = 32;  // reads of this many blocks or more: on I/O threads

template <typename Response>
std::pair<int, std::string> outcome(Response& response) {
  return std::make_pair(int(response.getErr()), std::string(response.getFailedAddr()));
}
}  // namespace

ChunkServiceImpl::ChunkServiceImpl(kj::AsyncIoContext& io, const ClusterSecret& secret,
                                   ChunkStore& store, Metrics& metrics)
    : io_(io),
      secret_(secret),
      store_(store),
      metrics_(metrics),
      bytesWritten_(metrics.counter("cairn_chunk_written_bytes_total", "Block bytes written")),
      bytesRead_(metrics.counter("cairn_chunk_read_bytes_total", "Block bytes read")),
      corruptBlocks_(metrics.counter("cairn_chunk_corrupt_blocks_total",
                                     "Blocks whose checksum did not match on read")),
      replicatedBytes_(metrics.counter("cairn_chunk_replicated_bytes_total",
                                       "Bytes copied to other servers by repairs")),
      locates_(metrics.counter("cairn_chunk_locates_total",
                               "Chunk files named to clients on this host, to read themselves")),
      writeLatency_(metrics.histogram("cairn_chunk_request_seconds", "Request latency",
                                      "op=\"write\"")),
      readLatency_(metrics.histogram("cairn_chunk_request_seconds", "Request latency",
                                     "op=\"read\"")) {}

Peer& ChunkServiceImpl::peer(const std::string& addr) {
  auto& p = peers_[addr];
  if (!p) p = std::make_unique<Peer>(io_, secret_, addr, proto::Role::SERVER);
  return *p;
}

int ChunkServiceImpl::checkVersion(uint64_t id, uint64_t version, bool create) {
  auto* f = store_.find(id);
  if (f == nullptr) return create ? 0 : ENOENT;
  if (f->version() > version) return ESTALE;
  if (f->version() < version) {
    f->setVersion(version);
    store_.noteVersion(id, version);
  }
  return 0;
}

template <typename Func>
kj::Promise<void> ChunkServiceImpl::onIoThread(Func&& func) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto done = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
  ioThreads_.submit([func = kj::fwd<Func>(func), done]() mutable {
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { func(); })) {
      (*done)->reject(kj::mv(*e));
    } else {
      (*done)->fulfill();
    }
  });
  return kj::mv(paf.promise);
}

kj::Promise<void> ChunkServiceImpl::idle(uint64_t id) {
  auto it = busy_.find(id);
  if (it == busy_.end()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  it->second.waiters.push_back(kj::mv(paf.fulfiller));
  // Woken when the last read ends; other reads may have begun since: wait again.
  return paf.promise.then([this, id]() { return idle(id); });
}

template <typename Func>
kj::PromiseForResult<Func, void> ChunkServiceImpl::whenIdle(uint64_t id, Func&& func) {
  return idle(id).then([this, id, func = kj::fwd<Func>(func)]() mutable
                       -> kj::PromiseForResult<Func, void> {
    if (busy_.count(id) > 0) return whenIdle(id, kj::mv(func));
    return func();
  });
}

void ChunkServiceImpl::readDone(uint64_t id) {
  auto it = busy_.find(id);
  if (it == busy_.end() || --it->second.reads > 0) return;
  auto waiters = kj::mv(it->second.waiters);
  busy_.erase(it);
  for (auto& w : waiters) w->fulfill();
}

kj::Promise<void> ChunkServiceImpl::write(WriteContext context) {
  auto params = context.getParams();
  uint32_t first = params.getFirstBlock();
  uint32_t n = params.getBlocks().size();
  KJ_REQUIRE(n <= MAX_BLOCKS_PER_CALL, "too many blocks in one write");
  KJ_REQUIRE(uint64_t(first) + n <= store_.maxBlocks(), "write beyond chunk end");
  std::vector<Run> runs;
  if (n > 0) runs.push_back(Run{first, 0, n});
  return storeBlocks(context, kj::mv(runs), [](proto::Chunk::Client c, auto src) {
    auto r = c.writeRequest();
    r.setChunk(src.getChunk());
    r.setFirstBlock(src.getFirstBlock());
    r.setBlocks(src.getBlocks());
    r.setSync(src.getSync());
    return r.send().then([](auto response) { return outcome(response); });
  });
}

kj::Promise<void> ChunkServiceImpl::writeAt(WriteAtContext context) {
  auto params = context.getParams();
  auto at = params.getAt();
  uint32_t n = params.getBlocks().size();
  KJ_REQUIRE(n <= MAX_BLOCKS_PER_CALL, "too many blocks in one write");
  KJ_REQUIRE(at.size() == n, "one block index per block", at.size(), n);
  std::vector<Run> runs;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t b = at[i];
    KJ_REQUIRE(b < store_.maxBlocks(), "write beyond chunk end", b);
    KJ_REQUIRE(i == 0 || b > at[i - 1], "block indexes must ascend", i);
    if (!runs.empty() && runs.back().block + runs.back().count == b) {
      runs.back().count++;
    } else {
      runs.push_back(Run{b, i, 1});
    }
  }
  return storeBlocks(context, kj::mv(runs), [](proto::Chunk::Client c, auto src) {
    auto r = c.writeAtRequest();
    r.setChunk(src.getChunk());
    r.setBlocks(src.getBlocks());
    r.setAt(src.getAt());
    r.setSync(src.getSync());
    return r.send().then([](auto response) { return outcome(response); });
  });
}

template <typename Context, typename Request>
kj::Promise<void> ChunkServiceImpl::storeBlocks(Context context, std::vector<Run> runs,
                                                Request request) {
  auto params = context.getParams();
  auto ref = params.getChunk();
  auto chain = params.getChain();
  KJ_REQUIRE(ref.getId() != 0 && ref.getVersion() != 0, "chunk id and version must be set");
  KJ_REQUIRE(chain.size() <= MAX_CHAIN, "replica chain too long");
  auto timer = kj::heap<ScopedLatency>(writeLatency_);

  // Forwarded first, so the other replicas write while we do: to all of them at once (each
  // then has no one to forward to), so that a write waits for one more hop, not one per replica.
  // Every replica still applies writes in this server's order: its forwards to each of them go
  // one after another on one connection.
  kj::Promise<std::pair<int, std::string>> downstream = std::make_pair(0, std::string());
  if (chain.size() > 0) {
    downstream = forward(chain, [context, request](proto::Chunk::Client c) mutable {
      // Built from our own request's parameters (kept by the context until we answer): the
      // blocks are copied once, into each request that goes on.
      return request(c, context.getParams());
    });
  }

  // The local write waits for the events already queued, the forward's send among them: the
  // next replica then writes while we do, instead of after (and for reads of the chunk on the
  // I/O threads).
  auto local = whenIdle(ref.getId(), [this, context, runs = kj::mv(runs)]() mutable -> int {
    auto params = context.getParams();
    auto ref = params.getChunk();
    auto blocks = params.getBlocks();
    int err = checkVersion(ref.getId(), ref.getVersion(), true);
    if (err != 0) return err;
    std::vector<BlockView> data(blocks.size());  // straight from the request's buffers
    for (uint i = 0; i < blocks.size(); i++) {
      auto b = blocks[i];
      auto aux = b.getAux();
      auto bytes = b.getData();
      KJ_REQUIRE(b.getPresent() && aux.size() == AUX_BYTES && bytes.size() == BLOCK_BYTES,
                 "malformed block", i);
      KJ_REQUIRE(blockCrc(aux.begin(), aux.size(), bytes.begin(), bytes.size()) == b.getCrc(),
                 "block checksum mismatch in transit", i);
      data[i] = BlockView{b.getCrc(), aux.begin(), bytes.begin()};
    }
    try {
      auto& f = store_.findOrCreate(ref.getId(), ref.getVersion());
      std::vector<BlockView> run;
      for (auto& r : runs) {
        // Each run of consecutive blocks in one gathered write.
        if (runs.size() == 1) {
          f.write(r.block, data);
        } else {
          run.assign(data.begin() + r.from, data.begin() + r.from + r.count);
          f.write(r.block, run);
        }
      }
      store_.noteSize(ref.getId());
      if (params.getSync()) {
        f.sync();
      } else {
        for (auto& r : runs) {
          if (r.count < WRITEBACK_BLOCKS || f.writesDirect(r.count)) continue;
          // A large run (a stream): its writeback starts now, so that a later fsync finds
          // little left to write instead of everything since the file was opened.
          writeback_.submit([file = store_.share(ref.getId()), first = r.block, n = r.count]() {
            file->startWriteback(first, n);
          });
        }
      }
      bytesWritten_.inc(uint64_t(blocks.size()) * BLOCK_BYTES);
    } catch (kj::Exception& e) {
      spdlog::error("write chunk {:016x}: {}", ref.getId(), e.getDescription().cStr());
      return EIO;
    }
    return 0;
  });
  return local.then([downstream = kj::mv(downstream)](int err) mutable {
    return downstream.then([err](std::pair<int, std::string> down) { return std::make_pair(err, down); });
  }).then([context, timer = kj::mv(timer)](std::pair<int, std::pair<int, std::string>> r) mutable {
    auto [err, down] = r;
    auto results = context.getResults();
    if (err != 0) {
      results.setErr(err);
    } else if (down.first != 0) {
      results.setErr(down.first);
      results.setFailedAddr(down.second);
    }
  });
}

kj::Promise<void> ChunkServiceImpl::read(ReadContext context) {
  auto params = context.getParams();
  auto ref = params.getChunk();
  uint32_t first = params.getFirstBlock();
  uint32_t count = params.getCount();
  KJ_REQUIRE(count <= MAX_BLOCKS_PER_CALL, "too many blocks in one read");
  KJ_REQUIRE(uint64_t(first) + count <= store_.maxBlocks(), "read beyond chunk end");
  auto timer = kj::heap<ScopedLatency>(readLatency_);
  auto results = context.getResults();
  int err = checkVersion(ref.getId(), ref.getVersion(), false);
  if (err == ENOENT) {
    // No copy here. The reader decides: holes only when no replica has the chunk (allocated,
    // never written), never zeros in place of a copy that went missing.
    results.setErr(ENOENT);
    return kj::READY_NOW;
  }
  if (err != 0) {
    results.setErr(err);
    return kj::READY_NOW;
  }
  // Records in one read, then the reply is laid out and every present block's bytes are read
  // straight into it. A short read (from the page cache, most likely) runs here at once; a
  // longer one does its I/O on the I/O threads (only plain memory and the file cross there).
  uint64_t id = ref.getId();
  auto job = std::make_shared<ReadJob>(ReadJob{store_.share(id), first, count, {}, {}});
  if (count < IO_THREAD_BLOCKS) {
    job->readRecords();
    layOut(results, *job);
    job->readBlocks();
    answer(results, *job, id);
    return kj::READY_NOW;
  }
  busy_[id].reads++;
  return onIoThread([job]() { job->readRecords(); })
      .then([this, context, job]() mutable {
        layOut(context.getResults(), *job);
        return onIoThread([job]() { job->readBlocks(); });
      })
      .then([this, context, job, id]() mutable { answer(context.getResults(), *job, id); })
      .attach(kj::mv(timer), kj::defer([this, id]() { readDone(id); }));
}

kj::Promise<void> ChunkServiceImpl::locate(LocateContext context) {
  auto ref = context.getParams().getChunk();
  auto results = context.getResults();
  int err = checkVersion(ref.getId(), ref.getVersion(), false);
  std::string path = err == 0 ? store_.pathFor(ref.getId()) : "";
  struct stat st;
  if (err == 0 && (path.empty() || ::stat(path.c_str(), &st) != 0)) err = ENOENT;
  static const std::string bootId = hostBootId();
  if (err == 0 && bootId.empty()) err = ENOTSUP;  // no way for a client to know our host
  results.setErr(err);
  if (err != 0) return kj::READY_NOW;
  results.setPath(path);
  results.setBootId(bootId);
  results.setDevice(st.st_dev);
  results.setInode(st.st_ino);
  locates_.inc();
  return kj::READY_NOW;
}

void ChunkServiceImpl::ReadJob::readRecords() { file->readMeta(first, count, meta); }

void ChunkServiceImpl::ReadJob::readBlocks() {
  // The blocks' bytes lie one after another in the reply's (fresh) segment.
  unsigned char *lo = nullptr, *hi = nullptr;
  for (auto* p : into) {
    if (!p) continue;
    if (!lo || p < lo) lo = p;
    if (!hi || p + BLOCK_BYTES > hi) hi = p + BLOCK_BYTES;
  }
  if (lo && size_t(hi - lo) <= size_t(count) * 2 * BLOCK_BYTES) prefaultForWrite(lo, hi - lo);
  file->readData(first, into);
  for (uint32_t i = 0; i < count && bad < 0; i++)
    if (into[i] && blockCrc(meta[i].aux, AUX_BYTES, into[i], BLOCK_BYTES) != meta[i].crc) bad = i;
}

void ChunkServiceImpl::layOut(proto::Chunk::ReadResults::Builder results, ReadJob& job) {
  auto out = results.initBlocks(job.count);
  job.into.assign(job.count, nullptr);
  for (uint32_t i = 0; i < job.count; i++) {
    auto& m = job.meta[i];
    if (!m.present) {
      out[i].setPresent(false);
      continue;
    }
    out[i].setPresent(true);
    out[i].setCrc(m.crc);
    out[i].setAux(kj::arrayPtr(reinterpret_cast<const kj::byte*>(m.aux), AUX_BYTES));
    job.into[i] = out[i].initData(BLOCK_BYTES).begin();
  }
}

void ChunkServiceImpl::answer(proto::Chunk::ReadResults::Builder results, const ReadJob& job,
                              uint64_t id) {
  if (job.bad >= 0) {
    corruptBlocks_.inc();
    spdlog::error("chunk {:016x} block {}: checksum mismatch", id, job.first + job.bad);
    results.setErr(EBADMSG);  // the reader takes another replica and reports this one
    results.initBlocks(0);
    return;
  }
  for (auto* p : job.into)
    if (p) bytesRead_.inc(BLOCK_BYTES);
}

kj::Promise<std::pair<int, std::string>> ChunkServiceImpl::forward(
    capnp::List<capnp::Text>::Reader chain,
    kj::Function<kj::Promise<std::pair<int, std::string>>(proto::Chunk::Client)> send) {
  auto shared = std::make_shared<decltype(send)>(kj::mv(send));
  auto each = kj::heapArrayBuilder<kj::Promise<std::pair<int, std::string>>>(chain.size());
  for (auto a : chain) {
    std::string addr(a.cStr(), a.size());
    auto& p = peer(addr);
    each.add(p.get()
                 .then([shared](capnp::Capability::Client cap) {
                   return (*shared)(cap.castAs<proto::Chunk>());
                 })
                 .then(
                     [addr](std::pair<int, std::string> r) {
                       if (r.first != 0 && r.second.empty()) r.second = addr;
                       return r;
                     },
                     [addr, &p](kj::Exception&& e) {
                       spdlog::warn("forwarding to {} failed: {}", addr, e.getDescription().cStr());
                       p.reset();
                       return std::make_pair(int(EIO), addr);
                     }));
  }
  return kj::joinPromises(each.finish()).then([](kj::Array<std::pair<int, std::string>> all) {
    for (auto& r : all)
      if (r.first != 0) return kj::mv(r);  // the first failure, in the chain's order
    return std::make_pair(0, std::string());
  });
}

namespace {
template <typename Request>
void fillRef(Request& r, uint64_t id, uint64_t version) {
  r.getChunk().setId(id);
  r.getChunk().setVersion(version);
}

}  // namespace

kj::Promise<void> ChunkServiceImpl::sync(SyncContext context) {
  auto params = context.getParams();
  auto ref = params.getChunk();
  auto chain = params.getChain();
  KJ_REQUIRE(chain.size() <= MAX_CHAIN, "replica chain too long");
  int err = checkVersion(ref.getId(), ref.getVersion(), false);
  if (err == ENOENT) err = 0;  // nothing written here yet: nothing to sync
  uint64_t id = ref.getId(), version = ref.getVersion();
  // The other replicas are asked first, and sync while we do.
  kj::Promise<std::pair<int, std::string>> downstream = std::make_pair(0, std::string());
  if (chain.size() > 0 && err == 0) {
    downstream = forward(chain, [id, version](proto::Chunk::Client c) {
      auto r = c.syncRequest();
      fillRef(r, id, version);
      return r.send().then([](auto response) { return outcome(response); });
    });
  }
  auto local = kj::evalLater([this, id, err]() {
    if (err == 0)
      if (auto* f = store_.find(id)) f->sync();
  });
  return local.then([downstream = kj::mv(downstream)]() mutable { return kj::mv(downstream); })
      .then([context, err](std::pair<int, std::string> down) mutable {
        if (err != 0) {
          context.getResults().setErr(err);
          return;
        }
        context.getResults().setErr(down.first);
        if (down.first != 0) context.getResults().setFailedAddr(down.second);
      });
}

kj::Promise<void> ChunkServiceImpl::truncate(TruncateContext context) {
  auto params = context.getParams();
  KJ_REQUIRE(params.getChain().size() <= MAX_CHAIN, "replica chain too long");
  // After any read of the chunk in flight on the I/O threads.
  return whenIdle(params.getChunk().getId(), [this, context]() mutable -> kj::Promise<void> {
    auto params = context.getParams();
    auto ref = params.getChunk();
    auto chain = params.getChain();
    int err = checkVersion(ref.getId(), ref.getVersion(), false);
    if (err == ENOENT) err = 0;
    if (err == 0) {
      if (auto* f = store_.find(ref.getId())) {
        f->truncate(params.getBlocks());
        store_.noteSize(ref.getId());
      }
    }
    if (chain.size() == 0 || err != 0) {
      context.getResults().setErr(err);
      return kj::READY_NOW;
    }
    uint64_t id = ref.getId(), version = ref.getVersion();
    uint32_t keep = params.getBlocks();
    return forward(chain,
                   [id, version, keep](proto::Chunk::Client c) {
                     auto r = c.truncateRequest();
                     fillRef(r, id, version);
                     r.setBlocks(keep);
                     return r.send().then([](auto response) { return outcome(response); });
                   })
        .then([context](std::pair<int, std::string> down) mutable {
          context.getResults().setErr(down.first);
          if (down.first != 0) context.getResults().setFailedAddr(down.second);
        });
  });
}

kj::Promise<void> ChunkServiceImpl::remove(RemoveContext context) {
  auto ids = context.getParams().getIds();
  KJ_REQUIRE(ids.size() <= 100000, "too many ids");
  uint32_t n = 0;
  for (auto id : ids) n += store_.remove(id) ? 1 : 0;
  context.getResults().setRemoved(n);
  return kj::READY_NOW;
}

kj::Promise<void> ChunkServiceImpl::list(ListContext context) {
  auto all = store_.list();
  auto out = context.getResults().initChunks(all.size());
  for (size_t i = 0; i < all.size(); i++) {
    out[i].setId(all[i].first);
    out[i].setVersion(all[i].second);
  }
  return kj::READY_NOW;
}

kj::Promise<void> ChunkServiceImpl::listPage(ListPageContext context) {
  auto p = context.getParams();
  auto page = store_.pageAfter(p.getAfter(), std::min<uint32_t>(p.getMax(), 65536));
  auto out = context.getResults().initChunks(page.size());
  for (size_t i = 0; i < page.size(); i++) {
    out[i].setId(page[i].first);
    out[i].setVersion(page[i].second);
  }
  return kj::READY_NOW;
}

kj::Promise<void> ChunkServiceImpl::verify(VerifyContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  auto* f = store_.find(p.getId());
  if (f == nullptr) {
    results.setErr(ENOENT);
    return kj::READY_NOW;
  }
  results.setVersion(f->version());
  uint32_t limit = f->blockLimit();
  uint32_t first = p.getFirstBlock();
  uint32_t end = first + std::min<uint32_t>(std::min<uint32_t>(p.getCount(), 256),
                                            limit > first ? limit - first : 0);
  std::vector<uint32_t> bad;
  uint32_t checked = 0;
  BlockData b;
  for (uint32_t block = first; block < end; block++) {
    auto st = f->read(block, b);
    if (st == ReadStatus::ABSENT) continue;
    checked++;
    if (st == ReadStatus::CORRUPT) {
      spdlog::error("verify: chunk {:016x} block {}: checksum mismatch", p.getId(), block);
      bad.push_back(block);
    }
  }
  results.setChecked(checked);
  auto out = results.initBad(bad.size());
  for (size_t i = 0; i < bad.size(); i++) out.set(i, bad[i]);
  results.setNext(end < limit ? end : 0);
  return kj::READY_NOW;
}

kj::Promise<void> ChunkServiceImpl::setVersion(SetVersionContext context) {
  auto ref = context.getParams().getChunk();
  auto* f = store_.find(ref.getId());
  if (f == nullptr) {
    context.getResults().setErr(ENOENT);
    return kj::READY_NOW;
  }
  if (f->version() < ref.getVersion()) {
    f->setVersion(ref.getVersion());
    f->sync();
    store_.noteVersion(ref.getId(), ref.getVersion());
  }
  context.getResults().setErr(f->version() == ref.getVersion() ? 0 : ESTALE);
  return kj::READY_NOW;
}

kj::Promise<uint64_t> ChunkServiceImpl::copyFrom(uint64_t id, uint64_t version, uint32_t next,
                                                 Peer& target, uint64_t rate, uint64_t copied) {
  constexpr uint32_t BATCH = 256;  // 1 MiB per call
  auto* f = store_.find(id);
  if (f == nullptr) return KJ_EXCEPTION(FAILED, "chunk vanished during repair", id);
  if (f->version() != version) return KJ_EXCEPTION(FAILED, "chunk version changed during repair", id);
  // Gather the next run of present blocks.
  uint32_t maxBlocks = f->maxBlocks();
  BlockData b;
  while (next < maxBlocks && f->read(next, b) == ReadStatus::ABSENT) next++;
  if (next >= maxBlocks) return copied;
  auto msg = kj::heap<capnp::MallocMessageBuilder>();
  std::vector<BlockData> run;
  uint32_t first = next;
  while (next < maxBlocks && run.size() < BATCH) {
    auto st = f->read(next, b);
    if (st == ReadStatus::ABSENT) break;
    if (st == ReadStatus::CORRUPT) {
      corruptBlocks_.inc();
      return KJ_EXCEPTION(FAILED, "corrupt block in the repair source", id, next);
    }
    run.push_back(b);
    next++;
  }
  uint64_t bytes = uint64_t(run.size()) * BLOCK_BYTES;
  auto send = target.get().then([id, version, first, run = kj::mv(run)](capnp::Capability::Client cap) {
    auto req = cap.castAs<proto::Chunk>().writeRequest();
    req.getChunk().setId(id);
    req.getChunk().setVersion(version);
    req.setFirstBlock(first);
    auto blocks = req.initBlocks(run.size());
    for (size_t i = 0; i < run.size(); i++) {
      blocks[i].setPresent(true);
      blocks[i].setCrc(run[i].crc);
      blocks[i].setAux(kj::arrayPtr(reinterpret_cast<const kj::byte*>(run[i].aux.data()), run[i].aux.size()));
      blocks[i].setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(run[i].data.data()), run[i].data.size()));
    }
    req.setSync(false);
    return req.send();
  });
  // Throttle: a call's worth of bytes per (bytes / rate) seconds.
  auto pause = rate > 0 ? io_.provider->getTimer().afterDelay(
                              static_cast<int64_t>(bytes * 1000000 / rate) * kj::MICROSECONDS)
                        : kj::Promise<void>(kj::READY_NOW);
  return send.then([this, bytes](auto response) {
           KJ_REQUIRE(response.getErr() == 0, "repair target refused a write", response.getErr());
           replicatedBytes_.inc(bytes);
         })
      .then([pause = kj::mv(pause)]() mutable { return kj::mv(pause); })
      .then([this, id, version, next, &target, rate, copied, bytes]() {
        return copyFrom(id, version, next, target, rate, copied + bytes);
      });
}

kj::Promise<void> ChunkServiceImpl::replicate(ReplicateContext context) {
  auto p = context.getParams();
  uint64_t id = p.getChunk().getId(), version = p.getChunk().getVersion();
  std::string target = p.getTarget();
  KJ_REQUIRE(!target.empty() && target.size() <= 256, "bad repair target");
  auto* f = store_.find(id);
  if (f == nullptr || f->version() != version) {
    context.getResults().setErr(f == nullptr ? ENOENT : ESTALE);
    return kj::READY_NOW;
  }
  auto& t = peer(target);
  return copyFrom(id, version, 0, t, p.getRateBytesPerSec(), 0)
      .then([&t, id, version](uint64_t bytes) {
        return t.get()
            .then([id, version](capnp::Capability::Client cap) {
              auto req = cap.castAs<proto::Chunk>().syncRequest();
              req.getChunk().setId(id);
              req.getChunk().setVersion(version);
              return req.send();
            })
            .then([bytes](auto response) {
              KJ_REQUIRE(response.getErr() == 0, "repair target failed to sync");
              return bytes;
            });
      })
      .then(
          [context, id, target](uint64_t bytes) mutable {
            spdlog::info("replicated chunk {:016x} to {} ({} bytes)", id, target, bytes);
            context.getResults().setBytes(bytes);
          },
          [context, id, target, &t](kj::Exception&& e) mutable {
            spdlog::warn("replicating chunk {:016x} to {} failed: {}", id, target,
                         e.getDescription().cStr());
            t.reset();
            context.getResults().setErr(EIO);
          });
}

}  // namespace cairn::chunk
