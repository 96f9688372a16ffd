// Argument checks of fastsmooth::ablate_tokens shared by the CPU and CUDA registrations (host only).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "ablation_args.h"
#include "common/tokens.h"

namespace fastsmooth {

// Validates the arguments (the masks as fastsmooth::ablate does) and returns the token grid.
// Token indices are checked against the patch grid on the CPU; on a GPU that check would
// synchronize, so the Python layer checks them before moving them.
inline TokenGrid check_tokens_args(const at::Tensor& x, const KeepMasks& masks, const at::Tensor& tokens,
                                   int64_t patch_h, int64_t patch_w) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(patch_h >= 1 && patch_w >= 1 && H % patch_h == 0 && W % patch_w == 0,
              "fastsmooth::ablate_tokens: the patch (", patch_h, " x ", patch_w, ") must tile the image (", H, " x ",
              W, ")");
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(0) == masks.M && tokens.size(1) == masks.P,
              "fastsmooth::ablate_tokens: tokens must be [M = ", masks.M, ", P = ", masks.P, ", K], got ",
              tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.is_contiguous() && tokens.device() == x.device(),
              "fastsmooth::ablate_tokens: tokens must be contiguous int64 on x's device ", x.device(), ", got ",
              tokens.scalar_type(), " on ", tokens.device());
  const int64_t G = (H / patch_h) * (W / patch_w);
  if (tokens.device().is_cpu() && tokens.numel() > 0) {
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < G, "fastsmooth::ablate_tokens: token indices must be in [0, ", G,
                ") (the patch grid), got [", lo, ", ", hi, "]");
  }
  return TokenGrid{tokens.data_ptr<int64_t>(), B, C, H, W, masks.P, tokens.size(2), patch_h, patch_w, W / patch_w,
                   C * patch_h * patch_w};
}

inline std::vector<int64_t> tokens_shape(const TokenGrid& g) { return {g.B * g.P, g.K, g.E}; }

inline void check_tokens_out(const at::Tensor& out, const at::Tensor& x, const TokenGrid& g) {
  const auto shape = tokens_shape(g);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape), "fastsmooth::ablate_tokens: out must have shape ",
              at::IntArrayRef(shape), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && out.device() == x.device(),
              "fastsmooth::ablate_tokens: out must match x's dtype and device (", x.scalar_type(), ", ", x.device(),
              "), got ", out.scalar_type(), ", ", out.device());
  TORCH_CHECK(out.is_contiguous(), "fastsmooth::ablate_tokens: out must be contiguous");
}

}  // namespace fastsmooth
