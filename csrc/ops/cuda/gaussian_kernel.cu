// CUDA kernel of fastsmooth::gaussian_noise: one thread per (sample, quad of four elements).
// It runs one Philox call, two Box-Muller transforms, and reads / writes its four elements;
// consecutive threads hold consecutive quads, so a warp's loads and stores cover one
// contiguous span of 128 elements.
#include "../common/launch_plan.h"
#include "convert.cuh"
#include "gaussian_launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void gaussian_noise_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                      typename Convert<scalar_t>::acc_t sigma, NoiseGrid g) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t total = g.count * g.Q;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / g.Q, q = i % g.Q;
    const int64_t sample = g.start + r, b = sample / g.n, j = sample % g.n;
    const Normal4<acc_t> z = gaussian_quad<acc_t>(g.seed, q, j, b);
    const int64_t e0 = 4 * q;
    const scalar_t* src = x + b * g.D + e0;
    scalar_t* dst = out + r * g.D + e0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (e0 + k < g.D) dst[k] = Convert<scalar_t>::store(Convert<scalar_t>::load(src[k]) + sigma * z.z[k]);
    }
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const GaussianLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const LaunchPlan plan = plan_quads(a.grid.count * a.grid.Q);
  if (plan.work == 0) return cudaSuccess;
  gaussian_noise_kernel<scalar_t><<<static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<acc_t>(a.sigma), a.grid);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gaussian_noise(const GaussianLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
