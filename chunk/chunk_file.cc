#include "chunk/chunk_file.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <unistd.h>
#include <isa-l/crc.h>
#include <zlib.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace cairn::chunk {
namespace {

constexpr char MAGIC[8] = {'C', 'A', 'I', 'R', 'N', 'C', 'K', '1'};

struct Header {
  char magic[8];
  uint32_t format;
  uint32_t blockBytes;
  uint32_t maxBlocks;
  uint32_t reserved;
  uint64_t id;
  uint64_t version;
  uint32_t crc;  // of the bytes above
};
static_assert(sizeof(Header) <= HEADER_BYTES);

struct Record {
  uint32_t crc;
  uint32_t flags;
  unsigned char aux[AUX_BYTES];
  unsigned char pad[RECORD_BYTES - 8 - AUX_BYTES];
};
static_assert(sizeof(Record) == RECORD_BYTES);

void preadAll(int fd, void* buf, size_t n, uint64_t off) {
  auto p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r;
    KJ_SYSCALL(r = ::pread(fd, p, n, off));
    if (r == 0) {  // beyond the end: a hole at the tail
      memset(p, 0, n);
      return;
    }
    p += r;
    n -= r;
    off += r;
  }
}

void pwriteAll(int fd, const void* buf, size_t n, uint64_t off) {
  auto p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t r;
    KJ_SYSCALL(r = ::pwrite(fd, p, n, off));
    p += r;
    n -= r;
    off += r;
  }
}

}  // namespace

uint32_t blockCrc(const void* aux, size_t auxLen, const void* data, size_t dataLen) {
  // The CRC-32 of zlib and gzip (reflected IEEE), computed by ISA-L with the machine's vector
  // instructions: the same values as zlib's crc32(), several times faster.
  uint32_t c = crc32_gzip_refl(0, static_cast<const unsigned char*>(aux), auxLen);
  return crc32_gzip_refl(c, static_cast<const unsigned char*>(data), dataLen);
}

std::string hostBootId() {
  char buf[64] = {0};
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  std::string id(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

int openRegularReadOnly(const std::string& path) {
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof(how)));
  if (fd < 0 && errno == ENOSYS) fd = ::open(path.c_str(), how.flags);  // before Linux 5.6
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

DirLock::DirLock(const std::string& dir) {
  std::string path = pathIn(dir);
  KJ_SYSCALL(fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600), path);
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd_, F_OFD_SETLK, &fl) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EAGAIN || err == EACCES)
      KJ_FAIL_REQUIRE("the data directory is in use by another cairn-chunk process", dir);
    KJ_FAIL_SYSCALL("fcntl(F_OFD_SETLK)", err, path);
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);
}

bool DirLock::held(int fd) {
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
  return fl.l_type != F_UNLCK;
}

uint32_t blockCrc(const std::string& aux, const std::string& data) {
  return blockCrc(aux.data(), aux.size(), data.data(), data.size());
}

ChunkFile::ChunkFile(ChunkFile&& o) noexcept { *this = std::move(o); }

ChunkFile& ChunkFile::operator=(ChunkFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    if (direct_ >= 0) ::close(direct_);
    fd_ = o.fd_;
    o.fd_ = -1;
    direct_ = o.direct_.exchange(DIRECT_UNOPENED);
    directRefused_ = o.directRefused_.load();
    path_ = std::move(o.path_);
    id_ = o.id_;
    version_ = o.version_;
    maxBlocks_ = o.maxBlocks_;
    syncDir_ = o.syncDir_.load();
    readOnly_ = o.readOnly_;
  }
  return *this;
}

ChunkFile::~ChunkFile() {
  if (fd_ >= 0) ::close(fd_);
  if (direct_ >= 0) ::close(direct_);
}

uint64_t ChunkFile::dataOffset() const {
  uint64_t table = static_cast<uint64_t>(maxBlocks_) * RECORD_BYTES;
  return HEADER_BYTES + (table + 4095) / 4096 * 4096;
}

