// One chunk on disk. Format (all integers little-endian), see docs/formats.md:
//
//   [0, 4096)              header: magic "CAIRNCK1", format, blockBytes, maxBlocks, chunk id,
//                          version, crc32 of the preceding header bytes
//   [4096, DATA_OFFSET)    block table: maxBlocks records of 64 bytes
//                            crc32(aux || data) u32, flags u32 (1 = present), aux[40], pad[16]
//   [DATA_OFFSET, ...)     block i's bytes at DATA_OFFSET + i * blockBytes
//
// Data stays 4 KiB aligned so reads never straddle pages. A block whose record is not present
// was never written (a hole) and reads as absent. The record is written after the data, so a
// crash between the two leaves a record whose crc does not match: the block reads as corrupt,
// never as wrong bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cairn::chunk {

constexpr uint32_t BLOCK_BYTES = 4096;
constexpr uint32_t AUX_BYTES = 40;  // the client's XChaCha20-Poly1305 nonce (24) and tag (16)
constexpr uint32_t RECORD_BYTES = 64;
constexpr uint32_t HEADER_BYTES = 4096;
constexpr uint32_t FORMAT_VERSION = 1;
constexpr uint32_t FLAG_PRESENT = 1;
constexpr uint32_t WRITEBACK_BLOCKS = 64;  // a write of this many blocks or more starts writeback
// A run of this many blocks or more is written with O_DIRECT: the data goes from one reused
// buffer to the disk instead of into fresh page-cache pages (on a virtual machine whose free
// memory goes back to the host, the copy into new pages cost more than the disk write).
constexpr uint32_t DIRECT_BLOCKS = 64;
// A read of a run this long or longer (on the I/O threads) goes around the page cache too.
constexpr uint32_t DIRECT_READ_BLOCKS = 32;
static_assert(AUX_BYTES + 8 <= RECORD_BYTES);
static_assert(BLOCK_BYTES % 4096 == 0);

struct BlockData {
  bool present = false;
  uint32_t crc = 0;
  std::string aux;   // AUX_BYTES when present
  std::string data;  // BLOCK_BYTES when present
};

enum class ReadStatus { OK, ABSENT, CORRUPT };

// A block to write, pointing into the caller's buffers (no copy).
struct BlockView {
  uint32_t crc;
  const void* aux;   // AUX_BYTES
  const void* data;  // BLOCK_BYTES
};

// A block's record: whether it is present, its crc and aux.
struct BlockMeta {
  bool present;
  uint32_t crc;
  unsigned char aux[AUX_BYTES];
};

// The lock a running chunk server holds on each of its data directories: an OFD write lock on
// DIR/lock, which the kernel drops when the process ends however it ends. A second server is
// refused the directory, and a client on the host reads a copy from its file only while the
// server that owns the file runs (a dead server's copy may be one the chain has left behind).
class DirLock {
 public:
  // Throws when another process holds it.
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  static std::string pathIn(const std::string& dir) { return dir + "/lock"; }
  // Whether some process holds the lock of the file open at `fd` (read-only is enough).
  static bool held(int fd);

 private:
  int fd_ = -1;
};

// Opens a path read-only the way a client opens what a server names (a chunk file, a data
// directory's lock): no symbolic link followed in any component, never blocking in open; -1
// (errno set) when it is not a regular file.
int openRegularReadOnly(const std::string& path);

// This host's boot id (/proc/sys/kernel/random/boot_id: random at each boot, the same in every
// container of the host), or "" when it cannot be read.
std::string hostBootId();

uint32_t blockCrc(const std::string& aux, const std::string& data);
uint32_t blockCrc(const void* aux, size_t auxLen, const void* data, size_t dataLen);

class ChunkFile {
 public:
  // Opens an existing chunk file; throws on a bad header.
  static ChunkFile open(const std::string& path);
  // Opens an existing chunk file for reading only, as a client on the server's host does (see
  // fs/local_chunks.h): never follows a symbolic link, never blocks in open, refuses anything
  // but a regular file. Throws on a bad header.
  static ChunkFile openReadOnly(const std::string& path);
  // Whether the file still has a name (a removed chunk's file may stay open here).
  bool linked() const;
  // Its device and inode numbers.
  std::pair<uint64_t, uint64_t> identity() const;
  // Creates a new chunk file (fails if it exists).
  static ChunkFile create(const std::string& path, uint64_t id, uint64_t version, uint32_t maxBlocks);
  // The same from `spare`, an empty file on the same filesystem, renamed to `path` (fails if
  // that exists): no inode to allocate while a request waits. Its first sync() also syncs the
  // directory of `path`, so that the new name is on disk with the data.
  static ChunkFile adopt(const std::string& spare, const std::string& path, uint64_t id,
                         uint64_t version, uint32_t maxBlocks);

