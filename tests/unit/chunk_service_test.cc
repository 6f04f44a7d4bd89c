// chunk/service: writes of blocks scattered over a chunk (writeAt) land where their indexes say,
// and a malformed one (indexes out of order or range, one too few, a block damaged in transit)
// is refused whole, with nothing written.
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <filesystem>
#include <string>
#include <vector>

#include "chunk/chunk_file.h"
#include "chunk/service.h"
#include "chunk/store.h"

namespace cairn::chunk {
namespace {

constexpr uint32_t MAX_BLOCKS = 64;
constexpr uint64_t ID = 42, VERSION = 1;

struct Fixture {
  std::string dir;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  ClusterSecret secret = ClusterSecret::fromBytes("a secret of this test, long enough");
  Metrics metrics;
  std::unique_ptr<ChunkStore> store;
  proto::Chunk::Client client{nullptr};

  Fixture() {
    char tmpl[] = "/tmp/cairn-chunk-service-test.XXXXXX";
    dir = mkdtemp(tmpl);
    store = std::make_unique<ChunkStore>(std::vector<std::string>{dir}, MAX_BLOCKS);
    client = kj::heap<ChunkServiceImpl>(io, secret, *store, metrics);
  }
  ~Fixture() {
    client = nullptr;
    store.reset();  // its spare pool's thread stops making files in dir
    std::filesystem::remove_all(dir);
  }

  static void fill(proto::Block::Builder b, char c) {
    b.setPresent(true);
    auto aux = b.initAux(AUX_BYTES);
    memset(aux.begin(), c + 1, aux.size());
    auto data = b.initData(BLOCK_BYTES);
    memset(data.begin(), c, data.size());
    b.setCrc(blockCrc(aux.begin(), aux.size(), data.begin(), data.size()));
  }

  // Sends writeAt of one block per index, block i filled with fills[i]; its errno, or -1 when
  // the server refused the call.
  int writeAt(const std::vector<uint32_t>& at, const std::string& fills, bool damage = false) {
    auto req = client.writeAtRequest();
    req.getChunk().setId(ID);
    req.getChunk().setVersion(VERSION);
    auto blocks = req.initBlocks(fills.size());
    for (size_t i = 0; i < fills.size(); i++) fill(blocks[i], fills[i]);
    if (damage) blocks[fills.size() - 1].getData()[7] ^= 1;
    auto list = req.initAt(at.size());
    for (size_t i = 0; i < at.size(); i++) list.set(i, at[i]);
    try {
      return req.send().wait(io.waitScope).getErr();
    } catch (kj::Exception&) {
      return -1;
    }
  }

  // What each block of the chunk holds: its fill, or '-' for none.
  std::string contents() {
    auto req = client.readRequest();
    req.getChunk().setId(ID);
    req.getChunk().setVersion(VERSION);
    req.setFirstBlock(0);
    req.setCount(MAX_BLOCKS);
    auto resp = req.send().wait(io.waitScope);
    if (resp.getErr() == ENOENT) return std::string(MAX_BLOCKS, '-');
    EXPECT_EQ(resp.getErr(), 0);
    std::string out;
    for (auto b : resp.getBlocks()) {
      if (!b.getPresent()) {
        out += '-';
        continue;
      }
      auto data = b.getData();
      EXPECT_EQ(data.size(), BLOCK_BYTES);
      char c = char(data[0]);
      for (auto byte : data) EXPECT_EQ(char(byte), c);
      out += c;
    }
    return out;
  }
};

std::string expect(std::initializer_list<std::pair<uint32_t, char>> at) {
  std::string s(MAX_BLOCKS, '-');
  for (auto [b, c] : at) s[b] = c;
  return s;
}

TEST(ChunkService, WriteAtPutsEachBlockAtItsIndex) {
  Fixture f;
  ASSERT_EQ(f.writeAt({3, 4, 9, 63}, "abcd"), 0);
  EXPECT_EQ(f.contents(), expect({{3, 'a'}, {4, 'b'}, {9, 'c'}, {63, 'd'}}));
  // Over some of them and between them.
  ASSERT_EQ(f.writeAt({0, 4, 5, 6}, "wxyz"), 0);
  EXPECT_EQ(f.contents(),
            expect({{0, 'w'}, {3, 'a'}, {4, 'x'}, {5, 'y'}, {6, 'z'}, {9, 'c'}, {63, 'd'}}));
}

TEST(ChunkService, WriteAtRefusesMalformedCallsWhole) {
  Fixture f;
  ASSERT_EQ(f.writeAt({1}, "a"), 0);
  std::string before = f.contents();
  EXPECT_EQ(f.writeAt({5, 2}, "bc"), -1) << "indexes out of order";
  EXPECT_EQ(f.writeAt({5, 5}, "bc"), -1) << "an index twice";
  EXPECT_EQ(f.writeAt({5, MAX_BLOCKS}, "bc"), -1) << "past the chunk's end";
  EXPECT_EQ(f.writeAt({5}, "bc"), -1) << "fewer indexes than blocks";
  EXPECT_EQ(f.writeAt({5, 6, 7}, "bc"), -1) << "more indexes than blocks";
  EXPECT_EQ(f.writeAt({5, 6}, "bc", true), -1) << "a block damaged in transit";
  EXPECT_EQ(f.contents(), before);
  // The server goes on serving.
  ASSERT_EQ(f.writeAt({5, 6}, "bc"), 0);
  EXPECT_EQ(f.contents(), expect({{1, 'a'}, {5, 'b'}, {6, 'c'}}));
}

}  // namespace
}  // namespace cairn::chunk
