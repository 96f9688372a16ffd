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
