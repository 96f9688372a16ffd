// CPU kernel of fastsmooth::mask_pairs (OpenMP through at::parallel_for).
//
// Work is split over output lines (row, h) of W pixels (NCHW: one line per channel; channels-
// last: one line of W * C values). Each line is cut into at most five spans by the two masks'
// columns on it (pair_spans): masked spans are filled, kept spans copied (or normalized) in
// plain loops the compiler vectorizes. No mask tensor is read or written.
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

  // kept columns [w0, w1) of line h of row r: the image's values (normalized when asked)
  auto keep = [&](int64_t r, int64_t h, const scalar_t* img, int64_t w0, int64_t w1) {
    if (g.channels_last) {
      scalar_t* dst = op + (r * H + h) * W * C;
      for (int64_t w = w0; w < w1; ++w)
        for (int64_t c = 0; c < C; ++c)
          dst[w * C + c] = static_cast<scalar_t>(
              pair_pixel<acc_t>(false, static_cast<acc_t>(img[(c * H + h) * W + w]), mp, sp, fill, c));
      return;
    }
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* src = img + (c * H + h) * W;
      scalar_t* dst = op + ((r * C + c) * H + h) * W;
      if (mp == nullptr) {
        for (int64_t w = w0; w < w1; ++w) dst[w] = src[w];
      } else {
        for (int64_t w = w0; w < w1; ++w)
          dst[w] = static_cast<scalar_t>(pair_pixel<acc_t>(false, static_cast<acc_t>(src[w]), mp, sp, fill, c));
      }
    }
  };
  auto mask = [&](int64_t r, int64_t h, int64_t w0, int64_t w1) {
    const scalar_t v = static_cast<scalar_t>(fill);
    if (g.channels_last) {
      scalar_t* dst = op + (r * H + h) * W * C;
      for (int64_t i = w0 * C; i < w1 * C; ++i) dst[i] = v;
      return;
    }
    for (int64_t c = 0; c < C; ++c) {
      scalar_t* dst = op + ((r * C + c) * H + h) * W;
      for (int64_t w = w0; w < w1; ++w) dst[w] = v;
    }
  };

  at::parallel_for(0, lines, grain, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      const int64_t r = l / H, h = l % H;
      const scalar_t* img = xp + g.images[r] * C * H * W;
      int64_t lo[2], hi[2];
      const int spans = pair_spans(g, r, h, lo, hi);
      int64_t w = 0;
      for (int k = 0; k < spans; ++k) {
        keep(r, h, img, w, lo[k]);
        mask(r, h, lo[k], hi[k]);
        w = hi[k];
      }
      keep(r, h, img, w, W);
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
