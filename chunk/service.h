// cairn-chunk's RPC adapter: checks every parameter at the boundary, forwards writes to the
// other replicas of the chain, and does the block I/O through ChunkStore.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "chunk/store.h"
#include "rpc/metrics.h"
#include "rpc/net.h"
#include "rpc/workers.h"

namespace cairn::chunk {

class ChunkServiceImpl final : public proto::Chunk::Server {
 public:
  ChunkServiceImpl(kj::AsyncIoContext& io, const ClusterSecret& secret, ChunkStore& store,
                   Metrics& metrics);

  kj::Promise<void> write(WriteContext context) override;
  kj::Promise<void> writeAt(WriteAtContext context) override;
  kj::Promise<void> read(ReadContext context) override;
  kj::Promise<void> sync(SyncContext context) override;
  kj::Promise<void> truncate(TruncateContext context) override;
  kj::Promise<void> remove(RemoveContext context) override;
  kj::Promise<void> list(ListContext context) override;
  kj::Promise<void> setVersion(SetVersionContext context) override;
  kj::Promise<void> listPage(ListPageContext context) override;
  kj::Promise<void> verify(VerifyContext context) override;
  kj::Promise<void> replicate(ReplicateContext context) override;
  kj::Promise<void> locate(LocateContext context) override;

 private:
  Peer& peer(const std::string& addr);
  // Blocks [from, from + count) of a write's list go to blocks block.. of the chunk.
  struct Run {
    uint32_t block, from, count;
  };
  // The common part of write and writeAt: checks the blocks, forwards the call down the chain
  // (`request(client, params)` sends a copy and resolves to its (errno, failed address)) and
  // stores the runs here.
  template <typename Context, typename Request>
  kj::Promise<void> storeBlocks(Context context, std::vector<Run> runs, Request request);
  // Sends a request to every other replica of the chain at once (`send` builds and sends one,
  // and resolves to (errno, the failed replica's address or "")); resolves when all have
  // answered, to the first failure in the chain's order, or (0, "").
  kj::Promise<std::pair<int, std::string>> forward(
      capnp::List<capnp::Text>::Reader chain,
      kj::Function<kj::Promise<std::pair<int, std::string>>(proto::Chunk::Client)> send);
  kj::Promise<uint64_t> copyFrom(uint64_t id, uint64_t version, uint32_t next, Peer& target,
                                 uint64_t rate, uint64_t copied);
  // Checks the version of an existing chunk; returns an errno (ESTALE when the caller's is older).
  int checkVersion(uint64_t id, uint64_t version, bool create);
  // Large reads run on I/O threads, so that a server keeps several disk reads in flight and
  // the event loop serves others meanwhile. A change to a chunk (write, truncation) waits
  // until no such read of it is in flight: a read never sees half of a write.
  template <typename Func>
  kj::Promise<void> onIoThread(Func&& func);
  kj::Promise<void> idle(uint64_t id);
  // Runs `func` on the loop once no such read of chunk `id` is in flight, checked in the turn
  // that runs it (a read may begin between idle() resolving and its continuation running).
  template <typename Func>
  kj::PromiseForResult<Func, void> whenIdle(uint64_t id, Func&& func);
  void readDone(uint64_t id);
  // A read's state across its steps: the records, the reply laid out from them, the blocks'
  // bytes read into it and checked, the answer.
  struct ReadJob {
    std::shared_ptr<ChunkFile> file;
    uint32_t first, count;
    std::vector<BlockMeta> meta;
    std::vector<unsigned char*> into;  // where each present block's bytes go in the reply
    int64_t bad = -1;                  // the first block whose checksum did not match
    void readRecords();
    void readBlocks();
  };
  void layOut(proto::Chunk::ReadResults::Builder results, ReadJob& job);
  void answer(proto::Chunk::ReadResults::Builder results, const ReadJob& job, uint64_t id);

  kj::AsyncIoContext& io_;
  const ClusterSecret& secret_;
  ChunkStore& store_;
  Metrics& metrics_;
  std::map<std::string, std::unique_ptr<Peer>> peers_;
  Counter& bytesWritten_;
  Counter& bytesRead_;
  Counter& corruptBlocks_;
  Counter& replicatedBytes_;
  Counter& locates_;
  Histogram& writeLatency_;
  Histogram& readLatency_;
  struct Busy {
    int reads = 0;
    std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters;
  };
  std::map<uint64_t, Busy> busy_;  // chunks with reads in flight on the I/O threads
  TaskQueue writeback_{1};         // starts writeback of large written runs
  TaskQueue ioThreads_{4};         // last: joined first, while everything else is still here
};

}  // namespace cairn::chunk
