// Tests of rpc/prefault: mapping a buffer's pages ahead of a read keeps what is in it, whatever
// its alignment, and maps every page of fresh memory (so the kernel's copy faults none).
#include "rpc/prefault.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

TEST(Prefault, MapsEveryPageOfFreshMemoryAndKeepsContents) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), len = 64 * page;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto* p = static_cast<unsigned char*>(m);
  p[5 * page + 7] = 42;  // one page mapped and written before
  std::vector<unsigned char> resident(len / page);
  ASSERT_EQ(mincore(m, len, resident.data()), 0);
  size_t before = 0;
  for (auto r : resident) before += r & 1;
  EXPECT_EQ(before, 1u);
  cairn::prefaultForWrite(p + 3, len - 3 - 100);  // unaligned at both ends
  ASSERT_EQ(mincore(m, len, resident.data()), 0);
  for (size_t i = 0; i < resident.size(); i++) EXPECT_TRUE(resident[i] & 1) << "page " << i;
  EXPECT_EQ(p[5 * page + 7], 42);
  for (size_t i = 0; i < len; i++) {
    if (i == 5 * page + 7) continue;
    ASSERT_EQ(p[i], 0) << i;
  }
  cairn::prefaultForWrite(p, 0);  // nothing
  munmap(m, len);
}
