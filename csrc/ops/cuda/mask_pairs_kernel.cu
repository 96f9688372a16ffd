// CUDA kernel of fastsmooth::mask_pairs: blocks over (tiles of one row's C * H * W outputs) x
// (rows), one thread per output element, in the output's memory order, so consecutive threads
// write consecutive addresses. A row's two rectangles are the only mask data read.
#include "convert.cuh"
#include "../common/launch_plan.h"
#include "mask_pairs_launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void mask_pairs_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                  const typename Convert<scalar_t>::acc_t* __restrict__ mean,
                                  const typename Convert<scalar_t>::acc_t* __restrict__ std,
                                  typename Convert<scalar_t>::acc_t fill, PairGrid g) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t per_row = g.per_row();
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= per_row) return;
  const PairSource s = pair_source(g, i);
  for (int64_t r = blockIdx.y; r < g.R; r += gridDim.y) {
    const bool masked = pair_masked(g, r, s.h, s.w);
    const acc_t v = Convert<scalar_t>::load(x[((g.images[r] * g.C + s.c) * g.H + s.h) * g.W + s.w]);
    out[r * per_row + i] = Convert<scalar_t>::store(pair_pixel<acc_t>(masked, v, mean, std, fill, s.c));
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const MaskPairsLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t rows = a.grid.R, per_row = a.grid.per_row();
  if (rows == 0 || per_row == 0) return cudaSuccess;
  const LaunchPlan plan = plan_mask_pairs(rows, per_row);
  const dim3 blocks(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  mask_pairs_kernel<scalar_t><<<blocks, static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<const acc_t*>(a.mean),
      static_cast<const acc_t*>(a.std), static_cast<acc_t>(a.fill), a.grid);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_mask_pairs(const MaskPairsLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
