// CUDA kernel of fastsmooth::ablate: one thread per input element, which it reads once and
// encodes once, then writes its 2 * P outputs. Consecutive threads hold consecutive columns,
// so every store of a warp is coalesced (for an NCHW output; channels-last spaces them 2C
// elements apart).
#include <algorithm>

#include "convert.cuh"
#include "launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void ablate_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                              const typename Convert<scalar_t>::acc_t* __restrict__ mean,
                              const typename Convert<scalar_t>::acc_t* __restrict__ std, KeepMasks masks, int64_t B,
                              int64_t C, bool channels_last) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t H = masks.H, W = masks.W, P = masks.P;
  const int64_t total = B * C * H * W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = i % W, h = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
    const EncodedPair<acc_t> e = encode_element<acc_t>(Convert<scalar_t>::load(x[i]), mean, std, c);
    const scalar_t v = Convert<scalar_t>::store(e.value), k = Convert<scalar_t>::store(e.complement);
    const scalar_t zero = Convert<scalar_t>::store(acc_t(0));
    for (int64_t p = 0; p < P; ++p) {
      const bool keep = masks.kept(b, p, h, w);
      out[ablated_offset(b, p, c, h, w, P, C, H, W, channels_last)] = keep ? v : zero;
      out[ablated_offset(b, p, C + c, h, w, P, C, H, W, channels_last)] = keep ? k : zero;
    }
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const AblateLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t total = a.B * a.C * a.masks.H * a.masks.W;
  if (total == 0 || a.masks.P == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
  ablate_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<const acc_t*>(a.mean),
      static_cast<const acc_t*>(a.std), a.masks, a.B, a.C, a.channels_last);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_ablate(const AblateLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
