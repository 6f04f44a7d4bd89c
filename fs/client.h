// mount.cairn's connection to the cluster. Every method blocks the calling (FUSE worker or
// background writer) thread. Requests go out on the calling thread's own event loop and
// connections to meta and chunk servers (a request costs no handoff to another thread and back);
// encryption and decryption run on the calling thread and a worker pool, so one large request
// uses every core.
#pragma once

#include <capnp/message.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "fs/crypto.h"
#include "fs/local_chunks.h"
#include "rpc/workers.h"
#include "rpc/meta_client.h"
#include "rpc/metrics.h"
#include "rpc/runtime.h"

namespace cairn::fs {

struct ChunkLoc {
  uint64_t index = 0;
  uint64_t id = 0;
  uint64_t version = 0;
  std::vector<std::string> addrs;  // replica chain, head first
  std::vector<uint32_t> servers;   // their server ids
  // Offered at create and not yet recorded by meta: the next commit binds it (see
  // CommitWriteOp.bind). Meta cannot change its chain meanwhile.
  bool unbound = false;
};

void toChunkLoc(proto::ChunkInfo::Reader c, ChunkLoc& out);
void fromChunkLoc(const ChunkLoc& loc, proto::ChunkInfo::Builder out);

using Reply = kj::Own<capnp::MallocMessageBuilder>;

// A flag one thread raises and another thread's event loop can wait on without polling: a
// waiting loop is woken by the raise itself (a cross-thread fulfiller).
class StopSignal {
 public:
  void raise();  // any thread; waits already made and made later end
  bool raised() const { return raised_.load(); }
  // On the calling thread's event loop: resolves once raise() was called.
  kj::Promise<void> wait();
  // Blocks the calling thread for `pause`, or until raise(); true when raised.
  bool sleepFor(std::chrono::milliseconds pause);

 private:
  std::atomic<bool> raised_{false};
  std::mutex mu_;  // guards waiter_, and orders raise() against wait() and sleepFor()
  std::condition_variable sleepers_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> waiter_;
};

class ClusterClient {
 public:
  // Runs beside every wait of the calling thread on its own loop and is dropped when the wait
  // ends (null: nothing runs). The FUSE loop's reading thread sets it, to go on taking requests
  // while it waits for an answer. Thread-local.
  using WaitCompanion = kj::Promise<void> (*)(kj::AsyncIoContext&);
  static void setWaitCompanion(WaitCompanion companion);
  // How long the calling thread's meta requests go on retrying while no meta server answers
  // (120 s unless set; set before the thread's first request). Thread-local.
  static void setThreadRetry(kj::Duration retryFor);

  ClusterClient(std::vector<std::string> metaAddrs, const std::string& secretBytes,
                BlockCipher& cipher);
  ~ClusterClient();

  // Sends a meta request (root MetaRequest); the reply's root is a MetaReply. Throws
  // kj::Exception when meta stays unreachable. Not on the loop thread.
  Reply meta(kj::Own<capnp::MallocMessageBuilder> request);
  // The same, given up (a DISCONNECTED exception) as soon as `stop` is raised: a thread that
  // waits on meta in a loop (the change feed's watch) ends when the mount does, not when its
  // retries run out. One such call at a time per StopSignal.
  Reply meta(kj::Own<capnp::MallocMessageBuilder> request, StopSignal& stop);

  // errno-style results (0 = ok).
  int getChunk(uint64_t ino, uint64_t index, bool allocate, ChunkLoc& out);
  // Reads `count` blocks starting at `first` of the chunk, decrypted into out (count * BLOCK
  // bytes); holes read as zeros. Tries each replica in turn; EIO when none has good data.
  int readBlocks(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks, uint32_t first,
                 uint32_t count, unsigned char* out);
  // Encrypts and writes `count` blocks from `plain` through the replica chain. When a replica
  // fails, reports it to meta (which drops it from the chain and bumps the chunk version),
  // updates `loc` and writes again: the caller sees no error while one replica is alive.
  // With `at`, block i goes to block at[i] of the chunk (strictly ascending), not first + i;
  // ENOSYS when the chain's head predates such writes.
  int writeBlocks(uint64_t ino, ChunkLoc& loc, uint64_t chunkBlocks, uint32_t first,
                  uint32_t count, const unsigned char* plain, bool sync,
                  const uint32_t* at = nullptr);
  // Syncs every chunk (on all its replicas) at once; the first error.
  int syncChunks(const std::vector<ChunkLoc>& locs);
  int truncateChunk(const ChunkLoc& loc, uint32_t keepBlocks);

  // After the caller has answered its own request: sends what this thread's connections owe
  // their servers for calls already answered (capnp's Finish messages), so that they go out
  // after the answer instead of ahead of it.
  void settle();

  // Reads of copies on this host straight from their files (see fs/local_chunks.h): on unless
  // turned off here; `bytes` (optional) counts the bytes so read, `retried` the reads of a
  // file that failed (a block that did not authenticate, an I/O error) and went to the servers.
  void setLocalReads(bool on, Counter* bytes, Counter* retried) {
    localReads_ = on;
    localBytes_ = bytes;
    localRetried_ = retried;
  }

