// CUDA registration of fastsmooth::gaussian_noise; the kernel itself is in gaussian_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../gaussian_args.h"
#include "dtype.h"
#include "gaussian_launchers.h"

namespace fastsmooth {
namespace {

void gaussian_noise_out_cuda(const at::Tensor& x_in, double sigma, int64_t n, int64_t seed, int64_t start,
                             int64_t count, at::Tensor& out) {
  const NoiseGrid grid = check_gaussian_args(x_in, sigma, n, seed, start, count);
  check_noise_out(out, x_in, count);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::GaussianLaunch launch{x.data_ptr(), out.data_ptr(), sigma, grid,
                                    cuda::dtype_code(x.scalar_type(), "fastsmooth::gaussian_noise")};
  const cudaError_t err = cuda::launch_gaussian_noise(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::gaussian_noise: CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor gaussian_noise_cuda(const at::Tensor& x, double sigma, int64_t n, int64_t seed, int64_t start,
                               int64_t count) {
  check_gaussian_args(x, sigma, n, seed, start, count);
  at::Tensor out = at::empty(noised_shape(x, count), x.options());
  gaussian_noise_out_cuda(x, sigma, n, seed, start, count, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("gaussian_noise", &gaussian_noise_cuda);
  m.impl("gaussian_noise_out", &gaussian_noise_out_cuda);
}

}  // namespace fastsmooth
