// CUDA registration of fastsmooth::ablate; the kernel itself is in ablation_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ablation_args.h"
#include "dtype.h"
#include "launchers.h"

namespace fastsmooth {
namespace {

void ablate_out_cuda(const at::Tensor& x_in, const at::Tensor& rows, const at::Tensor& cols,
                            const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                            const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                            at::Tensor& out) {
  const KeepMasks masks = check_ablate_args(x_in, rows, cols, tiles, tile_h, tile_w, mean, std);
  check_out(out, x_in, masks.P);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::AblateLaunch launch{x.data_ptr(),
                                  out.data_ptr(),
                                  mean.has_value() ? mean->data_ptr() : nullptr,
                                  std.has_value() ? std->data_ptr() : nullptr,
                                  masks,
                                  x.size(0),
                                  x.size(1),
                                  cuda::dtype_code(x.scalar_type(), "fastsmooth::ablate"),
                                  is_channels_last_output(out)};
  const cudaError_t err = cuda::launch_ablate(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::ablate: CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor ablate_cuda(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                       const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                       const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  check_ablate_args(x, rows, cols, tiles, tile_h, tile_w, mean, std);
  at::Tensor out = at::empty(ablated_shape(x, rows.size(1)), x.options());
  ablate_out_cuda(x, rows, cols, tiles, tile_h, tile_w, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("ablate", &ablate_cuda);
  m.impl("ablate_out", &ablate_out_cuda);
}

}  // namespace fastsmooth
