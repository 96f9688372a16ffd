// Plain launch functions of the CUDA kernels. This header (and the .cu files) include no
// torch headers, so nvcc compiles them in seconds; the torch registrations in *_cuda.cpp are
// compiled by the host compiler and call these.
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../common/ablation.h"

namespace fastsmooth {
namespace cuda {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

struct AblateLaunch {
  const void* x;     // [B, C, H, W], contiguous, of `dtype`
  void* out;         // [B * P, 2C, H, W], NCHW or channels-last in memory
  const void* mean;  // [C] of the accumulation type (double for Float64, else float) or nullptr
  const void* std;   // [C] or nullptr
  KeepMasks masks;   // device pointers
  int64_t B, C;
  DType dtype;
  bool channels_last;
};

cudaError_t launch_ablate(const AblateLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
