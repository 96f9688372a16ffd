// CUDA kernel of fastsmooth::ablate_pixels: one thread block per output sample, of 256
// threads, or 1024 when the samples are too few to fill the GPU otherwise (plan_ablate_pixels
// in common/launch_plan.h).
//
// The block finds the keep-th smallest of the sample's d pixel keys by most significant digit
// first radix selection (8-bit digits, each pass a 256-bin shared-memory histogram of the keys
// that share the digits chosen so far, until the chosen bin holds one key), then writes the
// encoded image under the mask key <= threshold, consecutive threads on consecutive pixels
// (coalesced). Keys live in shared memory when they fit (d <= kCachedPixels) and are
// recomputed from Philox otherwise: that is cheaper than a trip through global memory and
// keeps ImageNet-size images on one block.
#include <algorithm>

#include "../common/ablation.h"
#include "../common/launch_plan.h"
#include "../common/pixel_ablation.h"
#include "convert.cuh"
#include "pixel_ablation_launchers.h"

namespace fastsmooth {
namespace cuda {
namespace {

constexpr int64_t kCachedPixels = 4096;  // 32 KiB of keys

struct SampleKeys {
  const uint64_t* cached;  // [d] or nullptr
  uint64_t seed;
  int64_t sample, d;
  int index_bits;

