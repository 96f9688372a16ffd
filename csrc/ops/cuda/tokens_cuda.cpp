// CUDA registration of fastsmooth::ablate_tokens; the kernel itself is in tokens_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../tokens_args.h"
#include "dtype.h"
#include "tokens_launchers.h"

namespace fastsmooth {
namespace {

void ablate_tokens_out_cuda(const at::Tensor& x_in, const at::Tensor& rows, const at::Tensor& cols,
                            const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                            const at::Tensor& tokens, int64_t patch_h, int64_t patch_w,
                            const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                            bool normalize_fill, at::Tensor& out) {
  const KeepMasks masks = check_ablate_args(x_in, rows, cols, tiles, tile_h, tile_w, mean, std);
  const TokenGrid grid = check_tokens_args(x_in, masks, tokens, patch_h, patch_w);
  check_tokens_out(out, x_in, grid);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::TokensLaunch launch{x.data_ptr(),
                                  out.data_ptr(),
                                  mean.has_value() ? mean->data_ptr() : nullptr,
                                  std.has_value() ? std->data_ptr() : nullptr,
                                  masks,
                                  grid,
                                  normalize_fill,
                                  cuda::dtype_code(x.scalar_type(), "fastsmooth::ablate_tokens")};
  const cudaError_t err = cuda::launch_ablate_tokens(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::ablate_tokens: CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor ablate_tokens_cuda(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                              const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                              const at::Tensor& tokens, int64_t patch_h, int64_t patch_w,
                              const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                              bool normalize_fill) {
  const KeepMasks masks = check_ablate_args(x, rows, cols, tiles, tile_h, tile_w, mean, std);
  const TokenGrid grid = check_tokens_args(x, masks, tokens, patch_h, patch_w);
  at::Tensor out = at::empty(tokens_shape(grid), x.options());
  ablate_tokens_out_cuda(x, rows, cols, tiles, tile_h, tile_w, tokens, patch_h, patch_w, mean, std, normalize_fill,
                         out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("ablate_tokens", &ablate_tokens_cuda);
  m.impl("ablate_tokens_out", &ablate_tokens_out_cuda);
}

}  // namespace fastsmooth