  ChunkFile(ChunkFile&& other) noexcept;
  ChunkFile& operator=(ChunkFile&& other) noexcept;
  ~ChunkFile();

  uint64_t id() const { return id_; }
  uint64_t version() const { return version_; }
  uint32_t maxBlocks() const { return maxBlocks_; }
  // Blocks below this may be present: the file ends after the last block ever written, so a
  // scan can stop there instead of at maxBlocks().
  uint32_t blockLimit() const;

  // The id and version the header holds now (a server raises the version in place); false
  // when it does not read as a chunk header.
  bool readHeader(uint64_t& id, uint64_t& version) const;
  void setVersion(uint64_t version);
  // Blocks must each carry AUX_BYTES of aux and BLOCK_BYTES of data with a matching crc.
  void write(uint32_t firstBlock, const std::vector<BlockData>& blocks);
  // The same from views: the data goes to the file in one gathered write.
  void write(uint32_t firstBlock, const std::vector<BlockView>& blocks);
  // Reads the records of blocks [first, first + count) in one read.
  void readMeta(uint32_t first, uint32_t count, std::vector<BlockMeta>& out) const;
  // Reads the bytes of blocks [first, first + out.size()) into out[i] (BLOCK_BYTES each;
  // nullptr: skip), a gathered read per run. The caller checks each block's crc.
  void readData(uint32_t first, const std::vector<unsigned char*>& out) const;
  // Reads one block; verifies its crc.
  ReadStatus read(uint32_t block, BlockData& out) const;
  // Drops blocks >= keep.
  void truncate(uint32_t keep);
  void sync();
  // Whether a run of `count` blocks goes to the disk directly (it needs no writeback then).
  bool writesDirect(uint32_t count) const { return count >= DIRECT_BLOCKS && !directRefused_; }
  // Starts writing blocks [first, first + count) to disk without waiting for it (it may wait
  // for room in the disk's queue: call it off the event loop).
  void startWriteback(uint32_t firstBlock, uint32_t count) const;
  // Bytes allocated on disk.
  uint64_t allocatedBytes() const;

 private:
  ChunkFile() = default;
  // Takes `fd` (closed if the header is bad, by the destructor) and reads the header.
  static ChunkFile fromHeader(std::string path, int fd, bool readOnly);
  uint64_t dataOffset() const;
  void writeHeader();
  // Writes the blocks' data at `off` through the page cache, gathered.
  void writeBuffered(const std::vector<BlockView>& blocks, uint64_t off);
  // Writes whole blocks at `off` through the O_DIRECT descriptor; false when this file cannot
  // (the filesystem refuses O_DIRECT): the caller writes them buffered.
  bool writeDirect(const BlockView* blocks, size_t n, uint64_t off);
  // Reads whole blocks at `off` through the O_DIRECT descriptor into out[0..n); false when
  // this file cannot (the caller reads them buffered).
  bool readDirect(unsigned char* const* out, size_t n, uint64_t off) const;
  // The O_DIRECT descriptor, opened on first use; -1 when the filesystem refuses it.
  int directFd() const;
  // From now on this file is written and read buffered; the first refusal in the process is
  // logged (a chunk directory on a filesystem without O_DIRECT).
  void refuseDirect(const char* why) const;

  static constexpr int DIRECT_UNOPENED = -1, DIRECT_OFF = -2;

  int fd_ = -1;
  mutable std::atomic<int> direct_{DIRECT_UNOPENED};  // the same file opened with O_DIRECT
  mutable std::atomic<bool> directRefused_{false};
  std::string path_;
  uint64_t id_ = 0;
  uint64_t version_ = 0;
  uint32_t maxBlocks_ = 0;
  std::atomic<bool> syncDir_{false};  // the name is new: sync() syncs its directory too
  bool readOnly_ = false;
};

}  // namespace cairn::chunk
