// CPU kernel of fastsmooth::gaussian_noise (OpenMP through at::parallel_for).
//
// Work is split over samples; each sample reads its source image once and writes its noised
// copy quad by quad (one Philox call per four elements, see common/gaussian.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../gaussian_args.h"
#include "output.h"

namespace fastsmooth {
namespace {

template <typename scalar_t>
void noise_samples(const at::Tensor& x, double sigma, const NoiseGrid& g, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t s = static_cast<acc_t>(sigma);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.D));

  at::parallel_for(0, g.count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t sample = g.start + r, b = sample / g.n, j = sample % g.n;
      const scalar_t* src = xp + b * g.D;
      scalar_t* dst = op + r * g.D;
      for (int64_t q = 0; q < g.Q; ++q) {
        const Normal4<acc_t> z = gaussian_quad<acc_t>(g.seed, q, j, b);
        const int64_t e0 = 4 * q, valid = std::min<int64_t>(4, g.D - e0);
        for (int64_t k = 0; k < valid; ++k) {
          dst[e0 + k] = static_cast<scalar_t>(static_cast<acc_t>(src[e0 + k]) + s * z.z[k]);
        }
      }
    }
  });
}

void gaussian_noise_out_cpu(const at::Tensor& x_in, double sigma, int64_t n, int64_t seed, int64_t start,
                            int64_t count, at::Tensor& out) {
  const NoiseGrid grid = check_gaussian_args(x_in, sigma, n, seed, start, count);
  check_noise_out(out, x_in, count);
  if (out.numel() == 0) return;
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_gaussian_noise_cpu",
                                  [&] { noise_samples<scalar_t>(x, sigma, grid, out); });
}

at::Tensor gaussian_noise_cpu(const at::Tensor& x, double sigma, int64_t n, int64_t seed, int64_t start,
                              int64_t count) {
  check_gaussian_args(x, sigma, n, seed, start, count);
  at::Tensor out = empty_output(noised_shape(x, count), x.options());
  gaussian_noise_out_cpu(x, sigma, n, seed, start, count, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("gaussian_noise", &gaussian_noise_cpu);
  m.impl("gaussian_noise_out", &gaussian_noise_out_cpu);
}

}  // namespace fastsmooth
