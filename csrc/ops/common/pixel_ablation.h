// Random keys of l0 (pixel) ablation, shared verbatim by the CPU and CUDA kernels and mirrored
// by fastsmooth/ops/pixel_ablation/reference.py and triton_kernel.py (semantics.md §2).
//
// Sample s (an int64: image * n + j, or j alone when one subset is shared by all images) gives
// pixel p the 64-bit key
//     key = ((w_hi << 32) | w_lo) with its low `index_bits` bits replaced by p,
// where (w_hi, w_lo) are Philox words (0, 1) of counter (p / 2, s_lo, s_hi, kPixelAblationTag)
// for even p and words (2, 3) for odd p. The sample keeps the `keep` pixels of smallest key.
// Keys are distinct (they embed p), so the kept set is exactly `keep` pixels; i.i.d. random
// high bits make every keep-subset equally likely except when two keys share their random
// part at the selection boundary (probability below d / 2^(64 - index_bits), about 2e-10 at
// ImageNet size), where the smaller pixel index wins.
#pragma once
#include <stdint.h>

#include "macros.h"
#include "philox.h"

namespace fastsmooth {

// Fourth Philox counter word of this op, so that its stream differs from other random ops.
constexpr uint32_t kPixelAblationTag = 0x6C30AB1Au;

// Number of low key bits that hold the pixel index: enough for d - 1 (at least 1).
inline int pixel_index_bits(int64_t d) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) < d) ++bits;
  return bits;
}

FS_HOST_DEVICE uint64_t pixel_key_from_words(uint32_t hi, uint32_t lo, int64_t p, int index_bits) {
  const uint64_t random = (static_cast<uint64_t>(hi) << 32) | lo;
  return ((random >> index_bits) << index_bits) | static_cast<uint64_t>(p);
}

// Keys of pixels 2q and 2q + 1 of sample s (one Philox call).
struct KeyPair {
  uint64_t even, odd;
};

FS_HOST_DEVICE KeyPair pixel_key_pair(uint64_t seed, int64_t sample, int64_t q, int index_bits) {
  const Philox4 r = philox4x32(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(uint64_t(sample)),
                               static_cast<uint32_t>(uint64_t(sample) >> 32), kPixelAblationTag);
  return {pixel_key_from_words(r.v[0], r.v[1], 2 * q, index_bits),
          pixel_key_from_words(r.v[2], r.v[3], 2 * q + 1, index_bits)};
}

// Which sample's keys output sample (image b, draw j) uses.
FS_HOST_DEVICE int64_t pixel_sample_id(int64_t b, int64_t j, int64_t n, bool shared) { return shared ? j : b * n + j; }

}  // namespace fastsmooth
