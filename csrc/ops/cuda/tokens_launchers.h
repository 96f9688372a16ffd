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

// The launch plan is plan_ablate_tokens (common/launch_plan.h), shared with the CPU build's
// fastsmooth._C.cuda_launch_plan.
cudaError_t launch_ablate_tokens(const TokensLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
