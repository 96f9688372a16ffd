// Element logic of the l1 splitting ops (DSSN, SSN, uniform noise), shared verbatim by the CPU
// and CUDA kernels (semantics.md §3-4).
//
// Every result must be bit-identical to the float32 PyTorch reference
// (fastsmooth/ops/splitting/reference.py), so each arithmetic step is one IEEE float32
// operation in the reference's order. Compilers may fuse a*b+c into one FMA (nvcc does by
// default, GCC does on FMA-capable targets), which rounds once instead of twice: the f*
// helpers below forbid that on the device with the _rn intrinsics, and the pragmas forbid it
// on the host.
#pragma once
#include <math.h>
#include <stdint.h>

#include "macros.h"
#include "philox.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__) && !defined(__CUDACC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace fastsmooth {

#if defined(__CUDA_ARCH__)
FS_HOST_DEVICE float fmul(float a, float b) { return __fmul_rn(a, b); }
FS_HOST_DEVICE float fadd(float a, float b) { return __fadd_rn(a, b); }
FS_HOST_DEVICE float fsub(float a, float b) { return __fsub_rn(a, b); }
FS_HOST_DEVICE float fdiv(float a, float b) { return __fdiv_rn(a, b); }
#else
FS_HOST_DEVICE float fmul(float a, float b) { return a * b; }
FS_HOST_DEVICE float fadd(float a, float b) { return a + b; }
FS_HOST_DEVICE float fsub(float a, float b) { return a - b; }
FS_HOST_DEVICE float fdiv(float a, float b) { return a / b; }
#endif

FS_HOST_DEVICE float fmin1(float a) { return a < 1.0f ? a : 1.0f; }
FS_HOST_DEVICE float fmax0(float a) { return a > 0.0f ? a : 0.0f; }

// The splitting formula for one element x and split value s (semantics.md §3).
//   simple  (lambda >= 0.5): ((x > s) + min(s, 1)) / 2
//   general (lambda <  0.5): t = ceil(scale * (x - s) / period) * period / scale + s
//                            (min(t, 1) + max(t - step, 0)) / 2
// For DSSN scale = q, period = L and step = L / q (float32); for SSN scale = 1, period = step
// = 2 lambda, so that the same code evaluates both papers' formulas op for op.
struct SplitParams {
  float scale, period, step;
  bool general;
};

FS_HOST_DEVICE float split_value(float x, float s, const SplitParams& p) {
  if (!p.general) return fdiv(fadd(x > s ? 1.0f : 0.0f, fmin1(s)), 2.0f);
  const float u = fdiv(fmul(p.scale, fsub(x, s)), p.period);
  const float t = fadd(fdiv(fmul(ceilf(u), p.period), p.scale), s);
  return fdiv(fadd(fmin1(t), fmax0(fsub(t, p.step))), 2.0f);
}

// DSSN split value of offset level m = (k + v_i) mod L: (m + 0.5) / q.
FS_HOST_DEVICE float dssn_split_point(int32_t m, float q) { return fdiv(fadd(static_cast<float>(m), 0.5f), q); }

// (k + v) mod L for k, v in [0, L): one conditional subtraction instead of a division.
FS_HOST_DEVICE int32_t wrap_level(int32_t k, int32_t v, int32_t L) {
  const int32_t m = k + v;
  return m >= L ? m - L : m;
}

// Random words of the noise ops. Element i of sample `sample` (global index b * n + j) uses
// word i % 4 of Philox counter (i / 4, sample low word, stream, sample high word).
enum NoiseStream : uint32_t { kSsnStream = 1u, kUniformStream = 2u };

FS_HOST_DEVICE Philox4 noise_words(uint64_t seed, int64_t element, int64_t sample, uint32_t stream) {
  return philox4x32(seed, static_cast<uint32_t>(element >> 2), static_cast<uint32_t>(sample), stream,
                    static_cast<uint32_t>(static_cast<uint64_t>(sample) >> 32));
}

// SSN: s = u * 2 lambda with u uniform in [0, 1), then the split formula (scale 1, period 2 lambda).
FS_HOST_DEVICE float ssn_value(float x, uint32_t word, const SplitParams& p) {
  return split_value(x, fmul(uniform_open1(word), p.period), p);
}

// Uniform additive noise: x + (u * 2 lambda - lambda).
FS_HOST_DEVICE float uniform_value(float x, uint32_t word, float two_lam, float lam) {
  return fadd(x, fsub(fmul(uniform_open1(word), two_lam), lam));
}

}  // namespace fastsmooth
