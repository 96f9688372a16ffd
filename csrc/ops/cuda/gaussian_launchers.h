// Plain launch function of the fused Gaussian-noise CUDA kernel (no torch headers, like
// launchers.h); the torch registration in gaussian_cuda.cpp calls it.
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../common/gaussian.h"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {

struct GaussianLaunch {
  const void* x;  // [B, C, H, W], contiguous, of `dtype`
  void* out;      // [count, C, H, W], contiguous
  double sigma;
  NoiseGrid grid;
  DType dtype;
};

cudaError_t launch_gaussian_noise(const GaussianLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