namespace {
// The header at the start of `fd`; a message (and no header) when it is not a chunk header.
const char* loadHeader(int fd, Header& h) {
  preadAll(fd, &h, sizeof(h), 0);
  if (memcmp(h.magic, MAGIC, 8) != 0) return "not a chunk file";
  uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(&h), offsetof(Header, crc)));
  if (crc != h.crc) return "chunk header checksum mismatch";
  if (h.format != FORMAT_VERSION || h.blockBytes != BLOCK_BYTES) return "unsupported chunk format";
  return nullptr;
}
}  // namespace

ChunkFile ChunkFile::fromHeader(std::string path, int fd, bool readOnly) {
  ChunkFile file;
  file.fd_ = fd;
  file.readOnly_ = readOnly;
  Header h;
  if (const char* bad = loadHeader(fd, h)) KJ_FAIL_REQUIRE(bad, path);
  file.path_ = std::move(path);
  file.id_ = h.id;
  file.version_ = h.version;
  file.maxBlocks_ = h.maxBlocks;
  return file;
}

ChunkFile ChunkFile::open(const std::string& path) {
  int fd;
  KJ_SYSCALL(fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC), path);
  return fromHeader(path, fd, false);
}

ChunkFile ChunkFile::openReadOnly(const std::string& path) {
  int fd;
  KJ_SYSCALL(fd = openRegularReadOnly(path), path);
  return fromHeader(path, fd, true);
}

bool ChunkFile::linked() const {
  struct stat st;
  return fstat(fd_, &st) == 0 && st.st_nlink > 0;
}

std::pair<uint64_t, uint64_t> ChunkFile::identity() const {
  struct stat st;
  KJ_SYSCALL(fstat(fd_, &st), path_);
  return {st.st_dev, st.st_ino};
}

bool ChunkFile::readHeader(uint64_t& id, uint64_t& version) const {
  Header h;
  if (loadHeader(fd_, h) != nullptr) return false;
  id = h.id;
  version = h.version;
  return true;
}

ChunkFile ChunkFile::create(const std::string& path, uint64_t id, uint64_t version,
                            uint32_t maxBlocks) {
  ChunkFile f;
  f.path_ = path;
  KJ_SYSCALL(f.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), path);
  f.id_ = id;
  f.version_ = version;
  f.maxBlocks_ = maxBlocks;
  f.writeHeader();
  return f;
}

ChunkFile ChunkFile::adopt(const std::string& spare, const std::string& path, uint64_t id,
                           uint64_t version, uint32_t maxBlocks) {
  ChunkFile f;
  f.path_ = path;
  KJ_SYSCALL(f.fd_ = ::open(spare.c_str(), O_RDWR | O_CLOEXEC), spare);
  struct stat st;
  KJ_SYSCALL(fstat(f.fd_, &st), spare);
  if (st.st_size != 0) {
    KJ_SYSCALL(ftruncate(f.fd_, 0), spare);
  }
  f.id_ = id;
  f.version_ = version;
  f.maxBlocks_ = maxBlocks;
  f.writeHeader();  // before the rename: a chunk file never lacks its header
  KJ_SYSCALL(renameat2(AT_FDCWD, spare.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE), spare,
             path);
  f.syncDir_ = true;
  return f;
}

void ChunkFile::writeHeader() {
  Header h;
  memset(&h, 0, sizeof(h));
  memcpy(h.magic, MAGIC, 8);
  h.format = FORMAT_VERSION;
  h.blockBytes = BLOCK_BYTES;
  h.maxBlocks = maxBlocks_;
  h.id = id_;
  h.version = version_;
  h.crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(&h), offsetof(Header, crc)));
  pwriteAll(fd_, &h, sizeof(h), 0);
}

void ChunkFile::setVersion(uint64_t version) {
  KJ_REQUIRE(version >= version_, "chunk versions only grow", id_, version_, version);
  version_ = version;
  writeHeader();
}

void ChunkFile::write(uint32_t firstBlock, const std::vector<BlockData>& blocks) {
  std::vector<BlockView> views;
  views.reserve(blocks.size());
  for (auto& b : blocks) {
    KJ_REQUIRE(b.present && b.aux.size() == AUX_BYTES && b.data.size() == BLOCK_BYTES,
               "malformed block");
    views.push_back(BlockView{b.crc, b.aux.data(), b.data.data()});
  }
  write(firstBlock, views);
}

