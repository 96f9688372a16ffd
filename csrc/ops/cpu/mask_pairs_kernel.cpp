// CPU kernel of fastsmooth::mask_pairs (OpenMP through at::parallel_for).
//
// Work is split over output lines (row, h) of W pixels (NCHW: one line per channel; channels-
// last: one line of W * C values). Only the two rectangles are tested per pixel: no mask
// tensor is read or written.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../mask_pairs_args.h"
#include "output.h"

namespace fastsmooth {
namespace {

template <typename scalar_t>
void write_pairs(const at::Tensor& x, const PairGrid& g, double fill_value, const std::optional<at::Tensor>& mean,
                 const std::optional<at::Tensor>& std, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t* mp = mean.has_value() ? mean->data_ptr<acc_t>() : nullptr;
  const acc_t* sp = std.has_value() ? std->data_ptr<acc_t>() : nullptr;
  const acc_t fill = static_cast<acc_t>(fill_value);
  const int64_t C = g.C, H = g.H, W = g.W;
  const int64_t lines = g.R * H;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C * W));

  at::parallel_for(0, lines, grain, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      const int64_t r = l / H, h = l % H;
      const scalar_t* img = xp + g.images[r] * C * H * W;
      for (int64_t w = 0; w < W; ++w) {
        const bool masked = pair_masked(g, r, h, w);
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = static_cast<acc_t>(img[(c * H + h) * W + w]);
          const int64_t o = g.channels_last ? ((r * H + h) * W + w) * C + c : ((r * C + c) * H + h) * W + w;
          op[o] = static_cast<scalar_t>(pair_pixel<acc_t>(masked, v, mp, sp, fill, c));
        }
      }
    }
  });
}

void mask_pairs_out_cpu(const at::Tensor& x_in, const at::Tensor& images, const at::Tensor& rects, double fill,
                        const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std, at::Tensor& out) {
  PairGrid grid = check_mask_pairs_args(x_in, images, rects, mean, std);
  check_mask_pairs_out(out, x_in, grid);
  grid.channels_last = is_channels_last_output(out);
  if (out.numel() == 0) return;
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_mask_pairs_cpu", [&] {
    write_pairs<scalar_t>(x, grid, fill, mean, std, out);
  });
}

at::Tensor mask_pairs_cpu(const at::Tensor& x, const at::Tensor& images, const at::Tensor& rects, double fill,
                          const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  const PairGrid grid = check_mask_pairs_args(x, images, rects, mean, std);
  at::Tensor out = empty_output(mask_pairs_shape(grid), x.options());
  mask_pairs_out_cpu(x, images, rects, fill, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("mask_pairs", &mask_pairs_cpu);
  m.impl("mask_pairs_out", &mask_pairs_out_cpu);
}

}  // namespace fastsmooth
