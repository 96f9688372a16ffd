// CUDA kernel of fastsmooth::ablate_tokens: blocks over (tiles of one sample's kept-token
// pixels) x (samples), one thread per output element. Consecutive threads write consecutive
// elements of a token row and read consecutive pixels of an image row (pw of them at a time).
#include "convert.cuh"
#include "../common/launch_plan.h"
#include "tokens_launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void ablate_tokens_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                     const typename Convert<scalar_t>::acc_t* __restrict__ mean,
                                     const typename Convert<scalar_t>::acc_t* __restrict__ std, KeepMasks masks,
                                     TokenGrid g, bool normalize_fill) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t per_sample = g.per_sample();
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= per_sample) return;
  for (int64_t n = blockIdx.y; n < g.samples(); n += gridDim.y) {
    const TokenSource s = token_source(g, masks, n, i);
    const bool kept = masks.kept(s.b, s.p, s.h, s.w);
    const acc_t v = Convert<scalar_t>::load(x[((s.b * g.C + s.c) * g.H + s.h) * g.W + s.w]);
    out[n * per_sample + i] = Convert<scalar_t>::store(token_pixel<acc_t>(kept, v, mean, std, normalize_fill, s.c));
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const TokensLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t samples = a.grid.samples(), per_sample = a.grid.per_sample();
  if (samples == 0 || per_sample == 0) return cudaSuccess;
  const LaunchPlan plan = plan_ablate_tokens(samples, per_sample);
  const dim3 blocks(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  ablate_tokens_kernel<scalar_t><<<blocks, static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<const acc_t*>(a.mean),
      static_cast<const acc_t*>(a.std), a.masks, a.grid, a.normalize_fill);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_ablate_tokens(const TokensLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
