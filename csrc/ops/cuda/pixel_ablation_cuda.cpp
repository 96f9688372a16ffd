// CUDA registration of fastsmooth::ablate_pixels; the kernel itself is in pixel_ablation_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../pixel_ablation_args.h"
#include "dtype.h"
#include "pixel_ablation_launchers.h"

namespace fastsmooth {
namespace {

void ablate_pixels_out_cuda(const at::Tensor& x_in, int64_t keep, int64_t n, int64_t seed, bool shared,
                            const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                            at::Tensor& out) {
  check_ablate_pixels_args(x_in, keep, n, seed, mean, std);
  check_pixel_out(out, x_in, n);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::AblatePixelsLaunch launch{x.data_ptr(),
                                        out.data_ptr(),
                                        mean.has_value() ? mean->data_ptr() : nullptr,
                                        std.has_value() ? std->data_ptr() : nullptr,
                                        static_cast<uint64_t>(seed),
                                        x.size(0),
                                        x.size(1),
                                        x.size(2) * x.size(3),
                                        n,
                                        keep,
                                        shared,
                                        cuda::dtype_code(x.scalar_type(), "fastsmooth::ablate_pixels")};
  const cudaError_t err = cuda::launch_ablate_pixels(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::ablate_pixels: CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor ablate_pixels_cuda(const at::Tensor& x, int64_t keep, int64_t n, int64_t seed, bool shared,
                              const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  check_ablate_pixels_args(x, keep, n, seed, mean, std);
  at::Tensor out = at::empty(pixel_ablated_shape(x, n), x.options());
  ablate_pixels_out_cuda(x, keep, n, seed, shared, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("ablate_pixels", &ablate_pixels_cuda);
  m.impl("ablate_pixels_out", &ablate_pixels_out_cuda);
}

}  // namespace fastsmooth
