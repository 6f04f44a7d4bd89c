// chunk/chunk_file: blocks round-trip with their checksums, holes read absent, and corruption
// on disk is detected, never returned as data.
#include <gtest/gtest.h>
#include <cinttypes>
#include <kj/exception.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "chunk/chunk_file.h"
#include "chunk/store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

namespace cairn::chunk {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cairn-chunk-test.XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

size_t filesIn(const std::string& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    n++;
  }
  return n;
}

BlockData makeBlock(char fill) {
  BlockData b;
  b.present = true;
  b.aux.assign(AUX_BYTES, static_cast<char>(fill + 1));
  b.data.assign(BLOCK_BYTES, fill);
  b.crc = blockCrc(b.aux, b.data);
  return b;
}

TEST(ChunkFile, GatheredWritesAndRunReadsMatchBlockByBlockOnes) {
  // Proves the view-based write (one gathered write) and the run reads (records in one read,
  // data gathered per run of present blocks) agree with the one-block read: same bytes, same
  // crc and aux, holes absent, and a block damaged on disk fails its crc.
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 9, 1, 2048);
  std::vector<BlockData> keep;
  std::vector<BlockView> views;
  for (int i = 0; i < 1500; i++) keep.push_back(makeBlock(static_cast<char>('a' + i % 26)));
  for (auto& b : keep) views.push_back(BlockView{b.crc, b.aux.data(), b.data.data()});
  f.write(10, views);                                              // 10..1509: more than IOV_MAX
  f.write(1600, std::vector<BlockView>(views.begin(), views.begin() + 3));  // 1600..1602
  std::vector<BlockMeta> meta;
  f.readMeta(0, 1700, meta);
  std::vector<std::vector<unsigned char>> bufs(1700);
  std::vector<unsigned char*> into(1700, nullptr);
  for (int i = 0; i < 1700; i++) {
    bool want = (i >= 10 && i < 1510) || (i >= 1600 && i < 1603);
    ASSERT_EQ(meta[i].present, want) << i;
    if (!want) continue;
    bufs[i].resize(BLOCK_BYTES);
    into[i] = bufs[i].data();
  }
  f.readData(0, into);
  BlockData one;
  for (int i = 0; i < 1700; i++) {
    if (!into[i]) continue;
    ASSERT_EQ(f.read(i, one), ReadStatus::OK) << i;
    ASSERT_EQ(0, memcmp(one.data.data(), into[i], BLOCK_BYTES)) << i;
    ASSERT_EQ(one.crc, meta[i].crc);
    ASSERT_EQ(0, memcmp(one.aux.data(), meta[i].aux, AUX_BYTES));
    ASSERT_EQ(blockCrc(meta[i].aux, AUX_BYTES, into[i], BLOCK_BYTES), meta[i].crc) << i;
  }
  // Damage block 20 on disk: the run read returns bytes whose crc no longer matches.
  {
    std::fstream raw(dir.path + "/c", std::ios::in | std::ios::out | std::ios::binary);
    raw.seekp(static_cast<std::streamoff>(4096 + 2048 * 64 + 20 * 4096 + 100));
    raw.write("XYZ", 3);
  }
  std::vector<unsigned char> b20(BLOCK_BYTES);
  f.readData(20, {b20.data()});
  EXPECT_NE(blockCrc(meta[20].aux, AUX_BYTES, b20.data(), BLOCK_BYTES), meta[20].crc);
  EXPECT_EQ(f.read(20, one), ReadStatus::CORRUPT);
}

