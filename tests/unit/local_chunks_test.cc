// fs/local_chunks: a chunk file is read here only when it is the named server's running copy
// on this host, at the reader's version, still named, and opened without following links.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "chunk/chunk_file.h"
#include "chunk/store.h"
#include "fs/local_chunks.h"

namespace cairn::fs {
namespace {

constexpr uint64_t ID = 0x1234, VERSION = 7;
const std::string ADDR = "127.0.0.1:9";

struct Server {
  std::string dir;
  std::unique_ptr<chunk::ChunkStore> store;  // holds the directory's lock, as a server does
  std::string path;
  Server() {
    char tmpl[] = "/tmp/cairn-local-chunks-test.XXXXXX";
    dir = mkdtemp(tmpl);
    store = std::make_unique<chunk::ChunkStore>(std::vector<std::string>{dir}, 64, 0);
    store->findOrCreate(ID, VERSION);
    path = store->pathFor(ID);
  }
  ~Server() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  // What the server's locate answers.
  LocalChunks::Located located() const {
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return {path, chunk::hostBootId(), uint64_t(st.st_dev), uint64_t(st.st_ino)};
  }
};

TEST(LocalChunks, OpensTheServersRunningCopyAtTheReadersVersionOnly) {
  Server s;
  ASSERT_FALSE(s.path.empty());
  int asked = 0;
  auto locate = [&](const std::string&) {
    asked++;
    return s.located();
  };
  LocalChunks local;
  auto f = local.open(ADDR, ID, VERSION, locate);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->id(), ID);
  EXPECT_EQ(local.open(ADDR, ID, VERSION, locate), f);  // kept: no second locate
  EXPECT_EQ(asked, 1);
  // Another version: the servers answer for it.
  EXPECT_EQ(local.open(ADDR, ID, VERSION - 1, locate), nullptr);
  // The server raises its version in place: a reader at the old one no longer reads the file.
  s.store->find(ID)->setVersion(VERSION + 1);
  EXPECT_EQ(local.open(ADDR, ID, VERSION, locate), nullptr);
  EXPECT_NE(local.open(ADDR, ID, VERSION + 1, locate), nullptr);
}

TEST(LocalChunks, ACopyWhoseServerStoppedOrWhoseFileWasRemovedIsNotRead) {
  auto s = std::make_unique<Server>();
  auto locate = [&](const std::string&) { return s->located(); };
  {
    LocalChunks local;
    ASSERT_NE(local.open(ADDR, ID, VERSION, locate), nullptr);
    ASSERT_EQ(::unlink(s->path.c_str()), 0);  // removed: the kept descriptor still reads it
    EXPECT_EQ(local.open(ADDR, ID, VERSION, [](const std::string&) {
      return LocalChunks::Located{};  // and the server has no copy any more
    }), nullptr);
  }
  s = std::make_unique<Server>();
  LocalChunks local;
  ASSERT_NE(local.open(ADDR, ID, VERSION, locate), nullptr);
  auto answer = s->located();
  s->store.reset();  // the server stops: its lock goes with it
  EXPECT_EQ(local.open(ADDR, ID, VERSION, [&](const std::string&) { return answer; }), nullptr);
}

TEST(LocalChunks, AFileThatIsNotTheNamedServersIsRefusedAndTheServerReadThrough) {
  Server s;
  // Another host's boot id: that server is read through (and not asked again for a while).
  {
    LocalChunks local;
    auto other = s.located();
    other.bootId = "00000000-0000-0000-0000-000000000000";
    EXPECT_EQ(local.open(ADDR, ID, VERSION, [&](const std::string&) { return other; }), nullptr);
    EXPECT_FALSE(local.mayBeLocal(ADDR));
  }
  // The same path on this host, but not the file the server has (device or inode differ).
  {
    LocalChunks local;
    auto other = s.located();
    other.inode += 1;
    EXPECT_EQ(local.open(ADDR, ID, VERSION, [&](const std::string&) { return other; }), nullptr);
  }
  // A path that is not DIR/chunks/<id>.chk, or a file of another chunk under the right name.
  {
    LocalChunks local;
    auto other = s.located();
    other.path = s.dir + "/lock";
    EXPECT_EQ(local.open(ADDR, ID, VERSION, [&](const std::string&) { return other; }), nullptr);
  }
  {
    LocalChunks local;
    auto other = s.located();
    EXPECT_EQ(local.open(ADDR, ID + 1, VERSION, [&](const std::string&) { return other; }),
              nullptr);
  }
  // A symbolic link anywhere on the way is not followed.
  {
    std::string link = s.dir + "-link";
    ASSERT_EQ(::symlink(s.dir.c_str(), link.c_str()), 0);
    LocalChunks local;
    auto other = s.located();
    char name[40];
    snprintf(name, sizeof(name), "/chunks/%016" PRIx64 ".chk", ID);
    other.path = link + name;
    EXPECT_EQ(local.open(ADDR, ID, VERSION, [&](const std::string&) { return other; }), nullptr);
    ::unlink(link.c_str());
  }
  // And the right answer opens it.
  LocalChunks local;
  EXPECT_NE(local.open(ADDR, ID, VERSION, [&](const std::string&) { return s.located(); }),
            nullptr);
}

TEST(LocalChunks, AChunkTheServerHasNoCopyOfIsNotAskedAgainAtOnce) {
  Server s;
  int asked = 0;
  LocalChunks local;
  auto none = [&](const std::string&) {
    asked++;
    return LocalChunks::Located{};
  };
  EXPECT_EQ(local.open(ADDR, ID + 5, VERSION, none), nullptr);
  EXPECT_EQ(local.open(ADDR, ID + 5, VERSION, none), nullptr);
  EXPECT_EQ(asked, 1);
}

}  // namespace
}  // namespace cairn::fs
