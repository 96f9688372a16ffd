// Element logic of the fused Gaussian-noise op, shared verbatim by the CPU and CUDA kernels.
//
// Counters (semantics.md §5; the same on every backend, see fastsmooth/ops/gaussian/reference.py):
// the flat element index e of one image is split into quads q = e / 4; Philox words
//   philox4x32(seed, c0 = q, c1 = copy j, c2 = image b, c3 = kGaussianStream)
// give two Box-Muller pairs, (w0, w1) -> elements 4q, 4q + 1 and (w2, w3) -> 4q + 2, 4q + 3:
//   r = sqrt(-2 log u1), t = 2 pi u2, z_even = r cos t, z_odd = r sin t,
// with u1 = uniform_open0(w0) in (0, 1] (finite logarithm) and u2 = uniform_open1(w1) in [0, 1).
// The uniforms are bit-identical on every backend; log / cos / sin of libm, CUDA and Triton
// differ by a few ulps, so the normals agree to within a few ulps, not bit for bit.
#pragma once
#include <math.h>
#include <stdint.h>

#include "macros.h"
#include "philox.h"

namespace fastsmooth {

// The fourth counter word: keeps this op's stream apart from other ops drawing from the same seed.
constexpr uint32_t kGaussianStream = 0x6A09E667u;

FS_HOST_DEVICE float fs_log(float v) { return ::logf(v); }
FS_HOST_DEVICE double fs_log(double v) { return ::log(v); }
FS_HOST_DEVICE float fs_sqrt(float v) { return ::sqrtf(v); }
FS_HOST_DEVICE double fs_sqrt(double v) { return ::sqrt(v); }
FS_HOST_DEVICE float fs_cos(float v) { return ::cosf(v); }
FS_HOST_DEVICE double fs_cos(double v) { return ::cos(v); }
FS_HOST_DEVICE float fs_sin(float v) { return ::sinf(v); }
FS_HOST_DEVICE double fs_sin(double v) { return ::sin(v); }

template <typename acc_t>
struct Normal4 {
  acc_t z[4];
};

// Box-Muller on one pair of words. The uniforms are float32 on every backend; the transform
// runs in acc_t (float, or double for float64 images).
template <typename acc_t>
FS_HOST_DEVICE void box_muller(uint32_t w_radius, uint32_t w_angle, acc_t& even, acc_t& odd) {
  const acc_t u1 = static_cast<acc_t>(uniform_open0(w_radius));
  const acc_t u2 = static_cast<acc_t>(uniform_open1(w_angle));
  const acc_t r = fs_sqrt(acc_t(-2) * fs_log(u1));
  const acc_t t = static_cast<acc_t>(6.283185307179586) * u2;
  even = r * fs_cos(t);
  odd = r * fs_sin(t);
}

// The four standard normals of elements 4q .. 4q + 3 of copy j of image b.
template <typename acc_t>
FS_HOST_DEVICE Normal4<acc_t> gaussian_quad(uint64_t seed, int64_t q, int64_t j, int64_t b) {
  const Philox4 w = philox4x32(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(j), static_cast<uint32_t>(b),
                               kGaussianStream);
  Normal4<acc_t> out;
  box_muller<acc_t>(w.v[0], w.v[1], out.z[0], out.z[1]);
  box_muller<acc_t>(w.v[2], w.v[3], out.z[2], out.z[3]);
  return out;
}

// Geometry of one call: image elements D = C * H * W, Q = ceil(D / 4) quads per sample.
struct NoiseGrid {
  int64_t D, Q, n, start, count;
  uint64_t seed;
};

}  // namespace fastsmooth