TEST(ChunkFile, LargeRunsBypassThePageCacheAndStayCoherentWithBufferedOnes) {
  // A run of DIRECT_BLOCKS or more goes to the disk with O_DIRECT (the filesystem under /tmp
  // takes it); a short run stays buffered. Mixed over the same blocks, every read sees the
  // latest bytes.
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 11, 1, 1024);
  ASSERT_TRUE(f.writesDirect(DIRECT_BLOCKS));
  ASSERT_FALSE(f.writesDirect(DIRECT_BLOCKS - 1));
  std::vector<BlockData> small;
  for (int i = 0; i < 10; i++) small.push_back(makeBlock('s'));
  f.write(0, small);  // buffered: in the page cache now
  BlockData out;
  ASSERT_EQ(f.read(5, out), ReadStatus::OK);
  ASSERT_EQ(out.data[0], 's');
  std::vector<BlockData> big;
  for (int i = 0; i < 300; i++) big.push_back(makeBlock(static_cast<char>('A' + i % 20)));
  f.write(5, big);  // blocks 5..304, over five cached ones, in two direct writes
  for (int i = 0; i < 305; i++) {
    ASSERT_EQ(f.read(i, out), ReadStatus::OK) << i;
    char want = i < 5 ? 's' : static_cast<char>('A' + (i - 5) % 20);
    ASSERT_EQ(out.data, std::string(BLOCK_BYTES, want)) << i;
  }
  // Written around the page cache: blocks 100..299 are not resident until read (on a disk
  // filesystem; tmpfs keeps everything in memory whatever the flag).
  auto f2 = ChunkFile::create(dir.path + "/d", 12, 1, 1024);
  f2.write(100, std::vector<BlockData>(big.begin(), big.begin() + 200));
  struct statfs sfs;
  ASSERT_EQ(statfs(dir.path.c_str(), &sfs), 0);
  bool inMemory = sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC;
  int fd = ::open((dir.path + "/d").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  size_t pages = (st.st_size + 4095) / 4096;
  std::vector<unsigned char> resident(pages);
  ASSERT_EQ(mincore(map, st.st_size, resident.data()), 0);
  size_t cached = 0;
  for (size_t p = pages - 200; p < pages; p++) cached += resident[p] & 1;
  munmap(map, st.st_size);
  ::close(fd);
  if (!inMemory) {
    EXPECT_EQ(cached, 0u);
  }
  ASSERT_EQ(f2.read(150, out), ReadStatus::OK);
  EXPECT_EQ(out.data, std::string(BLOCK_BYTES, static_cast<char>('A' + 50 % 20)));
  // A long run read (direct, in pieces of 1 MiB) over blocks written both ways, some of them
  // still dirty in the page cache, and up to the file's end.
  f2.write(120, std::vector<BlockData>(small.begin(), small.begin() + 3));
  std::vector<std::vector<unsigned char>> bufs(200, std::vector<unsigned char>(BLOCK_BYTES));
  std::vector<unsigned char*> into;
  for (auto& b : bufs) into.push_back(b.data());
  f2.readData(100, into);
  for (int i = 0; i < 200; i++) {
    char want = i >= 20 && i < 23 ? 's' : static_cast<char>('A' + i % 20);
    ASSERT_EQ(std::string(reinterpret_cast<char*>(bufs[i].data()), BLOCK_BYTES),
              std::string(BLOCK_BYTES, want)) << i;
  }
}

TEST(ChunkFile, AFilesystemWithoutODirectIsWrittenAndReadBuffered) {
  // ramfs refuses O_DIRECT at open: long runs take the buffered path and read back whole.
  TempDir dir;
  struct Ramfs {  // unmounted before the directory is removed, whatever the test's outcome
    std::string path;
    bool mounted;
    ~Ramfs() {
      if (mounted) ::umount(path.c_str());
    }
  } ramfs{dir.path, ::mount("ramfs", dir.path.c_str(), "ramfs", 0, nullptr) == 0};
  if (!ramfs.mounted) GTEST_SKIP() << "cannot mount ramfs here: " << strerror(errno);
  {
    auto f = ChunkFile::create(dir.path + "/c", 13, 1, 1024);
    std::vector<BlockData> big;
    for (int i = 0; i < 300; i++) big.push_back(makeBlock(static_cast<char>('a' + i % 26)));
    ASSERT_TRUE(f.writesDirect(DIRECT_BLOCKS));  // not tried yet
    f.write(0, big);
    EXPECT_FALSE(f.writesDirect(DIRECT_BLOCKS));
    std::vector<std::vector<unsigned char>> bufs(300, std::vector<unsigned char>(BLOCK_BYTES));
    std::vector<unsigned char*> into;
    for (auto& b : bufs) into.push_back(b.data());
    f.readData(0, into);
    for (int i = 0; i < 300; i++)
      ASSERT_EQ(std::string(reinterpret_cast<char*>(bufs[i].data()), BLOCK_BYTES),
                std::string(BLOCK_BYTES, static_cast<char>('a' + i % 26))) << i;
  }
}

