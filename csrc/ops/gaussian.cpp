// Schemas of the fused Gaussian-noise op. Kernels: cpu/gaussian_kernel.cpp, cuda/gaussian_cuda.cpp.
//
// `gaussian_noise` writes noised copies of a batch of images in one pass: the samples are the
// flat range [start, start + count) of the image-major (B * n) grid, sample s being copy
// j = s % n of image b = s / n, i.e. x[b] + sigma * z with z ~ N(0, I) drawn from the
// counter-based Philox stream of `seed` (see common/gaussian.h for the counters). Because the
// noise of a sample depends only on (seed, b, j, element), a certification may produce its
// samples in chunks of any size and gets the same noise.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastsmooth, m) {
  m.def("gaussian_noise(Tensor x, float sigma, int n, int seed, int start, int count) -> Tensor");
  m.def(
      "gaussian_noise_out(Tensor x, float sigma, int n, int seed, int start, int count, Tensor(a!) out) -> ()");
}