void ChunkFile::write(uint32_t firstBlock, const std::vector<BlockView>& blocks) {
  KJ_REQUIRE(static_cast<uint64_t>(firstBlock) + blocks.size() <= maxBlocks_,
             "write beyond the end of the chunk");
  if (blocks.empty()) return;
  // Data first (direct, or gathered writes for the run), then the records.
  uint64_t off = dataOffset() + uint64_t(firstBlock) * BLOCK_BYTES;
  if (!writesDirect(static_cast<uint32_t>(blocks.size())) ||
      !writeDirect(blocks.data(), blocks.size(), off)) {
    writeBuffered(blocks, off);
  }
  std::vector<Record> records(blocks.size());
  for (size_t i = 0; i < blocks.size(); i++) {
    auto& r = records[i];
    memset(&r, 0, sizeof(r));
    r.crc = blocks[i].crc;
    r.flags = FLAG_PRESENT;
    memcpy(r.aux, blocks[i].aux, AUX_BYTES);
  }
  pwriteAll(fd_, records.data(), records.size() * RECORD_BYTES,
            HEADER_BYTES + uint64_t(firstBlock) * RECORD_BYTES);
}

void ChunkFile::writeBuffered(const std::vector<BlockView>& blocks, uint64_t off) {
  std::vector<iovec> iov(blocks.size());
  for (size_t i = 0; i < blocks.size(); i++) iov[i] = iovec{const_cast<void*>(blocks[i].data), BLOCK_BYTES};
  for (size_t i = 0; i < iov.size();) {
    int n = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t w;
    KJ_SYSCALL(w = ::pwritev(fd_, iov.data() + i, n, static_cast<off_t>(off)), path_);
    // A short write: finish the first unfinished block alone, then go on gathered.
    size_t whole = static_cast<size_t>(w) / BLOCK_BYTES;
    size_t rest = static_cast<size_t>(w) % BLOCK_BYTES;
    off += whole * BLOCK_BYTES;
    i += whole;
    if (rest != 0) {
      pwriteAll(fd_, static_cast<const char*>(iov[i].iov_base) + rest, BLOCK_BYTES - rest, off + rest);
      off += BLOCK_BYTES;
      i++;
    }
  }
}

namespace {
constexpr size_t DIRECT_RUN = 256;  // blocks per O_DIRECT call: 1 MiB
// One aligned buffer per thread, kept (its pages stay the process's own): a request's or
// reply's blocks lie in its message at no particular alignment. nullptr if out of memory.
unsigned char* directBuffer() {
  struct Free {
    void operator()(void* p) const { free(p); }
  };
  thread_local std::unique_ptr<unsigned char, Free> buffer;
  if (!buffer) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, DIRECT_RUN * BLOCK_BYTES) != 0) return nullptr;
    buffer.reset(static_cast<unsigned char*>(p));
  }
  return buffer.get();
}
}  // namespace

int ChunkFile::directFd() const {
  if (directRefused_) return -1;
  int dfd = direct_.load();
  if (dfd != DIRECT_UNOPENED) return dfd >= 0 ? dfd : -1;
  // The inode of the open descriptor, even if its name has gone since.
  std::string self = "/proc/self/fd/" + std::to_string(fd_);
  int mode = readOnly_ ? O_RDONLY : O_RDWR;
  int opened = ::open(self.c_str(), mode | O_DIRECT | O_CLOEXEC);
  if (opened < 0 && !readOnly_) opened = ::open(path_.c_str(), mode | O_DIRECT | O_CLOEXEC);
  int err = errno;
  int want = opened >= 0 ? opened : DIRECT_OFF;
  if (direct_.compare_exchange_strong(dfd, want)) {
    if (opened < 0) refuseDirect(strerror(err));
    return opened;
  }
  if (opened >= 0) ::close(opened);  // another thread opened it first
  return dfd >= 0 ? dfd : -1;
}

