#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace cairn::fs {

// Page-aligned buffers for reads (replies to the kernel, and scratch for ciphertext), mapped
// outside malloc and, up to 1 MiB each, kept for the next read (at most 32 kept, 32 MiB): taken
// from malloc, a page-aligned megabyte lands in a thread's arena and stays there (reads on 16
// threads grew the mount by 130 MiB); mapped afresh each time, it would cost 256 page faults a
// read. get() is nullptr when the memory could not be mapped.
class ReadBuffer {
 public:
  explicit ReadBuffer(size_t n) : bytes_(n <= KEPT ? KEPT : (n + 4095) / 4096 * 4096) {
    if (bytes_ == KEPT) {
      std::lock_guard<std::mutex> lock(mutex());
      auto& free = kept();
      if (!free.empty()) {
        p_ = free.back();
        free.pop_back();
        return;
      }
    }
    void* m = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p_ = m == MAP_FAILED ? nullptr : static_cast<unsigned char*>(m);
  }
  ~ReadBuffer() {
    if (!p_) return;
    if (bytes_ == KEPT) {
      std::lock_guard<std::mutex> lock(mutex());
      if (kept().size() < MAX_KEPT) {
        kept().push_back(p_);
        return;
      }
    }
    munmap(p_, bytes_);
  }
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  unsigned char* get() const { return p_; }

 private:
  static constexpr size_t KEPT = size_t(1) << 20, MAX_KEPT = 32;
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<unsigned char*>& kept() {
    static std::vector<unsigned char*> v;
    return v;
  }
  size_t bytes_;
  unsigned char* p_ = nullptr;
};

}  // namespace cairn::fs
