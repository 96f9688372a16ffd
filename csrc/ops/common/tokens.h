// Element logic of the fused token-extraction op (smoothed ViTs, semantics.md §10), shared
// verbatim by the CPU and CUDA kernels.
//
// Output element (sample n = b * P + p, kept token k, e) with e = (c * p_h + dy) * p_w + dx:
// the pixel (c, h, w) of image b, h = (t / G_w) * p_h + dy, w = (t % G_w) * p_w + dx for the
// token t = tokens[m, p, k]. A retained pixel gives v = x, or (x - mean_c) / std_c; an ablated
// one gives the fill: 0, or (0 - mean_c) / std_c when the image is normalized after ablation
// (the authors' code). Arithmetic in acc_t, rounded once on store, as the PyTorch reference.
#pragma once
#include <stdint.h>

#include "ablation.h"
#include "macros.h"

namespace fastsmooth {

template <typename acc_t>
FS_HOST_DEVICE acc_t token_pixel(bool kept, acc_t x, const acc_t* mean, const acc_t* std, bool normalize_fill,
                                 int64_t c) {
  if (mean == nullptr) return kept ? x : acc_t(0);
  // Division (not multiplication by 1/std) keeps results bit-identical to the reference.
  if (kept) return (x - mean[c]) / std[c];
  return normalize_fill ? (acc_t(0) - mean[c]) / std[c] : acc_t(0);
}

// The geometry of one call: B images of C x H x W, P ablations, K kept tokens per ablation,
// patches of ph x pw on a grid G_w columns wide; E = C * ph * pw outputs per token.
struct TokenGrid {
  const int64_t* tokens;  // [M, P, K] row-major patch indices
  int64_t B, C, H, W, P, K, ph, pw, GW, E;

  FS_HOST_DEVICE int64_t samples() const { return B * P; }
  FS_HOST_DEVICE int64_t per_sample() const { return K * E; }
};

// Where output element `i` (0 <= i < K * E) of sample n reads from: the image b, ablation p,
// channel c and pixel (h, w). One decoding shared by every backend.
struct TokenSource {
  int64_t b, p, c, h, w;
};

FS_HOST_DEVICE TokenSource token_source(const TokenGrid& g, const KeepMasks& masks, int64_t n, int64_t i) {
  const int64_t b = n / g.P, p = n % g.P;
  const int64_t k = i / g.E, e = i % g.E;
  const int64_t c = e / (g.ph * g.pw), dy = (e / g.pw) % g.ph, dx = e % g.pw;
  const int64_t t = g.tokens[masks.slot(b, p) * g.K + k];
  return {b, p, c, (t / g.GW) * g.ph + dy, (t % g.GW) * g.pw + dx};
}

}  // namespace fastsmooth