namespace {
// One transfer of whole blocks through the O_DIRECT descriptor `dfd`; a shortfall by a part of
// a block (or the end of the file, reading) is finished through `fd`, buffered (the kernel
// keeps the two coherent). False: the filesystem refused O_DIRECT before anything moved.
bool transferDirect(bool write, int dfd, int fd, unsigned char* buf, size_t len, uint64_t off,
                    const std::string& path) {
  size_t done = 0;
  while (done < len) {
    auto at = static_cast<off_t>(off + done);
    ssize_t r = write ? ::pwrite(dfd, buf + done, len - done, at) : ::pread(dfd, buf + done, len - done, at);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EINVAL && done == 0) return false;
    if (r < 0) KJ_FAIL_SYSCALL(write ? "pwrite (O_DIRECT)" : "pread (O_DIRECT)", errno, path);
    done += static_cast<size_t>(r);
    if (r == 0 || r % BLOCK_BYTES != 0) {
      if (write) {
        pwriteAll(fd, buf + done, len - done, off + done);
      } else {
        preadAll(fd, buf + done, len - done, off + done);
      }
      break;
    }
  }
  return true;
}
}  // namespace

void ChunkFile::refuseDirect(const char* why) const {
  directRefused_ = true;
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true))
    spdlog::warn("{}: O_DIRECT refused ({}); chunk files there are written and read through the "
                 "page cache", path_, why);
}

bool ChunkFile::writeDirect(const BlockView* blocks, size_t n, uint64_t off) {
  int dfd = directFd();
  unsigned char* buf = dfd >= 0 ? directBuffer() : nullptr;
  if (!buf) return false;
  for (size_t i = 0; i < n;) {
    size_t take = std::min(n - i, DIRECT_RUN);
    for (size_t k = 0; k < take; k++) memcpy(buf + k * BLOCK_BYTES, blocks[i + k].data, BLOCK_BYTES);
    if (!transferDirect(true, dfd, fd_, buf, take * BLOCK_BYTES, off, path_)) {
      refuseDirect("EINVAL on a write");  // the caller writes the whole run buffered
      return false;
    }
    off += take * BLOCK_BYTES;
    i += take;
  }
  return true;
}

bool ChunkFile::readDirect(unsigned char* const* out, size_t n, uint64_t off) const {
  int dfd = directFd();
  if (dfd < 0) return false;
  // Blocks that go to one aligned run of memory (a client's buffer) are read straight into it.
  bool straight = reinterpret_cast<uintptr_t>(out[0]) % 4096 == 0;
  for (size_t k = 1; k < n && straight; k++) straight = out[k] == out[0] + k * BLOCK_BYTES;
  if (straight) {
    if (transferDirect(false, dfd, fd_, out[0], n * BLOCK_BYTES, off, path_)) return true;
    refuseDirect("EINVAL on a read");
    return false;
  }
  unsigned char* buf = directBuffer();
  if (!buf) return false;
  for (size_t i = 0; i < n;) {
    size_t take = std::min(n - i, DIRECT_RUN);
    if (!transferDirect(false, dfd, fd_, buf, take * BLOCK_BYTES, off, path_)) {
      refuseDirect("EINVAL on a read");
      return false;
    }
    for (size_t k = 0; k < take; k++) memcpy(out[i + k], buf + k * BLOCK_BYTES, BLOCK_BYTES);
    off += take * BLOCK_BYTES;
    i += take;
  }
  return true;
}

void ChunkFile::startWriteback(uint32_t firstBlock, uint32_t count) const {
  uint64_t start = dataOffset() + uint64_t(firstBlock) * BLOCK_BYTES;
  ::sync_file_range(fd_, static_cast<off_t>(start), static_cast<off_t>(uint64_t(count) * BLOCK_BYTES),
                    SYNC_FILE_RANGE_WRITE);
}

void ChunkFile::readMeta(uint32_t first, uint32_t count, std::vector<BlockMeta>& out) const {
  KJ_REQUIRE(uint64_t(first) + count <= maxBlocks_, "read beyond the end of the chunk");
  std::vector<Record> records(count);
  preadAll(fd_, records.data(), size_t(count) * RECORD_BYTES, HEADER_BYTES + uint64_t(first) * RECORD_BYTES);
  out.resize(count);
  for (uint32_t i = 0; i < count; i++) {
    out[i].present = (records[i].flags & FLAG_PRESENT) != 0;
    out[i].crc = records[i].crc;
    memcpy(out[i].aux, records[i].aux, AUX_BYTES);
  }
}

