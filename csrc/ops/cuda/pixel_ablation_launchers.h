// Plain launch function of the l0 pixel-ablation CUDA kernel (no torch headers; see launchers.h).
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "launchers.h"

namespace fastsmooth {
namespace cuda {

struct AblatePixelsLaunch {
  const void* x;     // [B, C, H, W], contiguous, of `dtype`
  void* out;         // [B * n, 2C, H, W]
  const void* mean;  // [C] of the accumulation type (double for Float64, else float) or nullptr
  const void* std;   // [C] or nullptr
  uint64_t seed;
  int64_t B, C, d, n, keep;
  bool shared;       // one subset per draw j for all images (training mode)
  DType dtype;
};

cudaError_t launch_ablate_pixels(const AblatePixelsLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
