// Argument checks of fastsmooth::mask_pairs shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "ablation_args.h"
#include "common/mask_pairs.h"

namespace fastsmooth {

// Validates the arguments and returns the grid (channels_last is set from `out` later).
// Image indices are checked on the CPU; on a GPU that check would synchronize, so the Python
// layer checks them before moving them.
inline PairGrid check_mask_pairs_args(const at::Tensor& x, const at::Tensor& images, const at::Tensor& rects,
                                      const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  TORCH_CHECK(x.dim() == 4, "fastsmooth::mask_pairs: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "fastsmooth::mask_pairs: x must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(images.dim() == 1 && images.scalar_type() == at::kLong && images.is_contiguous() &&
                  images.device() == x.device(),
              "fastsmooth::mask_pairs: images must be a contiguous int64 [R] tensor on x's device ", x.device(),
              ", got ", images.scalar_type(), " ", images.sizes(), " on ", images.device());
  const int64_t R = images.size(0);
  TORCH_CHECK(rects.dim() == 3 && rects.size(0) == R && rects.size(1) == 2 && rects.size(2) == 4 &&
                  rects.scalar_type() == at::kLong && rects.is_contiguous() && rects.device() == x.device(),
              "fastsmooth::mask_pairs: rects must be a contiguous int64 [R = ", R, ", 2, 4] tensor on x's device, got ",
              rects.scalar_type(), " ", rects.sizes(), " on ", rects.device());
  TORCH_CHECK(mean.has_value() == std.has_value(), "fastsmooth::mask_pairs: mean and std must be given together");
  check_stat(mean, "mean", x);
  check_stat(std, "std", x);
  if (images.device().is_cpu() && R > 0) {
    const int64_t lo = images.min().item<int64_t>(), hi = images.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < x.size(0), "fastsmooth::mask_pairs: image indices must be in [0, ", x.size(0),
                "), got [", lo, ", ", hi, "]");
  }
  return PairGrid{images.data_ptr<int64_t>(), rects.data_ptr<int64_t>(), x.size(0), R, x.size(1), x.size(2),
                  x.size(3), false};
}

inline std::vector<int64_t> mask_pairs_shape(const PairGrid& g) { return {g.R, g.C, g.H, g.W}; }

inline void check_mask_pairs_out(const at::Tensor& out, const at::Tensor& x, const PairGrid& g) {
  const auto shape = mask_pairs_shape(g);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape), "fastsmooth::mask_pairs: out must have shape ",
              at::IntArrayRef(shape), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.device() == x.device(),
              "fastsmooth::mask_pairs: out must match x's dtype and device (", x.scalar_type(), ", ", x.device(),
              "), got ", out.scalar_type(), ", ", out.device());
  TORCH_CHECK(out.is_contiguous() || out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "fastsmooth::mask_pairs: out must be contiguous or channels-last contiguous, got strides ",
              out.strides());
}

}  // namespace fastsmooth
