// Argument checks of fastsmooth::ablate_pixels shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <vector>

#include "ablation_args.h"

namespace fastsmooth {

inline void check_ablate_pixels_args(const at::Tensor& x, int64_t keep, int64_t n, int64_t seed,
                                     const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  TORCH_CHECK(x.dim() == 4, "fastsmooth::ablate_pixels: x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "fastsmooth::ablate_pixels: x must be floating point, got ",
              x.scalar_type());
  const int64_t d = x.size(2) * x.size(3);
  TORCH_CHECK(keep >= 0 && keep <= d, "fastsmooth::ablate_pixels: keep must be in [0, H * W = ", d, "], got ", keep);
  TORCH_CHECK(n >= 0, "fastsmooth::ablate_pixels: n must be >= 0, got ", n);
  TORCH_CHECK(seed >= 0, "fastsmooth::ablate_pixels: seed must be >= 0, got ", seed);
  TORCH_CHECK(mean.has_value() == std.has_value(), "fastsmooth::ablate_pixels: mean and std must be given together");
  check_stat(mean, "mean", x);
  check_stat(std, "std", x);
}

inline std::vector<int64_t> pixel_ablated_shape(const at::Tensor& x, int64_t n) {
  return {x.size(0) * n, 2 * x.size(1), x.size(2), x.size(3)};
}

inline void check_pixel_out(const at::Tensor& out, const at::Tensor& x, int64_t n) {
  const auto shape = pixel_ablated_shape(x, n);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape), "fastsmooth::ablate_pixels: out must have shape ",
              at::IntArrayRef(shape), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.device() == x.device(),
              "fastsmooth::ablate_pixels: out must match x's dtype and device (", x.scalar_type(), ", ", x.device(),
              "), got ", out.scalar_type(), ", ", out.device());
  TORCH_CHECK(out.is_contiguous(), "fastsmooth::ablate_pixels: out must be contiguous");
}

}  // namespace fastsmooth