TEST(ChunkFile, WrittenBlocksReadBackAndHolesAreAbsent) {
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 7, 1, 64);
  f.write(3, {makeBlock('a'), makeBlock('b')});
  BlockData out;
  EXPECT_EQ(f.read(3, out), ReadStatus::OK);
  EXPECT_EQ(out.data, std::string(BLOCK_BYTES, 'a'));
  EXPECT_EQ(out.aux, std::string(AUX_BYTES, 'b'));
  EXPECT_EQ(f.read(4, out), ReadStatus::OK);
  EXPECT_EQ(out.data, std::string(BLOCK_BYTES, 'b'));
  EXPECT_EQ(f.read(0, out), ReadStatus::ABSENT);
  EXPECT_EQ(f.read(63, out), ReadStatus::ABSENT);
}

TEST(ChunkFile, ReopenKeepsIdVersionAndData) {
  TempDir dir;
  {
    auto f = ChunkFile::create(dir.path + "/c", 42, 5, 16);
    f.write(0, {makeBlock('z')});
    f.setVersion(9);
    f.sync();
  }
  auto f = ChunkFile::open(dir.path + "/c");
  EXPECT_EQ(f.id(), 42u);
  EXPECT_EQ(f.version(), 9u);
  BlockData out;
  ASSERT_EQ(f.read(0, out), ReadStatus::OK);
  EXPECT_EQ(out.data[100], 'z');
}

TEST(ChunkFile, BlockLimitEndsAfterTheLastWrittenBlock) {
  // The scrubber stops at blockLimit(): no block at or past it can be present.
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 9, 1, 64);
  EXPECT_EQ(f.blockLimit(), 0u);
  f.write(5, {makeBlock('a')});
  EXPECT_EQ(f.blockLimit(), 6u);
  f.write(1, {makeBlock('b')});
  EXPECT_EQ(f.blockLimit(), 6u);
  BlockData out;
  for (uint32_t i = f.blockLimit(); i < f.maxBlocks(); i++) EXPECT_EQ(f.read(i, out), ReadStatus::ABSENT);
  f.write(63, {makeBlock('c')});
  EXPECT_EQ(f.blockLimit(), 64u);
}

TEST(ChunkFile, FlippedByteOnDiskReadsCorrupt) {
  TempDir dir;
  std::string path = dir.path + "/c";
  {
    auto f = ChunkFile::create(path, 1, 1, 16);
    f.write(2, {makeBlock('q')});
  }
  // Flip one byte of block 2's data (the data area starts after header and block table).
  uint64_t dataOffset = HEADER_BYTES + 4096;
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(dataOffset + 2 * BLOCK_BYTES + 17));
  io.put('Q');
  io.close();
  auto f = ChunkFile::open(path);
  BlockData out;
  EXPECT_EQ(f.read(2, out), ReadStatus::CORRUPT);
}

TEST(ChunkFile, TruncateDropsLaterBlocks) {
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 1, 1, 16);
  f.write(0, {makeBlock('a'), makeBlock('b'), makeBlock('c')});
  f.truncate(1);
  BlockData out;
  EXPECT_EQ(f.read(0, out), ReadStatus::OK);
  EXPECT_EQ(f.read(1, out), ReadStatus::ABSENT);
  EXPECT_EQ(f.read(2, out), ReadStatus::ABSENT);
}

TEST(ChunkFile, VersionsNeverGoDown) {
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 1, 5, 16);
  EXPECT_THROW(f.setVersion(4), kj::Exception);
  f.setVersion(6);
  EXPECT_EQ(f.version(), 6u);
}

