// Element logic of the structured-ablation ops, shared verbatim by the CPU and CUDA kernels.
//
// Semantics (semantics.md §0): each input element x of channel c becomes two outputs,
// channel c holds v = x, or (x - mean_c) / std_c when normalizing, and channel C + c holds
// 1 - v. Both are zero (NULL) where the ablation does not retain the pixel. Arithmetic is
// in acc_t (float for half / bfloat16 / float, double for double) and rounded once on store,
// exactly as the PyTorch reference does.
#pragma once
#include <stdint.h>
#include "macros.h"

namespace fastsmooth {

template <typename acc_t>
struct EncodedPair {
  acc_t value;
  acc_t complement;
};

template <typename acc_t>
FS_HOST_DEVICE EncodedPair<acc_t> encode_element(acc_t x, const acc_t* mean, const acc_t* std, int64_t channel) {
  // Division (not multiplication by 1/std) keeps results bit-identical to the reference.
  acc_t v = (mean != nullptr) ? (x - mean[channel]) / std[channel] : x;
  return {v, acc_t(1) - v};
}

// Where the retained set of one ablation is described: a row mask, a column mask and, for
// multi-block ablations, a table of retained tiles. Masks hold 0 / 1 bytes. The leading index
// `m` is the image (per-image training ablations) or 0 (ablations shared by all images).
struct KeepMasks {
  const uint8_t* rows;   // [M, P, H]
  const uint8_t* cols;   // [M, P, W]
  const uint8_t* tiles;  // [M, P, TH, TW] or nullptr
  int64_t M, P, H, W;
  int64_t TH, TW, tile_h, tile_w;

  FS_HOST_DEVICE int64_t slot(int64_t m, int64_t p) const { return (M == 1 ? 0 : m) * P + p; }

  FS_HOST_DEVICE bool row_kept(int64_t m, int64_t p, int64_t h) const { return rows[slot(m, p) * H + h] != 0; }

  FS_HOST_DEVICE bool tile_kept(int64_t m, int64_t p, int64_t h, int64_t w) const {
    if (tiles == nullptr) return true;
    const int64_t th = h / tile_h, tw = w / tile_w;
    // Pixels past the last whole tile belong to no tile and are never retained.
    if (th >= TH || tw >= TW) return false;
    return tiles[(slot(m, p) * TH + th) * TW + tw] != 0;
  }

  FS_HOST_DEVICE bool kept(int64_t m, int64_t p, int64_t h, int64_t w) const {
    return row_kept(m, p, h) && cols[slot(m, p) * W + w] != 0 && tile_kept(m, p, h, w);
  }
};

// Flat offset of output element (image b, ablation p, channel ch, h, w) in the image-major
// (B * P, 2C, H, W) batch, stored NCHW or channels-last (NHWC in memory).
FS_HOST_DEVICE int64_t ablated_offset(int64_t b, int64_t p, int64_t ch, int64_t h, int64_t w,
                                      int64_t P, int64_t C, int64_t H, int64_t W, bool channels_last) {
  const int64_t n = b * P + p;
  return channels_last ? ((n * H + h) * W + w) * 2 * C + ch : ((n * 2 * C + ch) * H + h) * W + w;
}

}  // namespace fastsmooth
