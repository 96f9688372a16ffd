// Schemas of the l1 splitting ops. Kernels: cpu/dssn_kernel.cpp, cuda/dssn_cuda.cpp.
//
// dssn_split is the fused DSSN kernel: it reads each element of x and of the offset template
// once and writes the element's split value for every evaluation k in `offsets`
// (offsets is [M, K] with M = 1, shared by all images, or M = B, per image), image-major.
// ssn_noise / uniform_noise draw n noised copies of every image in one pass from Philox.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def("dssn_split(Tensor x, Tensor offsets, Tensor template, int levels, int q, bool general) -> Tensor");
  m.def("ssn_noise(Tensor x, float lam, int n, int seed) -> Tensor");
  m.def("uniform_noise(Tensor x, float lam, int n, int seed) -> Tensor");
}
