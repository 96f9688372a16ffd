// Output writers of the CPU kernels: ordinary stores, or non-temporal (streaming) stores for
// outputs too large to stay in cache.
//
// An ordinary store first reads the cache line it writes into (read for ownership), so
// writing a buffer that does not fit in cache moves every byte twice. Streaming stores skip
// that read and do not evict the inputs the kernel is still reading. They only pay when the
// output would be evicted before anyone reads it anyway, hence the size threshold: the
// smoothers' reused batch buffers are small and read right away by the base model, and keep
// ordinary stores.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastsmooth {

// Outputs at least this large are written with streaming stores (larger than the last-level
// cache slice a core sees on current server CPUs).
constexpr int64_t kStreamingStoreBytes = int64_t(32) << 20;

// Collects consecutive output bytes in a small cache-resident staging buffer and copies each
// full buffer to its destination with streaming stores. Use one per thread, in one
// contiguous destination range at a time; `finish()` (also run by the destructor) flushes
// and fences, so the data is visible to other threads once the parallel region ends.
class StreamingWriter {
 public:
  explicit StreamingWriter(size_t capacity_bytes) : stage_(capacity_bytes) {}
  StreamingWriter(const StreamingWriter&) = delete;
  StreamingWriter& operator=(const StreamingWriter&) = delete;
  ~StreamingWriter() { finish(); }

  // Space for the next `bytes` bytes that go to `dst` (contiguous with what was staged before,
  // or the start of a new range). The caller fills the returned pointer.
  void* reserve(void* dst, size_t bytes) {
    char* d = static_cast<char*>(dst);
    if (d != dst_ + used_ || used_ + bytes > stage_.size()) {
      flush();
      dst_ = d;
      if (bytes > stage_.size()) stage_.resize(bytes);
    }
    void* p = stage_.data() + used_;
    used_ += bytes;
    return p;
  }

  void finish() {
    flush();
#if defined(__SSE2__)
    _mm_sfence();
#endif
  }

 private:
  void flush() {
    if (used_ > 0) stream_copy(dst_, stage_.data(), used_);
    dst_ = nullptr;
    used_ = 0;
  }

  static void stream_copy(char* d, const char* s, size_t n) {
#if defined(__SSE2__)
    // Head up to 16-byte alignment, aligned 16-byte streaming stores, then the tail.
    size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;
    if (head > n) head = n;
    std::memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 64; n -= 64, d += 64, s += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
    }
    for (; n >= 16; n -= 16, d += 16, s += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
#endif
    std::memcpy(d, s, n);
  }

  std::vector<char> stage_;
  char* dst_ = nullptr;
  size_t used_ = 0;
};

}  // namespace fastsmooth
