// Element logic of the fused double-masking op (PatchCleanser, semantics.md §13), shared
// verbatim by the CPU and CUDA kernels.
//
// Output row r is image images[r] under the two masks of rects[r] = {(top, left, bottom,
// right) x 2} (half-open rectangles): pixel (h, w) is masked when it lies in either rectangle,
// i.e. outside the kept set m_i AND m_j. A kept pixel gives v = x, or (x - mean_c) / std_c; a
// masked one gives the fill value. Arithmetic in acc_t, rounded once on store, as the
// PyTorch reference.
#pragma once
#include <stdint.h>

#include "macros.h"

namespace fastsmooth {

// One call's geometry: R output rows of C x H x W read from N images.
struct PairGrid {
  const int64_t* images;  // [R] image of each row
  const int64_t* rects;   // [R, 2, 4] (top, left, bottom, right) of each row's two masks
  int64_t N, R, C, H, W;
  bool channels_last;  // out is [R, H, W, C] in memory

  FS_HOST_DEVICE int64_t per_row() const { return C * H * W; }
};

FS_HOST_DEVICE bool in_rect(const int64_t* r, int64_t h, int64_t w) {
  return h >= r[0] && h < r[2] && w >= r[1] && w < r[3];
}

// Whether pixel (h, w) of row `row` is covered by either of its two masks.
FS_HOST_DEVICE bool pair_masked(const PairGrid& g, int64_t row, int64_t h, int64_t w) {
  const int64_t* r = g.rects + row * 8;
  return in_rect(r, h, w) || in_rect(r + 4, h, w);
}

// The masked columns [lo, hi) of rectangle r on image line h of width W (lo == hi: none). The
// CPU kernel works line by line on these spans; in_rect is the same predicate per pixel.
FS_HOST_DEVICE void rect_span(const int64_t* r, int64_t h, int64_t W, int64_t* lo, int64_t* hi) {
  const bool on_line = h >= r[0] && h < r[2];
  const int64_t a = r[1] < 0 ? 0 : (r[1] > W ? W : r[1]);
  const int64_t b = r[3] < a ? a : (r[3] > W ? W : r[3]);
  *lo = on_line ? a : 0;
  *hi = on_line ? b : 0;
}

// The union of the two masks' spans on line h as at most two disjoint, increasing spans
// (returns how many): the columns pair_masked reports masked, and no others.
FS_HOST_DEVICE int pair_spans(const PairGrid& g, int64_t row, int64_t h, int64_t lo[2], int64_t hi[2]) {
  const int64_t* r = g.rects + row * 8;
  int64_t a0, a1, b0, b1;
  rect_span(r, h, g.W, &a0, &a1);
  rect_span(r + 4, h, g.W, &b0, &b1);
  if (a0 == a1) { a0 = b0; a1 = b1; b0 = b1 = 0; }
  if (a0 == a1) return 0;
  if (b0 == b1) { lo[0] = a0; hi[0] = a1; return 1; }
  if (b0 < a0) { int64_t t0 = a0, t1 = a1; a0 = b0; a1 = b1; b0 = t0; b1 = t1; }
  if (b0 <= a1) { lo[0] = a0; hi[0] = a1 > b1 ? a1 : b1; return 1; }
  lo[0] = a0; hi[0] = a1; lo[1] = b0; hi[1] = b1;
  return 2;
}

template <typename acc_t>
FS_HOST_DEVICE acc_t pair_pixel(bool masked, acc_t x, const acc_t* mean, const acc_t* std, acc_t fill, int64_t c) {
  if (masked) return fill;
  // Division (not multiplication by 1/std) keeps results bit-identical to the reference.
  return mean == nullptr ? x : (x - mean[c]) / std[c];
}

// Where element i (0 <= i < C * H * W, in the output's memory order) of a row reads from.
struct PairSource {
  int64_t c, h, w;
};

FS_HOST_DEVICE PairSource pair_source(const PairGrid& g, int64_t i) {
  if (g.channels_last) return {i % g.C, i / (g.C * g.W), (i / g.C) % g.W};
  return {i / (g.H * g.W), (i / g.W) % g.H, i % g.W};
}

}  // namespace fastsmooth
