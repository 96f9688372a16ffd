// Argument checks of the l1 splitting ops shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "common/dssn.h"

namespace fastsmooth {

inline void check_split_images(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ", x.scalar_type());
}

// Validates dssn_split's arguments and returns its split parameters.
inline SplitParams check_dssn_args(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& tmpl,
                                   int64_t levels, int64_t q, bool general) {
  const char* op = "fastsmooth::dssn_split";
  check_split_images(x, op);
  TORCH_CHECK(q >= 1 && q <= (1 << 24), op, ": q must be in [1, 2^24], got ", q);
  TORCH_CHECK(levels >= 1 && levels <= (1 << 15), op, ": levels must be in [1, 2^15], got ", levels);
  TORCH_CHECK(general == (levels < q), op, ": general must be (levels < q) (lambda < 0.5), got general=", general,
              " with levels=", levels, ", q=", q);
  TORCH_CHECK(offsets.dim() == 2 && (offsets.size(0) == 1 || offsets.size(0) == x.size(0)), op,
              ": offsets must be [1 or B = ", x.size(0), ", K], got shape ", offsets.sizes());
  TORCH_CHECK(offsets.scalar_type() == at::kLong, op, ": offsets must be int64, got ", offsets.scalar_type());
  TORCH_CHECK(offsets.device() == x.device() && offsets.is_contiguous(), op,
              ": offsets must be contiguous on x's device ", x.device());
  TORCH_CHECK(tmpl.scalar_type() == at::kShort, op, ": template must be int16, got ", tmpl.scalar_type());
  const int64_t d = x.size(1) * x.size(2) * x.size(3);
  TORCH_CHECK(tmpl.numel() == d, op, ": template must hold C * H * W = ", d, " entries, got ", tmpl.numel());
  TORCH_CHECK(tmpl.device() == x.device() && tmpl.is_contiguous(), op,
              ": template must be contiguous on x's device ", x.device());
  const float qf = static_cast<float>(q), lf = static_cast<float>(levels);
  return SplitParams{qf, lf, lf / qf, general};
}

inline std::vector<int64_t> dssn_shape(const at::Tensor& x, const at::Tensor& offsets) {
  return {x.size(0) * offsets.size(1), x.size(1), x.size(2), x.size(3)};
}

// Validates the noise ops' arguments; returns the split parameters of SSN (scale 1, period 2 lambda).
inline SplitParams check_noise_args(const at::Tensor& x, double lam, int64_t n, const char* op) {
  check_split_images(x, op);
  TORCH_CHECK(lam > 0 && std::isfinite(lam), op, ": lam must be positive and finite, got ", lam);
  TORCH_CHECK(n >= 0, op, ": n must be >= 0, got ", n);
  const float two_lam = static_cast<float>(2.0 * lam);
  return SplitParams{1.0f, two_lam, two_lam, !(lam >= 0.5)};
}

inline std::vector<int64_t> noise_shape(const at::Tensor& x, int64_t n) {
  return {x.size(0) * n, x.size(1), x.size(2), x.size(3)};
}

}  // namespace fastsmooth