void ChunkFile::readData(uint32_t first, const std::vector<unsigned char*>& out) const {
  KJ_REQUIRE(uint64_t(first) + out.size() <= maxBlocks_, "read beyond the end of the chunk");
  std::vector<iovec> iov;
  for (size_t i = 0; i < out.size();) {
    if (out[i] == nullptr) {
      i++;
      continue;
    }
    size_t start = i;
    size_t end = i;
    while (end < out.size() && out[end] != nullptr) end++;
    uint64_t off = dataOffset() + uint64_t(first + start) * BLOCK_BYTES;
    if (end - start >= DIRECT_READ_BLOCKS && readDirect(out.data() + start, end - start, off)) {
      i = end;
      continue;
    }
    iov.clear();
    while (i < out.size() && out[i] != nullptr && iov.size() < IOV_MAX) iov.push_back(iovec{out[i++], BLOCK_BYTES});
    ssize_t r;
    KJ_SYSCALL(r = ::preadv(fd_, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(off)), path_);
    size_t done = static_cast<size_t>(r);
    if (done < iov.size() * BLOCK_BYTES) {
      // Short (the end of the file, or a signal): the rest one block at a time.
      for (size_t k = done / BLOCK_BYTES; k < iov.size(); k++) {
        size_t skip = k == done / BLOCK_BYTES ? done % BLOCK_BYTES : 0;
        preadAll(fd_, static_cast<char*>(iov[k].iov_base) + skip, BLOCK_BYTES - skip,
                 off + k * BLOCK_BYTES + skip);
      }
    }
  }
}

ReadStatus ChunkFile::read(uint32_t block, BlockData& out) const {
  KJ_REQUIRE(block < maxBlocks_, "read beyond the end of the chunk");
  Record r;
  preadAll(fd_, &r, sizeof(r), HEADER_BYTES + uint64_t(block) * RECORD_BYTES);
  if (!(r.flags & FLAG_PRESENT)) {
    out.present = false;
    return ReadStatus::ABSENT;
  }
  out.present = true;
  out.aux.assign(reinterpret_cast<const char*>(r.aux), AUX_BYTES);
  out.data.resize(BLOCK_BYTES);
  preadAll(fd_, out.data.data(), BLOCK_BYTES, dataOffset() + uint64_t(block) * BLOCK_BYTES);
  out.crc = r.crc;
  if (blockCrc(out.aux, out.data) != r.crc) return ReadStatus::CORRUPT;
  return ReadStatus::OK;
}

void ChunkFile::truncate(uint32_t keep) {
  if (keep >= maxBlocks_) return;
  uint64_t from = HEADER_BYTES + uint64_t(keep) * RECORD_BYTES;
  uint64_t to = HEADER_BYTES + uint64_t(maxBlocks_) * RECORD_BYTES;
  std::string zeros(to - from, '\0');
  pwriteAll(fd_, zeros.data(), zeros.size(), from);
  uint64_t dataFrom = dataOffset() + uint64_t(keep) * BLOCK_BYTES;
  struct stat st;
  KJ_SYSCALL(fstat(fd_, &st));
  if (static_cast<uint64_t>(st.st_size) > dataFrom) {
    KJ_SYSCALL(ftruncate(fd_, dataFrom));
  }
}

void ChunkFile::sync() {
  KJ_SYSCALL(fdatasync(fd_), path_);
  if (syncDir_.exchange(false)) {
    auto dir = path_.substr(0, path_.rfind('/'));
    int dfd;
    KJ_SYSCALL(dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), dir);
    int rc = fsync(dfd);
    int err = errno;
    ::close(dfd);
    if (rc != 0) {
      syncDir_ = true;
      KJ_FAIL_SYSCALL("fsync", err, dir);
    }
  }
}

uint32_t ChunkFile::blockLimit() const {
  struct stat st;
  KJ_SYSCALL(fstat(fd_, &st));
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size <= dataOffset()) return 0;
  uint64_t blocks = (size - dataOffset() + BLOCK_BYTES - 1) / BLOCK_BYTES;
  return static_cast<uint32_t>(std::min<uint64_t>(blocks, maxBlocks_));
}

uint64_t ChunkFile::allocatedBytes() const {
  struct stat st;
  KJ_SYSCALL(fstat(fd_, &st));
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace cairn::chunk
