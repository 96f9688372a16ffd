// Transparent huge pages for fresh CPU outputs, advised only where they cannot stall.
//
// madvise(MADV_HUGEPAGE) on a fresh output makes its first-touch faults take 2 MB pages (512x
// fewer faults: a fresh 79 MB ablated CIFAR-10 batch is written 2-3x faster than without the
// advice). But when /sys/kernel/mm/transparent_hugepage/defrag is `madvise` (a common
// default), `defer+madvise` or `always`, a fault in an advised region that finds no free 2 MB
// block compacts memory synchronously, inside the kernel's first write, for as long as
// compaction takes. With `defer` or `never`, an advised fault takes a free huge page or falls
// back to 4 KB pages at once, so the advice never stalls.
//
// Policy (FASTSMOOTH_HUGEPAGES=auto, the default): advise when the defrag mode cannot stall,
// or when /proc/buddyinfo shows at least twice the needed 2 MB blocks free (the faults then
// take free blocks and do not compact); otherwise leave the output to 4 KB pages, which cost
// what any fresh tensor's do (torch.empty_like). FASTSMOOTH_HUGEPAGES=1 always advises (the
// earlier behaviour), 0 never does. benchmarks/fresh_outputs.py measures the three.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastsmooth {

constexpr uintptr_t kHugePage = uintptr_t(1) << 21;

enum class HugePageMode { Auto, Always, Never };

inline HugePageMode huge_page_mode() {
  const char* v = std::getenv("FASTSMOOTH_HUGEPAGES");
  if (v == nullptr || std::strcmp(v, "auto") == 0 || *v == '\0') return HugePageMode::Auto;
  return std::strcmp(v, "0") == 0 ? HugePageMode::Never : HugePageMode::Always;
}

// Whether the system's THP defrag mode makes a fault in an advised region compact memory
// synchronously (read once per process).
inline bool advised_faults_may_compact() {
  static const bool may = [] {
    std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/defrag", "r");
    if (f == nullptr) return true;  // unknown: assume the worst
    char buf[128] = {0};
    const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // The active mode is the bracketed word, e.g. "always defer defer+madvise [madvise] never".
    return !(std::strstr(buf, "[defer]") != nullptr || std::strstr(buf, "[never]") != nullptr);
  }();
  return may;
}

// Free 2 MB blocks in the buddy allocator (all zones): blocks of order k >= 9 count 2^(k - 9).
// -1 when /proc/buddyinfo cannot be read.
inline int64_t free_huge_blocks() {
  std::FILE* f = std::fopen("/proc/buddyinfo", "r");
  if (f == nullptr) return -1;
  int64_t blocks = 0;
  char line[512];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    // "Node 0, zone   Normal    690    420 ..." : counts of free blocks of order 0, 1, ...
    const char* p = std::strstr(line, "zone");
    if (p == nullptr) continue;
    p += 4;
    while (*p == ' ') ++p;
    while (*p != ' ' && *p != '\0') ++p;  // the zone's name
    char* end = nullptr;
    for (int order = 0;; ++order) {
      const long long count = std::strtoll(p, &end, 10);
      if (end == p) break;
      if (order >= 9) blocks += count << (order - 9);
      p = end;
    }
  }
  std::fclose(f);
  return blocks;
}

// Advises huge pages for the whole 2 MB pages inside [data, data + bytes) per the policy above.
inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data), end = begin + bytes;
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1), last = end & ~(kHugePage - 1);
  if (last <= first) return;
  const HugePageMode mode = huge_page_mode();
  if (mode == HugePageMode::Never) return;
  if (mode == HugePageMode::Auto && advised_faults_may_compact()) {
    const int64_t needed = static_cast<int64_t>((last - first) / kHugePage);
    if (free_huge_blocks() < 2 * needed) return;
  }
  madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace fastsmooth