  __device__ uint64_t at(int64_t p) const {
    if (cached != nullptr) return cached[p];
    const KeyPair pair = pixel_key_pair(seed, sample, p / 2, index_bits);
    return (p & 1) ? pair.odd : pair.even;
  }
};

// Calls f(key) for every key of the sample, the block's threads striding over pixel pairs.
template <typename F>
__device__ void for_each_key(const SampleKeys& keys, F f) {
  for (int64_t q = threadIdx.x; 2 * q < keys.d; q += blockDim.x) {
    const bool has_odd = 2 * q + 1 < keys.d;
    if (keys.cached != nullptr) {
      f(keys.cached[2 * q]);
      if (has_odd) f(keys.cached[2 * q + 1]);
    } else {
      const KeyPair pair = pixel_key_pair(keys.seed, keys.sample, q, keys.index_bits);
      f(pair.even);
      if (has_odd) f(pair.odd);
    }
  }
}

struct SelectScratch {
  unsigned int hist[256];
  unsigned long long threshold;
  uint64_t prefix;
  int64_t rank, count;
};

// The keep-th smallest key (1 <= keep < d); every thread of the block returns it. Each pass
// fixes one 8-bit digit; the loop stops as soon as the chosen bin holds a single key (after
// about log256(d) + 1 passes) and a last pass picks that key out.
__device__ uint64_t select_threshold(const SampleKeys& keys, int64_t keep, SelectScratch& sh) {
  uint64_t prefix = 0;
  int64_t rank = keep;     // 1-based rank still to find among the keys matching prefix
  int64_t count = keys.d;  // keys matching prefix on the digits fixed so far
  int last = 64;           // lowest fixed bit
  while (count > 1 && last > 0) {
    const int shift = last - 8;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sh.hist[i] = 0;
    __syncthreads();
    const uint64_t high = last == 64 ? 0 : (~uint64_t(0) << last);
    for_each_key(keys, [&](uint64_t k) {
      if ((k & high) == prefix) atomicAdd(&sh.hist[(k >> shift) & 255], 1u);
    });
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t below = 0;
      int digit = 0;
      for (; digit < 255; ++digit) {
        if (below + sh.hist[digit] >= rank) break;
        below += sh.hist[digit];
      }
      sh.prefix = prefix | (uint64_t(digit) << shift);
      sh.rank = rank - below;
      sh.count = sh.hist[digit];
    }
    __syncthreads();
    prefix = sh.prefix;
    rank = sh.rank;
    count = sh.count;
    last = shift;
    // The next pass rewrites sh.prefix only after its histogram barrier, which every thread
    // reaches after reading it here, so no further barrier is needed.
  }
  if (threadIdx.x == 0) sh.threshold = ~0ull;
  __syncthreads();
  const uint64_t high = last == 64 ? 0 : (~uint64_t(0) << last);
  for_each_key(keys, [&](uint64_t k) {
    if ((k & high) == prefix) atomicMin(&sh.threshold, static_cast<unsigned long long>(k));
  });
  __syncthreads();
  return sh.threshold;
}

// Launch bounds: the plan may ask for 1024 threads per block, so at most 64 registers per thread
// (nvcc 13 gives this kernel 41-56 across dtypes for sm_80 / sm_90; without the bound, 48 for sm_90).
template <typename scalar_t>
__global__ void __launch_bounds__(kPixelMaxThreads)
    ablate_pixels_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                     const typename Convert<scalar_t>::acc_t* __restrict__ mean,
                                     const typename Convert<scalar_t>::acc_t* __restrict__ std, uint64_t seed,
                                     int64_t C, int64_t d, int64_t n, int64_t keep, bool shared, int index_bits,
                                     bool cache) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  extern __shared__ uint64_t cached[];
  __shared__ SelectScratch scratch;
  const int64_t s_out = blockIdx.x;
  const int64_t b = s_out / n, j = s_out % n;
  const SampleKeys keys{cache ? cached : nullptr, seed, pixel_sample_id(b, j, n, shared), d, index_bits};
  if (cache) {
    for (int64_t q = threadIdx.x; 2 * q < d; q += blockDim.x) {
      const KeyPair pair = pixel_key_pair(seed, keys.sample, q, index_bits);
      cached[2 * q] = pair.even;
      if (2 * q + 1 < d) cached[2 * q + 1] = pair.odd;
    }
    __syncthreads();
  }
  const bool select = keep > 0 && keep < d;
  const uint64_t threshold = select ? select_threshold(keys, keep, scratch) : 0;
  const scalar_t zero = Convert<scalar_t>::store(acc_t(0));
  const scalar_t* xb = x + b * C * d;
  scalar_t* o = out + s_out * 2 * C * d;
  for (int64_t p = threadIdx.x; p < d; p += blockDim.x) {
    const bool kept = select ? keys.at(p) <= threshold : keep == d;
    for (int64_t c = 0; c < C; ++c) {
      if (kept) {
        const EncodedPair<acc_t> e = encode_element<acc_t>(Convert<scalar_t>::load(xb[c * d + p]), mean, std, c);
        o[c * d + p] = Convert<scalar_t>::store(e.value);
        o[(C + c) * d + p] = Convert<scalar_t>::store(e.complement);
      } else {
        o[c * d + p] = zero;
        o[(C + c) * d + p] = zero;
      }
    }
  }
}

template <typename scalar_t>
cudaError_t launch_typed(const AblatePixelsLaunch& a, cudaStream_t stream) {
  using acc_t = typename Convert<scalar_t>::acc_t;
  const int64_t samples = a.B * a.n;
  const LaunchPlan plan = plan_ablate_pixels(samples, a.C, a.d);
  if (plan.work == 0) return cudaSuccess;
  if (samples > kMaxGridX) return cudaErrorInvalidConfiguration;
  const bool cache = a.d <= kCachedPixels && a.keep > 0 && a.keep < a.d;
  const size_t smem = cache ? size_t(a.d) * sizeof(uint64_t) : 0;
  ablate_pixels_kernel<scalar_t><<<static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.block), smem, stream>>>(
      static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), static_cast<const acc_t*>(a.mean),
      static_cast<const acc_t*>(a.std), a.seed, a.C, a.d, a.n, a.keep, a.shared, pixel_index_bits(a.d), cache);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_ablate_pixels(const AblatePixelsLaunch& args, cudaStream_t stream) {
  return with_float_dtype(args.dtype, [&](auto zero) { return launch_typed<decltype(zero)>(args, stream); });
}

}  // namespace cuda
}  // namespace fastsmooth
