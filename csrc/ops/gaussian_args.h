// Argument checks of fastsmooth::gaussian_noise shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common/gaussian.h"

namespace fastsmooth {

// Validates the arguments and returns the geometry the kernels consume.
inline NoiseGrid check_gaussian_args(const at::Tensor& x, double sigma, int64_t n, int64_t seed, int64_t start,
                                     int64_t count) {
  constexpr int64_t kMaxCounter = int64_t(1) << 32;  // image, copy and quad indices are 32-bit counter words
  TORCH_CHECK(x.dim() == 4, "fastsmooth::gaussian_noise: x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "fastsmooth::gaussian_noise: x must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(std::isfinite(sigma) && sigma >= 0, "fastsmooth::gaussian_noise: sigma must be finite and >= 0, got ",
              sigma);
  TORCH_CHECK(n >= 1 && n < kMaxCounter, "fastsmooth::gaussian_noise: n must be in [1, 2^32), got ", n);
  TORCH_CHECK(x.size(0) < kMaxCounter, "fastsmooth::gaussian_noise: at most 2^32 - 1 images, got ", x.size(0));
  TORCH_CHECK(seed >= 0, "fastsmooth::gaussian_noise: seed must be >= 0, got ", seed);
  const int64_t total = x.size(0) * n;
  TORCH_CHECK(start >= 0 && count >= 0 && start <= total && count <= total - start,
              "fastsmooth::gaussian_noise: samples [start, start + count) = [", start, ", ", start + count,
              ") must lie in [0, B * n = ", total, ")");
  const int64_t D = x.numel() / std::max<int64_t>(1, x.size(0));
  return NoiseGrid{D, (D + 3) / 4, n, start, count, static_cast<uint64_t>(seed)};
}

inline std::vector<int64_t> noised_shape(const at::Tensor& x, int64_t count) {
  return {count, x.size(1), x.size(2), x.size(3)};
}

inline void check_noise_out(const at::Tensor& out, const at::Tensor& x, int64_t count) {
  const auto shape = noised_shape(x, count);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape), "fastsmooth::gaussian_noise: out must have shape ",
              at::IntArrayRef(shape), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.device() == x.device(),
              "fastsmooth::gaussian_noise: out must match x's dtype and device (", x.scalar_type(), ", ", x.device(),
              "), got ", out.scalar_type(), ", ", out.device());
  TORCH_CHECK(out.is_contiguous(), "fastsmooth::gaussian_noise: out must be contiguous");
}

}  // namespace fastsmooth