TEST(ChunkFile, MalformedBlocksAreRefused) {
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 1, 1, 4);
  auto b = makeBlock('x');
  b.data.resize(100);
  EXPECT_THROW(f.write(0, {b}), kj::Exception);
  EXPECT_THROW(f.write(4, {makeBlock('y')}), kj::Exception);  // beyond the end
}

TEST(ChunkFile, OverwrittenBlockReadsTheNewBytesAndAux) {
  // Proves that a second write of a block replaces both its data and its record (aux, crc).
  TempDir dir;
  auto f = ChunkFile::create(dir.path + "/c", 1, 1, 4);
  f.write(0, {makeBlock('a')});
  f.write(0, {makeBlock('m')});
  BlockData out;
  ASSERT_EQ(f.read(0, out), ReadStatus::OK);
  EXPECT_EQ(out.data, std::string(BLOCK_BYTES, 'm'));
  EXPECT_EQ(out.aux, std::string(AUX_BYTES, 'n'));
  EXPECT_EQ(out.crc, makeBlock('m').crc);
}

TEST(ChunkFile, DataAreaIsAlignedAfterALargeBlockTable) {
  // Proves the layout with a block table longer than one page (200 records = 12800 bytes): the
  // data area starts after the header and the table rounded up to 4 KiB (16384), so a byte there is
  // block 0's data, and flipping it makes the block read CORRUPT.
  TempDir dir;
  std::string path = dir.path + "/c";
  {
    auto f = ChunkFile::create(path, 1, 1, 200);
    f.write(0, {makeBlock('d')});
  }
  uint64_t dataOffset = HEADER_BYTES + 16384;  // header, then 12800 bytes of table rounded up
  ASSERT_EQ(dataOffset % 4096, 0u);
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(dataOffset));
  EXPECT_EQ(io.get(), 'd') << "block 0 is not at the aligned data offset";
  io.seekp(static_cast<std::streamoff>(dataOffset));
  io.put('e');
  io.close();
  BlockData out;
  EXPECT_EQ(ChunkFile::open(path).read(0, out), ReadStatus::CORRUPT);
}

TEST(ChunkFile, FlippedAuxByteReadsCorrupt) {
  // Proves that the crc covers aux (the AEAD nonce and tag) as well as data: a byte changed in
  // the block's record on disk makes the block CORRUPT.
  TempDir dir;
  std::string path = dir.path + "/c";
  {
    auto f = ChunkFile::create(path, 1, 1, 16);
    f.write(0, {makeBlock('a')});
  }
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(HEADER_BYTES + 8 + 5));  // record 0: crc, flags, aux
  io.put('Z');
  io.close();
  BlockData out;
  EXPECT_EQ(ChunkFile::open(path).read(0, out), ReadStatus::CORRUPT);
}

TEST(ChunkFile, TruncationSurvivesReopenAndBlocksCanBeWrittenAgain) {
  // Proves that truncate is on disk (dropped blocks stay absent after reopening) and that the
  // chunk can grow again past the cut without old bytes coming back.
  TempDir dir;
  std::string path = dir.path + "/c";
  {
    auto f = ChunkFile::create(path, 1, 1, 8);
    f.write(0, {makeBlock('a'), makeBlock('b'), makeBlock('c'), makeBlock('d')});
    f.truncate(1);
  }
  auto f = ChunkFile::open(path);
  BlockData out;
  EXPECT_EQ(f.read(0, out), ReadStatus::OK);
  for (uint32_t i = 1; i < 4; i++) EXPECT_EQ(f.read(i, out), ReadStatus::ABSENT) << i;
  f.write(3, {makeBlock('x')});
  ASSERT_EQ(f.read(3, out), ReadStatus::OK);
  EXPECT_EQ(out.data, std::string(BLOCK_BYTES, 'x'));
  EXPECT_EQ(f.read(2, out), ReadStatus::ABSENT);
}

TEST(ChunkFile, CreateRefusesAnExistingFileAndOpenRefusesGarbage) {
  // Proves that create never overwrites a chunk, and open never accepts a file whose header is
  // not a valid chunk header; a lower version is refused and leaves the stored one.
  TempDir dir;
  std::string path = dir.path + "/c";
  {
    auto f = ChunkFile::create(path, 1, 4, 4);
    EXPECT_THROW(f.setVersion(3), kj::Exception);
  }
  EXPECT_EQ(ChunkFile::open(path).version(), 4u);
  EXPECT_THROW(ChunkFile::create(path, 2, 1, 4), kj::Exception);
  std::string junk = dir.path + "/junk";
  std::ofstream(junk) << std::string(8192, 'x');
  EXPECT_THROW(ChunkFile::open(junk), kj::Exception);
}

}  // namespace
}  // namespace cairn::chunk

namespace cairn::chunk {
namespace {

TEST(ChunkFile, ReadOnlyOpenReadsRunsStraightIntoAnAlignedBufferAndSeesVersionChanges) {
  // What a client on the server's host does (fs/local_chunks.h): open the file read-only, read
  // the records and a long run of blocks (O_DIRECT, straight into its own aligned buffer, no
  // copy), and read the header again to see a version the server raised in place.
  TempDir dir;
  std::string path = dir.path + "/c";
  auto w = ChunkFile::create(path, 77, 3, 1024);
  std::vector<BlockData> keep;
  for (int i = 0; i < 300; i++) keep.push_back(makeBlock(static_cast<char>('A' + i % 50)));
  w.write(100, keep);  // a direct write (a run of 64 blocks or more)
  w.write(500, std::vector<BlockData>{makeBlock('z')});  // a buffered one, in the page cache

  auto r = ChunkFile::openReadOnly(path);
  EXPECT_EQ(r.id(), 77u);
  EXPECT_EQ(r.version(), 3u);
  std::vector<BlockMeta> meta;
  r.readMeta(90, 420, meta);  // 90..509
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, size_t(420) * BLOCK_BYTES), 0);
  std::unique_ptr<unsigned char, decltype(&free)> buf(static_cast<unsigned char*>(mem), &free);
  memset(buf.get(), 0xEE, size_t(420) * BLOCK_BYTES);
  std::vector<unsigned char*> into(420, nullptr);
  for (int i = 0; i < 420; i++) {
    int block = 90 + i;
    bool want = (block >= 100 && block < 400) || block == 500;
    ASSERT_EQ(meta[i].present, want) << block;
    if (want) into[i] = buf.get() + size_t(i) * BLOCK_BYTES;
  }
  r.readData(90, into);
  for (int i = 0; i < 420; i++) {
    int block = 90 + i;
    const unsigned char* got = buf.get() + size_t(i) * BLOCK_BYTES;
    if (!into[i]) {
      EXPECT_EQ(got[0], 0xEE) << "a hole was written into at block " << block;
      continue;
    }
    const BlockData& want = block == 500 ? makeBlock('z') : keep[block - 100];
    ASSERT_EQ(memcmp(got, want.data.data(), BLOCK_BYTES), 0) << block;
    EXPECT_EQ(memcmp(meta[i].aux, want.aux.data(), AUX_BYTES), 0) << block;
    EXPECT_EQ(meta[i].crc, want.crc) << block;
  }

  uint64_t id = 0, version = 0;
  ASSERT_TRUE(r.readHeader(id, version));
  EXPECT_EQ(version, 3u);
  w.setVersion(5);
  ASSERT_TRUE(r.readHeader(id, version));
  EXPECT_EQ(id, 77u);
  EXPECT_EQ(version, 5u);
  // It never writes: the descriptor is read-only.
  EXPECT_THROW(r.write(0, std::vector<BlockData>{makeBlock('q')}), kj::Exception);
}

TEST(ChunkFile, ReadOnlyOpenRefusesWhatIsNotAChunkFile) {
  // A path a chunk server names is opened with care: no symbolic link is followed, nothing but
  // a regular file with a chunk header is read (a FIFO would block a plain open for ever).
  TempDir dir;
  auto w = ChunkFile::create(dir.path + "/c", 1, 1, 64);
  ASSERT_EQ(symlink((dir.path + "/c").c_str(), (dir.path + "/link").c_str()), 0);
  EXPECT_THROW(ChunkFile::openReadOnly(dir.path + "/link"), kj::Exception);
  ASSERT_EQ(mkfifo((dir.path + "/fifo").c_str(), 0600), 0);
  EXPECT_THROW(ChunkFile::openReadOnly(dir.path + "/fifo"), kj::Exception);
  std::ofstream(dir.path + "/junk") << std::string(8192, 'x');
  EXPECT_THROW(ChunkFile::openReadOnly(dir.path + "/junk"), kj::Exception);
  EXPECT_THROW(ChunkFile::openReadOnly(dir.path + "/missing"), kj::Exception);
  EXPECT_THROW(ChunkFile::openReadOnly(dir.path), kj::Exception);  // a directory
  EXPECT_NO_THROW(ChunkFile::openReadOnly(dir.path + "/c"));
}

TEST(DirLock, OneServerPerDirectoryAndClientsSeeWhetherItRuns) {
  // A data directory's lock: a second store (another server) is refused it, a read-only
  // descriptor sees it held until the store goes, and it is free again then.
  TempDir dir;
  auto store = std::make_unique<ChunkStore>(std::vector<std::string>{dir.path}, 64, 0);
  EXPECT_THROW(ChunkStore(std::vector<std::string>{dir.path}, 64, 0), kj::Exception);
  int fd = ::open(DirLock::pathIn(dir.path).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(DirLock::held(fd));
  store.reset();
  EXPECT_FALSE(DirLock::held(fd));
  EXPECT_NO_THROW(ChunkStore(std::vector<std::string>{dir.path}, 64, 0));
  ::close(fd);
}

TEST(BlockCrc, EqualsZlibCrc32OfAuxThenData) {
  // Proves the vectorised CRC is the one stored in every chunk file so far (zlib's CRC-32 of
  // the aux bytes followed by the data), for every length up to a block and odd alignments.
  std::mt19937 rng(5);
  std::vector<unsigned char> buf(4096 + 64 + 7);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (size_t auxLen : {0, 1, 40, 64}) {
    for (size_t len : {0, 1, 3, 15, 16, 17, 255, 1000, 4096}) {
      for (size_t shift : {0, 1, 7}) {
        const unsigned char* aux = buf.data() + shift;
        const unsigned char* data = aux + auxLen;
        uLong z = crc32(0L, Z_NULL, 0);
        z = crc32(z, aux, static_cast<uInt>(auxLen));
        z = crc32(z, data, static_cast<uInt>(len));
        EXPECT_EQ(blockCrc(aux, auxLen, data, len), static_cast<uint32_t>(z))
            << auxLen << " " << len << " " << shift;
      }
    }
  }
}

TEST(ChunkStore, CountsUsedBytesAsWrittenWithoutLookingAtEveryFile) {
  // Proves the store's running count of bytes on disk: after writes, a truncation and a
  // removal (each noted) it equals what stat(2) says of the chunk files, and a store opened
  // again over the same directory counts the same.
  TempDir dir;
  auto onDisk = [&]() {
    uint64_t sum = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path + "/chunks")) {
      struct stat st;
      if (stat(e.path().c_str(), &st) == 0) sum += uint64_t(st.st_blocks) * 512;
    }
    return sum;
  };
  std::vector<BlockData> keep;
  for (int i = 0; i < 64; i++) keep.push_back(makeBlock(static_cast<char>('a' + i % 26)));
  std::vector<BlockView> views;
  for (auto& b : keep) views.push_back(BlockView{b.crc, b.aux.data(), b.data.data()});
  {
    ChunkStore store({dir.path}, 1024);
    EXPECT_EQ(store.usage().usedBytes, 0u);
    for (uint64_t id = 1; id <= 5; id++) {
      store.findOrCreate(id, 1).write(static_cast<uint32_t>(id * 10), views);
      store.noteSize(id);
    }
    EXPECT_GE(store.usage().usedBytes, 5u * 64 * BLOCK_BYTES);
    EXPECT_EQ(store.usage().usedBytes, onDisk());
    uint64_t before = store.usage().usedBytes;
    store.find(2)->truncate(20);
    store.noteSize(2);
    EXPECT_LT(store.usage().usedBytes, before);
    EXPECT_EQ(store.usage().usedBytes, onDisk());
    ASSERT_TRUE(store.remove(3));
    EXPECT_EQ(store.usage().usedBytes, onDisk());
    EXPECT_EQ(store.usage().chunks, 4u);
  }
  ChunkStore again({dir.path}, 1024);
  EXPECT_EQ(again.usage().usedBytes, onDisk());
  EXPECT_EQ(again.usage().chunks, 4u);
}

