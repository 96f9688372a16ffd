// Schemas of the fused double-masking op of PatchCleanser. Kernels: cpu/mask_pairs_kernel.cpp,
// cuda/mask_pairs_cuda.cpp; element logic in common/mask_pairs.h.
//
// `mask_pairs` writes row r = image images[r] of x with the pixels of two rectangles (the
// masks m_i and m_j of one pair) set to `fill`, kept pixels optionally normalized: the
// model inputs of many mask pairs of many images in one pass, without full-size boolean masks.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def("mask_pairs(Tensor x, Tensor images, Tensor rects, float fill, Tensor? mean, Tensor? std) -> Tensor");
  m.def(
      "mask_pairs_out(Tensor x, Tensor images, Tensor rects, float fill, Tensor? mean, Tensor? std, "
      "Tensor(a!) out) -> ()");
}
