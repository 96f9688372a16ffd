// Philox4x32-10 counter-based random numbers, shared by the CPU and CUDA kernels.
//
// The stream is exactly Triton's tl.philox (key = the 64-bit seed split into low / high
// words, the same rounds and constants) and fastsmooth/ops/_philox.py's NumPy reference, so
// every backend of a random op draws the same bits for the same seed and counter.
#pragma once
#include <stdint.h>

#include "macros.h"

namespace fastsmooth {

struct Philox4 {
  uint32_t v[4];
};

FS_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * static_cast<uint64_t>(b)) >> 32);
}

// Four 32-bit random words for counter (c0, c1, c2, c3) under `seed`.
FS_HOST_DEVICE Philox4 philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = mulhi32(0xCD9E8D57u, a2) ^ c1 ^ k0;
    c2 = mulhi32(0xD2511F53u, a0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * a2;
    c3 = 0xD2511F53u * a0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform float in [0, 1) from the top 24 bits of a word (exact in float32).
FS_HOST_DEVICE float uniform_open1(uint32_t word) { return static_cast<float>(word >> 8) * (1.0f / 16777216.0f); }

// Uniform float in (0, 1]: safe to take the logarithm of.
FS_HOST_DEVICE float uniform_open0(uint32_t word) {
  return static_cast<float>((word >> 8) + 1u) * (1.0f / 16777216.0f);
}

}  // namespace fastsmooth
