#include "rpc/prefault.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace cairn {

void prefaultForWrite(void* begin, size_t len) {
  if (len == 0) return;
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t from = reinterpret_cast<uintptr_t>(begin) & ~(page - 1);
  uintptr_t to = (reinterpret_cast<uintptr_t>(begin) + len + page - 1) & ~(page - 1);
  if (madvise(reinterpret_cast<void*>(from), to - from, MADV_POPULATE_WRITE) == 0) return;
  // Older kernels: touch each page ourselves (a user-space fault is much cheaper).
  auto* p = static_cast<volatile unsigned char*>(begin);
  auto* end = p + len;
  for (; p < end; p += page - (reinterpret_cast<uintptr_t>(p) & (page - 1))) *p = *p;
}

}  // namespace cairn
