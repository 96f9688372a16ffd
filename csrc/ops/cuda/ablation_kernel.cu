// CUDA kernel of fastsmooth::ablate. A thread owns one input element and a chunk of
// consecutive ablations (plan_ablate in common/launch_plan.h): it reads and encodes the
// element once and writes its 2 * chunk outputs, so one image still fills the GPU (block
// CIFAR-10: 3072 elements x 1024 ablations) and each input element is read once per chunk.
//
// Blocks are numbered (chunk, pixel tile), tiles fastest. Within a tile, consecutive threads
// hold the elements whose outputs are consecutive in memory: consecutive columns for an NCHW
// output, consecutive channels of consecutive pixels for channels-last (a warp's value and
// complement stores then cover one contiguous span together), so every store is coalesced.
#include "../common/launch_plan.h"
#include "convert.cuh"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void ablate_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                              const typename Convert<scalar_t>::acc_t* __restrict__ mean,
                              const typename Convert<scalar_t>::acc_t* __restrict__ std, KeepMasks masks, int64_t B,
                              int64_t C, bool channels_last, int64_t chunk) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t H = masks.H, W = masks.W, P = masks.P, plane = H * W;
  const int64_t total = B * C * plane;
  const int64_t tiles = ceil_div(total, int64_t(blockDim.x)), chunks = ceil_div(P, chunk);
  for (int64_t unit = blockIdx.x; unit < tiles * chunks; unit += gridDim.x) {
    const int64_t i = (unit % tiles) * blockDim.x + threadIdx.x;
    if (i >= total) continue;
    // i enumerates (b, c, pixel) for NCHW and (b, pixel, c) for channels-last.
    int64_t b, c, pixel;
    if (channels_last) {
      c = i % C, pixel = (i / C) % plane, b = i / (C * plane);
    } else {
      pixel = i % plane, c = (i / plane) % C, b = i / (C * plane);
    }
    const int64_t h = pixel / W, w = pixel % W;
    const EncodedPair<acc_t> e = encode_element<acc_t>(Convert<scalar_t>::load(x[(b * C + c) * plane + pixel]), mean, std, c);
    const scalar_t v = Convert<scalar_t>::store(e.value), k = Convert<scalar_t>::store(e.complement);
    const scalar_t zero = Convert<scalar_t>::store(acc_t(0));
    const int64_t p0 = (unit / tiles) * chunk, p1 = min64(p0 + chunk, P);
    for (int64_t p = p0; p < p1; ++p) {
      const bool keep = masks.kept(b, p, h, w);
      out[ablated_offset(b, p, c, h, w, P, C, H, W, channels_last)] = keep ? v : zero;
      out[ablated_offset(b, p, C + c, h, w, P, C, H, W, channels_last)] = keep ? k : zero;
    }
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const AblateLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const LaunchPlan plan = plan_ablate(a.B, a.C, a.masks.H, a.masks.W, a.masks.P);
  if (plan.work == 0) return cudaSuccess;
  ablate_kernel<scalar_t><<<static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.block), 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<const acc_t*>(a.mean),
      static_cast<const acc_t*>(a.std), a.masks, a.B, a.C, a.channels_last, plan.chunk);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_ablate(const AblateLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