TEST(ChunkStore, NewChunksTakeSpareFilesAndRemovedOnesBecomeSpares) {
  // Proves the spare pool: a new chunk is a spare file renamed (the pool shrinks by one, the
  // chunk reads back, its old content never shows), a removed chunk's file goes back to the
  // pool emptied, a spare left with data by a crash is emptied before use, and a chunk whose
  // name exists already is refused as with O_EXCL.
  TempDir dir;
  std::filesystem::create_directories(dir.path + "/spare");
  {
    // A spare left holding a whole chunk (header, block table, data) by a crash.
    std::ofstream junk(dir.path + "/spare/00000000000000ff.spare", std::ios::binary);
    std::string bytes(4096 * 300, '\xff');  // every block record says present
    junk.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  auto countSpares = [&]() { return filesIn(dir.path + "/spare"); };
  // Bounded (30 s): the pool is made ahead on a thread of its own, slowly when the machine is
  // busy with other tests.
  auto waitReady = [](ChunkStore& store, size_t want) {
    for (int i = 0; i < 3000 && store.spares() < want; i++) usleep(10000);
    return store.spares();
  };
  auto a = makeBlock('a');
  {
    ChunkStore store({dir.path}, 1024);
    ASSERT_GE(waitReady(store, 256), 256u);
    size_t before = countSpares();
    EXPECT_EQ(before, store.spares());
    // Every spare in turn, the crashed one among them: no chunk shows anything but what it got.
    for (uint64_t id = 1; id <= 300; id++) {
      auto& f = store.findOrCreate(id, 7);
      EXPECT_EQ(f.version(), 7u);
      BlockData b;
      EXPECT_EQ(f.read(0, b), ReadStatus::ABSENT) << id;
      EXPECT_EQ(f.read(5, b), ReadStatus::ABSENT) << id;
      f.write(3, std::vector<BlockData>{a});
      f.sync();
    }
    EXPECT_LT(countSpares(), before);
    BlockData b;
    ASSERT_EQ(store.find(300)->read(3, b), ReadStatus::OK);
    EXPECT_EQ(b.data, a.data);
    // A removed chunk's file is recycled: the pool grows back, and its file is emptied.
    size_t ready = waitReady(store, 256);
    for (uint64_t id = 1; id <= 100; id++) ASSERT_TRUE(store.remove(id));
    EXPECT_FALSE(std::filesystem::exists(dir.path + "/chunks/0000000000000001.chk"));
    EXPECT_GE(waitReady(store, ready + 100), ready + 100);
    for (auto& e : std::filesystem::directory_iterator(dir.path + "/spare"))
      EXPECT_EQ(std::filesystem::file_size(e.path()), 0u) << e.path();
    // A chunk still held for I/O elsewhere when removed is unlinked, not recycled: a late
    // write through the held file must not land in a spare that becomes another chunk.
    size_t settled = waitReady(store, 256);
    size_t files = countSpares();
    {
      auto held = store.share(150);
      ASSERT_TRUE(held);
      ASSERT_TRUE(store.remove(150));
      held->write(9, std::vector<BlockData>{a});
    }
    EXPECT_EQ(countSpares(), files);
    EXPECT_EQ(store.spares(), settled);
    EXPECT_FALSE(std::filesystem::exists(dir.path + "/chunks/0000000000000096.chk"));
    // The name of a chunk that exists is never taken over by a spare.
    EXPECT_THROW(ChunkFile::adopt(dir.path + "/spare/" +
                                      std::filesystem::directory_iterator(dir.path + "/spare")
                                          ->path()
                                          .filename()
                                          .string(),
                                  dir.path + "/chunks/000000000000012c.chk", 300, 1, 1024),
                 kj::Exception);
    ASSERT_EQ(store.find(300)->read(3, b), ReadStatus::OK);
  }
  // Opened again: the chunks are there, the empty spare files left are counted again (one that
  // still held a recycled chunk's data is emptied first; the pool's thread may be adding more
  // meanwhile), and the pool fills up as before.
  size_t emptyOnDisk = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path + "/spare"))
    if (std::filesystem::file_size(e.path()) == 0) emptyOnDisk++;
  ChunkStore again({dir.path}, 1024);
  EXPECT_GE(again.spares(), emptyOnDisk);
  EXPECT_EQ(again.usage().chunks, 199u);
  BlockData b;
  ASSERT_EQ(again.find(151)->read(3, b), ReadStatus::OK);
  EXPECT_EQ(b.data, a.data);
  EXPECT_GE(waitReady(again, 256), 256u);
}

