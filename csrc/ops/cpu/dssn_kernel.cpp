// CPU kernels of the l1 splitting ops (OpenMP through at::parallel_for).
//
// dssn_split: the image is cut into chunks of kChunk elements; a work item is (image, chunk,
// group of kGroup evaluations). It loads the chunk of x and of the offset template once into
// small buffers and then writes one contiguous output run per evaluation, so every byte of
// the result is written once, in order, by a loop the compiler vectorizes; there is no
// [K, d] split-value or level intermediate.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../dssn_args.h"
#include "output.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FS_X86_CLONES 1
#define FS_ALWAYS_INLINE __attribute__((always_inline))
#else
#define FS_X86_CLONES 0
#define FS_ALWAYS_INLINE
#endif

namespace fastsmooth {
namespace {

constexpr int64_t kChunk = 1024;  // elements per chunk: x, v and one output run stay in L1
constexpr int64_t kGroup = 16;    // evaluations per work item

// One output run: the split values of elements [0, len) of a chunk at evaluation k.
template <bool General>
FS_ALWAYS_INLINE inline void split_run_body(const float* __restrict__ x, const int32_t* __restrict__ v,
                                            float* __restrict__ out, int64_t len, int32_t k, int32_t L,
                                            SplitParams p) {
  for (int64_t e = 0; e < len; ++e) {
    const float s = dssn_split_point(wrap_level(k, v[e], L), p.scale);
    if constexpr (General) {
      out[e] = split_value(x[e], s, SplitParams{p.scale, p.period, p.step, true});
    } else {
      out[e] = fdiv(fadd(x[e] > s ? 1.0f : 0.0f, fmin1(s)), 2.0f);
    }
  }
}

template <bool General>
void split_run_default(const float* x, const int32_t* v, float* out, int64_t len, int32_t k, int32_t L,
                       SplitParams p) {
  split_run_body<General>(x, v, out, len, k, L, p);
}

#if FS_X86_CLONES
// The same loop compiled for AVX2 (8-wide comparisons and divisions; no FMA, which is a separate
// target feature, so results are unchanged), chosen at run time.
template <bool General>
__attribute__((target("avx2"))) void split_run_avx2(const float* x, const int32_t* v, float* out, int64_t len,
                                                    int32_t k, int32_t L, SplitParams p) {
  split_run_body<General>(x, v, out, len, k, L, p);
}
#endif

template <bool General>
void split_run(const float* x, const int32_t* v, float* out, int64_t len, int32_t k, int32_t L, SplitParams p) {
#if FS_X86_CLONES
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return split_run_avx2<General>(x, v, out, len, k, L, p);
#endif
  split_run_default<General>(x, v, out, len, k, L, p);
}

template <typename scalar_t>
void store_run(const float* values, scalar_t* out, int64_t len) {
  for (int64_t e = 0; e < len; ++e) out[e] = static_cast<scalar_t>(values[e]);
}

template <typename scalar_t>
void dssn_split_typed(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& tmpl, int64_t levels,
                      const SplitParams& params, at::Tensor& out) {
  const int64_t B = x.size(0), d = x.size(1) * x.size(2) * x.size(3), K = offsets.size(1);
  const int64_t shared = offsets.size(0) == 1 ? 0 : 1;
  const int64_t chunks = (d + kChunk - 1) / kChunk, groups = (K + kGroup - 1) / kGroup;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int16_t* vp = tmpl.data_ptr<int16_t>();
  const int64_t* kp = offsets.data_ptr<int64_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int32_t L = static_cast<int32_t>(levels);

  at::parallel_for(0, B * chunks * groups, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float xb[kChunk];
    alignas(64) int32_t vb[kChunk];
    alignas(64) float ob[kChunk];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (chunks * groups), chunk = (item / groups) % chunks, group = item % groups;
      const int64_t e0 = chunk * kChunk, len = std::min(kChunk, d - e0);
      for (int64_t e = 0; e < len; ++e) {
        xb[e] = static_cast<float>(xp[b * d + e0 + e]);
        vb[e] = vp[e0 + e];
      }
      for (int64_t j = group * kGroup; j < std::min(K, (group + 1) * kGroup); ++j) {
        const int32_t k = static_cast<int32_t>(kp[b * shared * K + j]);
        scalar_t* o = op + (b * K + j) * d + e0;
        float* dst = std::is_same_v<scalar_t, float> ? reinterpret_cast<float*>(o) : ob;
        if (params.general) {
          split_run<true>(xb, vb, dst, len, k, L, params);
        } else {
          split_run<false>(xb, vb, dst, len, k, L, params);
        }
        if constexpr (!std::is_same_v<scalar_t, float>) store_run(ob, o, len);
      }
    }
  });
}

at::Tensor dssn_split_cpu(const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& tmpl, int64_t levels,
                          int64_t q, bool general) {
  const SplitParams params = check_dssn_args(x_in, offsets, tmpl, levels, q, general);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = empty_output(dssn_shape(x, offsets), x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_dssn_split_cpu",
                                  [&] { dssn_split_typed<scalar_t>(x, offsets, tmpl, levels, params, out); });
  return out;
}

// Noise ops: a work item is a range of samples (b * n + j); each sample is written in order,
// one Philox call per four consecutive elements.
template <typename scalar_t, uint32_t Stream>
void noise_typed(const at::Tensor& x, double lam, int64_t n, uint64_t seed, const SplitParams& params,
                 at::Tensor& out) {
  const int64_t B = x.size(0), d = x.size(1) * x.size(2) * x.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const float lam_f = static_cast<float>(lam);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, d));
  at::parallel_for(0, B * n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t sample = begin; sample < end; ++sample) {
      const scalar_t* xr = xp + (sample / n) * d;
      scalar_t* orow = op + sample * d;
      for (int64_t e0 = 0; e0 < d; e0 += 4) {
        const Philox4 words = noise_words(seed, e0, sample, Stream);
        for (int64_t e = e0; e < std::min(d, e0 + 4); ++e) {
          const float xv = static_cast<float>(xr[e]);
          const uint32_t w = words.v[e & 3];
          const float r = Stream == kSsnStream ? ssn_value(xv, w, params) : uniform_value(xv, w, params.period, lam_f);
          orow[e] = static_cast<scalar_t>(r);
        }
      }
    }
  });
}

template <uint32_t Stream>
at::Tensor noise_cpu(const at::Tensor& x_in, double lam, int64_t n, int64_t seed, const char* op) {
  const SplitParams params = check_noise_args(x_in, lam, n, op);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = empty_output(noise_shape(x, n), x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_noise_cpu", [&] {
    noise_typed<scalar_t, Stream>(x, lam, n, static_cast<uint64_t>(seed), params, out);
  });
  return out;
}

at::Tensor ssn_noise_cpu(const at::Tensor& x, double lam, int64_t n, int64_t seed) {
  return noise_cpu<kSsnStream>(x, lam, n, seed, "fastsmooth::ssn_noise");
}

at::Tensor uniform_noise_cpu(const at::Tensor& x, double lam, int64_t n, int64_t seed) {
  return noise_cpu<kUniformStream>(x, lam, n, seed, "fastsmooth::uniform_noise");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("dssn_split", &dssn_split_cpu);
  m.impl("ssn_noise", &ssn_noise_cpu);
  m.impl("uniform_noise", &uniform_noise_cpu);
}

}  // namespace fastsmooth
