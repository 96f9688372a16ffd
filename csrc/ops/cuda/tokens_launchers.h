// Plain launch function and launch plan of the fused token-extraction CUDA kernel (no torch
// headers, like launchers.h); the torch registration in tokens_cuda.cpp calls them.
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../common/tokens.h"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {

struct TokensLaunch {
  const void* x;     // [B, C, H, W], contiguous, of `dtype`
  void* out;         // [B * P, K, E], contiguous
  const void* mean;  // [C] of the accumulation type or nullptr
  const void* std;   // [C] or nullptr
  KeepMasks masks;   // device pointers
  TokenGrid grid;    // tokens: a device pointer
  bool normalize_fill;
  DType dtype;
};

// The grid is 2-D: x over tiles of `threads` consecutive elements of one sample (its kept
// tokens' pixels), y over samples (ablations x images). y is capped at the hardware limit and
// the kernel strides over the remaining samples, so any B * P launches.
struct TokensPlan {
  int64_t threads, tiles, sample_blocks;
};

inline TokensPlan plan_tokens(int64_t samples, int64_t per_sample) {
  constexpr int64_t kMaxGridY = 65535;
  const int64_t threads = per_sample >= 256 ? 256 : (per_sample >= 64 ? 128 : 64);
  const int64_t tiles = (per_sample + threads - 1) / threads;
  const int64_t sample_blocks = samples < kMaxGridY ? samples : kMaxGridY;
  return {threads, tiles, sample_blocks};
}

cudaError_t launch_ablate_tokens(const TokensLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