TEST(ChunkStore, RemovedChunksThePoolCannotKeepAreRenamedAwayAndUnlinkedOnItsThread) {
  // A pool that keeps at most 8 files is full of made-ahead spares, so every removed chunk is
  // discarded: its name is free at once (a new chunk of the same id starts empty), a file still
  // held for I/O keeps working through its descriptor, every discarded file is unlinked by the
  // pool's thread, and one left behind by a stop is unlinked at the next start.
  TempDir dir;
  auto a = makeBlock('a');
  auto countGone = [&]() { return filesIn(dir.path + "/gone"); };
  auto waitGone = [&](ChunkStore& store) {
    for (int i = 0; i < 500 && (store.discarding() > 0 || countGone() > 0); i++) usleep(10000);
  };
  {
    ChunkStore store({dir.path}, 1024, 8);
    for (uint64_t id = 1; id <= 40; id++) {
      auto& f = store.findOrCreate(id, 1);
      f.write(2, std::vector<BlockData>{a});
    }
    auto held = store.share(7);
    ASSERT_TRUE(held);
    for (uint64_t id = 1; id <= 40; id++) {
      ASSERT_TRUE(store.remove(id));
      char name[32];
      snprintf(name, sizeof(name), "/chunks/%016" PRIx64 ".chk", id);
      EXPECT_FALSE(std::filesystem::exists(dir.path + name)) << id;
    }
    EXPECT_EQ(store.usage().chunks, 0u);
    // The held file still takes writes and reads them back.
    held->write(9, std::vector<BlockData>{a});
    BlockData b;
    ASSERT_EQ(held->read(9, b), ReadStatus::OK);
    EXPECT_EQ(b.data, a.data);
    // The same id made again is a new, empty chunk.
    auto& again = store.findOrCreate(3, 2);
    EXPECT_EQ(again.read(2, b), ReadStatus::ABSENT);
    held.reset();
    waitGone(store);
    EXPECT_EQ(store.discarding(), 0u);
    EXPECT_EQ(countGone(), 0u);
  }
  // Left behind by a stop: unlinked when the store opens again.
  {
    std::ofstream junk(dir.path + "/gone/00000000000000aa.gone", std::ios::binary);
    junk << "old chunk";
  }
  ChunkStore reopened({dir.path}, 1024, 8);
  waitGone(reopened);
  EXPECT_EQ(countGone(), 0u);
  EXPECT_EQ(reopened.usage().chunks, 1u);  // chunk 3, made again above
}

}  // namespace
}  // namespace cairn::chunk
