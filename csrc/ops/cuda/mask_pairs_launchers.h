// Plain launch function of the fused double-masking CUDA kernel (no torch headers, like
// launchers.h); the torch registration in mask_pairs_cuda.cpp calls it.
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../common/mask_pairs.h"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {

struct MaskPairsLaunch {
  const void* x;     // [N, C, H, W], contiguous, of `dtype`
  void* out;         // [R, C, H, W], NCHW or channels-last in memory
  const void* mean;  // [C] of the accumulation type or nullptr
  const void* std;   // [C] or nullptr
  double fill;
  PairGrid grid;  // images, rects: device pointers
  DType dtype;
};

// The launch plan is plan_mask_pairs (common/launch_plan.h), shared with the CPU build's
// fastsmooth._C.cuda_launch_plan.
cudaError_t launch_mask_pairs(const MaskPairsLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
