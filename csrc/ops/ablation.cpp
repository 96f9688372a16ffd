// Schemas of the structured-ablation ops. Kernels: cpu/ablation_kernel.cpp, cuda/ablation_cuda.cpp.
//
// `ablate` is the one fused kernel behind encode, band, block, multi-band and multi-block
// ablation: the Python layer describes which pixels each ablation retains with small masks
// (see fastsmooth/ops/ablation/masks.py) and the kernel reads every input element once and
// writes all of its 2 * P outputs.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def(
      "ablate(Tensor x, Tensor rows, Tensor cols, Tensor? tiles, int tile_h, int tile_w, "
      "Tensor? mean, Tensor? std) -> Tensor");
  m.def(
      "ablate_out(Tensor x, Tensor rows, Tensor cols, Tensor? tiles, int tile_h, int tile_w, "
      "Tensor? mean, Tensor? std, Tensor(a!) out) -> ()");
}
