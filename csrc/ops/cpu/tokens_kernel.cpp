// CPU kernel of fastsmooth::ablate_tokens (OpenMP through at::parallel_for).
//
// Work is split over output tokens (sample, kept token). A token's C * ph rows of pw pixels
// are read straight from the image and written contiguously, so the image is never ablated
// in full: only the kept tokens' pixels are touched.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../tokens_args.h"
#include "output.h"

namespace fastsmooth {
namespace {

template <typename scalar_t>
void extract_tokens(const at::Tensor& x, const KeepMasks& masks, const TokenGrid& g,
                    const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std, bool normalize_fill,
                    at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t* mp = mean.has_value() ? mean->data_ptr<acc_t>() : nullptr;
  const acc_t* sp = std.has_value() ? std->data_ptr<acc_t>() : nullptr;
  const int64_t rows = g.samples() * g.K;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.E));

  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.K, k = r % g.K;
      scalar_t* dst = op + r * g.E;
      for (int64_t line = 0; line < g.C * g.ph; ++line) {  // (c, dy) rows of the patch
        const TokenSource s = token_source(g, masks, n, k * g.E + line * g.pw);
        const scalar_t* src = xp + ((s.b * g.C + s.c) * g.H + s.h) * g.W + s.w;
        for (int64_t dx = 0; dx < g.pw; ++dx) {
          const bool kept = masks.kept(s.b, s.p, s.h, s.w + dx);
          dst[line * g.pw + dx] = static_cast<scalar_t>(
              token_pixel<acc_t>(kept, static_cast<acc_t>(src[dx]), mp, sp, normalize_fill, s.c));
        }
      }
    }
  });
}

void ablate_tokens_out_cpu(const at::Tensor& x_in, const at::Tensor& rows, const at::Tensor& cols,
                           const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                           const at::Tensor& tokens, int64_t patch_h, int64_t patch_w,
                           const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                           bool normalize_fill, at::Tensor& out) {
  const KeepMasks masks = check_ablate_args(x_in, rows, cols, tiles, tile_h, tile_w, mean, std);
  const TokenGrid grid = check_tokens_args(x_in, masks, tokens, patch_h, patch_w);
  check_tokens_out(out, x_in, grid);
  if (out.numel() == 0) return;
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_ablate_tokens_cpu", [&] {
    extract_tokens<scalar_t>(x, masks, grid, mean, std, normalize_fill, out);
  });
}

at::Tensor ablate_tokens_cpu(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                             const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                             const at::Tensor& tokens, int64_t patch_h, int64_t patch_w,
                             const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                             bool normalize_fill) {
  const KeepMasks masks = check_ablate_args(x, rows, cols, tiles, tile_h, tile_w, mean, std);
  const TokenGrid grid = check_tokens_args(x, masks, tokens, patch_h, patch_w);
  at::Tensor out = empty_output(tokens_shape(grid), x.options());
  ablate_tokens_out_cpu(x, rows, cols, tiles, tile_h, tile_w, tokens, patch_h, patch_w, mean, std, normalize_fill,
                        out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("ablate_tokens", &ablate_tokens_cpu);
  m.impl("ablate_tokens_out", &ablate_tokens_out_cpu);
}

}  // namespace fastsmooth
