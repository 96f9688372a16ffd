// CUDA registration of fastsmooth::mask_pairs; the kernel itself is in mask_pairs_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../mask_pairs_args.h"
#include "dtype.h"
#include "mask_pairs_launchers.h"

namespace fastsmooth {
namespace {

void mask_pairs_out_cuda(const at::Tensor& x_in, const at::Tensor& images, const at::Tensor& rects, double fill,
                         const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                         at::Tensor& out) {
  PairGrid grid = check_mask_pairs_args(x_in, images, rects, mean, std);
  check_mask_pairs_out(out, x_in, grid);
  grid.channels_last = is_channels_last_output(out);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::MaskPairsLaunch launch{x.data_ptr(),
                                     out.data_ptr(),
                                     mean.has_value() ? mean->data_ptr() : nullptr,
                                     std.has_value() ? std->data_ptr() : nullptr,
                                     fill,
                                     grid,
                                     cuda::dtype_code(x.scalar_type(), "fastsmooth::mask_pairs")};
  const cudaError_t err = cuda::launch_mask_pairs(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::mask_pairs: CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor mask_pairs_cuda(const at::Tensor& x, const at::Tensor& images, const at::Tensor& rects, double fill,
                           const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  const PairGrid grid = check_mask_pairs_args(x, images, rects, mean, std);
  at::Tensor out = at::empty(mask_pairs_shape(grid), x.options());
  mask_pairs_out_cuda(x, images, rects, fill, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("mask_pairs", &mask_pairs_cuda);
  m.impl("mask_pairs_out", &mask_pairs_out_cuda);
}

}  // namespace fastsmooth
