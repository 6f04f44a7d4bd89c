// Maps the pages of a buffer about to be filled by the kernel (a read from a file or a socket)
// before the read. Fresh memory (a large capnp segment comes from calloc, which maps it and
// leaves it untouched) would otherwise be faulted in one page at a time inside the kernel's
// copy, which here costs four times the copy itself: a chunk server reading 1 GiB from a cold
// file into fresh buffers used 1.06 s of CPU, 0.17 s with the pages mapped first.
#pragma once

#include <cstddef>

namespace cairn {

// For [begin, begin + len): MADV_POPULATE_WRITE where the kernel has it, else a write to each
// page (of the byte already there, so contents are kept).
void prefaultForWrite(void* begin, size_t len);

}  // namespace cairn
