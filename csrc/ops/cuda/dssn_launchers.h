// Plain launch functions of the l1 splitting CUDA kernels (no torch headers; see launchers.h).
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "../common/dssn.h"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {

struct DssnLaunch {
  const void* x;         // [B, C, H, W], contiguous, of `dtype`
  const int16_t* tmpl;   // [d = C * H * W] offsets v in [0, L)
  const int64_t* ks;     // [M, K] evaluations, M = 1 (shared) or B (per image)
  void* out;             // [B * K, C, H, W]
  int64_t B, d, K;
  bool per_image;
  int32_t levels;
  SplitParams params;
  DType dtype;
};

struct NoiseLaunch {
  const void* x;  // [B, C, H, W]
  void* out;      // [B * n, C, H, W]
  int64_t B, d, n;
  uint64_t seed;
  float lam;
  SplitParams params;  // SSN's split parameters; params.period = float(2 lambda)
  bool ssn;            // SSN (true) or uniform additive noise (false)
  DType dtype;
};

cudaError_t launch_dssn_split(const DssnLaunch& args, cudaStream_t stream);
cudaError_t launch_noise(const NoiseLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastsmooth
