// CUDA kernels of the l1 splitting ops.
//
// dssn_split: a thread owns one input element, which it reads once with its offset v, and
// writes its split value for a group of evaluations (blockIdx.y picks the group, so a single
// image still fills the GPU; plan_dssn_split in common/launch_plan.h sizes the groups). Consecutive threads hold consecutive elements: every
// store of a warp is coalesced. Arithmetic goes through the _rn intrinsics of common/dssn.h
// (no FMA contraction), so results equal the CPU kernel and the reference bit for bit.
#include "../common/launch_plan.h"
#include "convert.cuh"
#include "dssn_launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void dssn_split_kernel(const scalar_t* __restrict__ x, const int16_t* __restrict__ tmpl,
                                  const int64_t* __restrict__ ks, scalar_t* __restrict__ out, int64_t B, int64_t d,
                                  int64_t K, bool per_image, int32_t L, SplitParams p, int64_t group) {
  const int64_t total = B * d;
  const int64_t j0 = int64_t(blockIdx.y) * group, j1 = j0 + group < K ? j0 + group : K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / d, e = i % d;
    const float xv = Convert<scalar_t>::load(x[i]);
    const int32_t v = tmpl[e];
    const int64_t* kb = ks + (per_image ? b * K : 0);
    for (int64_t j = j0; j < j1; ++j) {
      const float s = dssn_split_point(wrap_level(static_cast<int32_t>(kb[j]), v, L), p.scale);
      out[(b * K + j) * d + e] = Convert<scalar_t>::store(split_value(xv, s, p));
    }
  }
}

// One thread per group of four consecutive elements of one sample: one Philox call.
template <typename scalar_t>
__global__ void noise_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t d, int64_t n,
                             int64_t total_groups, uint64_t seed, float lam, SplitParams p, bool ssn) {
  const int64_t groups = (d + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < total_groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t sample = g / groups, e0 = (g % groups) * 4;
    const Philox4 words = noise_words(seed, e0, sample, ssn ? kSsnStream : kUniformStream);
    const scalar_t* xr = x + (sample / n) * d;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t e = e0 + r;
      if (e < d) {
        const float xv = Convert<scalar_t>::load(xr[e]);
        const float y = ssn ? ssn_value(xv, words.v[r], p) : uniform_value(xv, words.v[r], p.period, lam);
        out[sample * d + e] = Convert<scalar_t>::store(y);
      }
    }
  }
}

template <typename scalar_t>
cudaError_t dssn_typed(const DssnLaunch& a, cudaStream_t stream) {
  const LaunchPlan plan = plan_dssn_split(a.B, a.d, a.K);
  if (plan.work == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  dssn_split_kernel<scalar_t><<<grid, static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), a.tmpl, a.ks, static_cast<scalar_t*>(a.out), a.B, a.d, a.K, a.per_image,
      a.levels, a.params, plan.chunk);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t noise_typed(const NoiseLaunch& a, cudaStream_t stream) {
  const int64_t total_groups = a.B * a.n * ((a.d + 3) / 4);
  const LaunchPlan plan = plan_noise(a.B, a.d, a.n);
  if (plan.work == 0) return cudaSuccess;
  noise_kernel<scalar_t><<<static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), a.d, a.n, total_groups, a.seed, a.lam,
      a.params, a.ssn);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dssn_split(const DssnLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return dssn_typed<decltype(zero)>(args, stream); });
}

cudaError_t launch_noise(const NoiseLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return noise_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
