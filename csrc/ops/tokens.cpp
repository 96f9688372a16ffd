// Schemas of the fused token-extraction op of smoothed ViTs. Kernels: cpu/tokens_kernel.cpp,
// cuda/tokens_cuda.cpp; element logic in common/tokens.h.
//
// `ablate_tokens` goes from an image batch straight to the pixels of the tokens each ablation
// keeps, [B * P, K, C * ph * pw] (image-major samples, each token a patch flattened as
// (c, dy, dx): the layout of the patch-embedding weight, so the embedding is one matmul).
// Ablation (rows / cols / tiles masks as in `ablate`), normalization and patch extraction run
// in one pass; no full-size ablated image is written.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def(
      "ablate_tokens(Tensor x, Tensor rows, Tensor cols, Tensor? tiles, int tile_h, int tile_w, Tensor tokens, "
      "int patch_h, int patch_w, Tensor? mean, Tensor? std, bool normalize_fill) -> Tensor");
  m.def(
      "ablate_tokens_out(Tensor x, Tensor rows, Tensor cols, Tensor? tiles, int tile_h, int tile_w, Tensor tokens, "
      "int patch_h, int patch_w, Tensor? mean, Tensor? std, bool normalize_fill, Tensor(a!) out) -> ()");
}
