// Argument checks of fastsmooth::ablate shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <optional>

#include "common/ablation.h"

namespace fastsmooth {

inline void check_mask(const at::Tensor& mask, const char* name, int64_t dims, const at::Tensor& x) {
  TORCH_CHECK(mask.dim() == dims, "fastsmooth::ablate: ", name, " must be ", dims, "-D, got shape ", mask.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kByte, "fastsmooth::ablate: ", name, " must be uint8, got ", mask.scalar_type());
  TORCH_CHECK(mask.device() == x.device(), "fastsmooth::ablate: ", name, " is on ", mask.device(), " but x is on ", x.device());
  TORCH_CHECK(mask.is_contiguous(), "fastsmooth::ablate: ", name, " must be contiguous");
  TORCH_CHECK(mask.size(0) == 1 || mask.size(0) == x.size(0), "fastsmooth::ablate: ", name,
              " must have 1 or B = ", x.size(0), " leading entries, got ", mask.size(0));
}

inline void check_stat(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& x) {
  if (!t.has_value()) return;
  const auto acc = at::toOpMathType(x.scalar_type());
  TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(1), "fastsmooth::ablate: ", name, " must have C = ", x.size(1),
              " entries, got shape ", t->sizes());
  TORCH_CHECK(t->scalar_type() == acc, "fastsmooth::ablate: ", name, " must be ", acc, " for x of dtype ",
              x.scalar_type(), ", got ", t->scalar_type());
  TORCH_CHECK(t->device() == x.device() && t->is_contiguous(), "fastsmooth::ablate: ", name,
              " must be contiguous on x's device ", x.device());
}

// Validates the arguments and returns the mask view the kernels consume.
inline KeepMasks check_ablate_args(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                                   const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                                   const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  TORCH_CHECK(x.dim() == 4, "fastsmooth::ablate: x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "fastsmooth::ablate: x must be floating point, got ", x.scalar_type());
  check_mask(rows, "rows", 3, x);
  check_mask(cols, "cols", 3, x);
  const int64_t P = rows.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(rows.size(2) == H, "fastsmooth::ablate: rows must be [M, P, H = ", H, "], got ", rows.sizes());
  TORCH_CHECK(cols.size(1) == P && cols.size(2) == W && cols.size(0) == rows.size(0),
              "fastsmooth::ablate: cols must be [", rows.size(0), ", ", P, ", W = ", W, "], got ", cols.sizes());
  TORCH_CHECK(mean.has_value() == std.has_value(), "fastsmooth::ablate: mean and std must be given together");
  check_stat(mean, "mean", x);
  check_stat(std, "std", x);
  KeepMasks masks{rows.data_ptr<uint8_t>(), cols.data_ptr<uint8_t>(), nullptr, rows.size(0), P, H, W, 1, 1, 1, 1};
  if (tiles.has_value()) {
    check_mask(*tiles, "tiles", 4, x);
    TORCH_CHECK(tiles->size(0) == rows.size(0) && tiles->size(1) == P, "fastsmooth::ablate: tiles must be [",
                rows.size(0), ", ", P, ", TH, TW], got ", tiles->sizes());
    TORCH_CHECK(tile_h >= 1 && tile_w >= 1, "fastsmooth::ablate: tile sizes must be >= 1, got ", tile_h, " x ", tile_w);
    masks.tiles = tiles->data_ptr<uint8_t>();
    masks.TH = tiles->size(2);
    masks.TW = tiles->size(3);
    masks.tile_h = tile_h;
    masks.tile_w = tile_w;
  }
  return masks;
}

inline std::vector<int64_t> ablated_shape(const at::Tensor& x, int64_t P) {
  return {x.size(0) * P, 2 * x.size(1), x.size(2), x.size(3)};
}

inline void check_out(const at::Tensor& out, const at::Tensor& x, int64_t P) {
  const auto shape = ablated_shape(x, P);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape), "fastsmooth::ablate: out must have shape ", at::IntArrayRef(shape),
              ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.device() == x.device(),
              "fastsmooth::ablate: out must match x's dtype and device (", x.scalar_type(), ", ", x.device(), "), got ",
              out.scalar_type(), ", ", out.device());
  TORCH_CHECK(out.is_contiguous() || out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "fastsmooth::ablate: out must be contiguous or channels-last contiguous, got strides ", out.strides());
}

// Whether the kernels write out in channels-last order ([B * P, H, W, 2C] in memory). A
// tensor that is both (H = W = 1) has one memory order: the NCHW one.
inline bool is_channels_last_output(const at::Tensor& out) {
  return !out.is_contiguous() && out.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace fastsmooth
