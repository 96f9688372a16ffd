// Schemas of the l0 (pixel) ablation ops. Kernels: cpu/pixel_ablation_kernel.cpp,
// cuda/pixel_ablation_cuda.cpp; the key scheme is in common/pixel_ablation.h.
//
// `ablate_pixels` samples and encodes in one pass: output sample b * n + j keeps the `keep`
// pixels of smallest random key of sample id b * n + j (or j when `shared`, the training mode
// where one subset serves the whole minibatch) and is NULL elsewhere.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def("ablate_pixels(Tensor x, int keep, int n, int seed, bool shared, Tensor? mean, Tensor? std) -> Tensor");
  m.def(
      "ablate_pixels_out(Tensor x, int keep, int n, int seed, bool shared, Tensor? mean, Tensor? std, "
      "Tensor(a!) out) -> ()");
}