  BlockCipher& cipher() { return cipher_; }
  // The id every request of this mount carries (its session with meta).
  uint64_t clientId() const { return clientId_; }
  // Serves Prometheus /metrics on `addr` from the client's event loop; returns the port.
  unsigned serveMetrics(Metrics& metrics, const std::string& addr);

 private:
  struct RawRead {
    int err = 0;
    std::vector<bool> present;
    std::vector<const unsigned char*> aux, data;  // per block (AUX and BLOCK bytes), when present
    // What they point into: the reply itself when it is read on the thread that opens the blocks
    // (its own loop), else a copy (a reply may not leave its loop's thread).
    kj::Maybe<capnp::Response<proto::Chunk::ReadResults>> reply;
    std::unique_ptr<unsigned char[]> copy;
  };
  Peer& chunkPeer(const std::string& addr);  // of the loop the caller is on
  // Runs `send` against the head of the chain; EIO when it is unreachable.
  int headCall(const ChunkLoc& loc, kj::Function<kj::Promise<int>(proto::Chunk::Client)> send);
  // The same on the loop the caller is on; `send` must outlive the promise.
  kj::Promise<int> headCallAsync(const ChunkLoc& loc,
                                 kj::Function<kj::Promise<int>(proto::Chunk::Client)>& send);
  int reportFailure(uint64_t ino, ChunkLoc& loc, const std::string& failedAddr);
  // Tells meta that a replica served a block that failed its check (best effort).
  void reportCorrupt(const ChunkLoc& loc, const std::string& addr);
  RawRead readRaw(const std::string& addr, const ChunkLoc& loc, uint32_t first, uint32_t count);
  kj::Promise<RawRead> readRawAsync(const std::string& addr, const ChunkLoc& loc, uint32_t first,
                                    uint32_t count);  // on the caller's loop
  // Decrypts `n` fetched blocks into out on the worker pool (a block may already lie at its
  // place in out: it is opened in place); false when one fails its check (logged unless quiet).
  bool openBlocks(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks, uint32_t first,
                  const RawRead& raw, uint32_t n, unsigned char* out, const std::string& addr,
                  bool quiet = false);
  // Reads the blocks from a copy on this host, from its file; false when there is none or a
  // block fails its check (the caller then reads through the servers).
  bool readLocal(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks, uint32_t first,
                 uint32_t count, unsigned char* out);
  bool readFromFile(const chunk::ChunkFile& file, uint64_t ino, const ChunkLoc& loc,
                    uint64_t chunkBlocks, uint32_t first, uint32_t count, unsigned char* out,
                    const std::string& addr);
  // Where server `addr` keeps its copy of the chunk (path "" when it has none or fails to
  // answer).
  LocalChunks::Located locate(const std::string& addr, const ChunkLoc& loc);
  // Reads one piece from the replicas in `order`, one after the other.
  int readPiece(uint64_t ino, const ChunkLoc& loc, uint64_t chunkBlocks,
                const std::vector<std::string>& order, uint32_t first, uint32_t n,
                unsigned char* out);
  // Replicas to read from, in chain order but with those that failed recently last, so that a
  // dead server costs one failed connection every few seconds, not one per read. `upCount`:
  // how many lead the list (not failed recently).
  std::vector<std::string> readOrder(const ChunkLoc& loc, size_t* upCount = nullptr);
  void noteReplica(const std::string& addr, bool reachable);

  // Requests run on the calling thread's own event loop, with its own connections (made on
  // first use): no handoff to another thread and back. A thread that runs an event loop of its
  // own goes through loop_, and so does loop_'s own thread. ownLoop() says which, and readies
  // the thread's loop; onLoop(func) runs func (which may return a promise) there and waits.
  bool ownLoop();
  template <typename Func>
  auto onLoop(Func&& func);
  kj::Timer& timer();  // of the loop the caller is on
  // A meta call on the caller's loop (its own connection, or the loop thread's).
  kj::Promise<Reply> callMeta(kj::Own<capnp::MallocMessageBuilder> request);

  BlockCipher& cipher_;
  Workers workers_;
  uint64_t clientId_ = 0;
  const uint64_t instance_;              // tells this client's per-thread connections apart
  std::vector<std::string> metaAddrs_;
  // Shared by every connection of this client id.
  std::shared_ptr<SeqSource> seqs_ = std::make_shared<SeqSource>();
  Metrics* served_ = nullptr;  // served from loop_ (serveMetrics)
  LoopThread loop_;
  kj::Own<ClusterSecret> secret_;
  kj::Own<MetaClient> meta_;                          // loop_'s thread only
  std::map<std::string, std::unique_ptr<Peer>> peers_;  // loop_'s thread only
  std::atomic<int> readsInFlight_{0};  // readBlocks calls running now
  LocalChunks local_;
  bool localReads_ = true;
  Counter* localBytes_ = nullptr;
  Counter* localRetried_ = nullptr;
  std::mutex downMutex_;
  std::map<std::string, std::chrono::steady_clock::time_point> downUntil_;
};

}  // namespace cairn::fs
