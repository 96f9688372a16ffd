// CUDA registration of the l1 splitting ops; the kernels themselves are in dssn_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../dssn_args.h"
#include "dssn_launchers.h"
#include "dtype.h"

namespace fastsmooth {
namespace {

at::Tensor dssn_split_cuda(const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& tmpl, int64_t levels,
                           int64_t q, bool general) {
  const SplitParams params = check_dssn_args(x_in, offsets, tmpl, levels, q, general);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(dssn_shape(x, offsets), x.options());
  const cuda::DssnLaunch launch{x.data_ptr(),
                                tmpl.data_ptr<int16_t>(),
                                offsets.data_ptr<int64_t>(),
                                out.data_ptr(),
                                x.size(0),
                                x.size(1) * x.size(2) * x.size(3),
                                offsets.size(1),
                                offsets.size(0) != 1,
                                static_cast<int32_t>(levels),
                                params,
                                cuda::dtype_code(x.scalar_type(), "fastsmooth::dssn_split")};
  const cudaError_t err = cuda::launch_dssn_split(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fastsmooth::dssn_split: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor noise_cuda(const at::Tensor& x_in, double lam, int64_t n, int64_t seed, bool ssn, const char* op) {
  const SplitParams params = check_noise_args(x_in, lam, n, op);
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(noise_shape(x, n), x.options());
  const cuda::NoiseLaunch launch{x.data_ptr(),
                                 out.data_ptr(),
                                 x.size(0),
                                 x.size(1) * x.size(2) * x.size(3),
                                 n,
                                 static_cast<uint64_t>(seed),
                                 static_cast<float>(lam),
                                 params,
                                 ssn,
                                 cuda::dtype_code(x.scalar_type(), op)};
  const cudaError_t err = cuda::launch_noise(launch, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor ssn_noise_cuda(const at::Tensor& x, double lam, int64_t n, int64_t seed) {
  return noise_cuda(x, lam, n, seed, true, "fastsmooth::ssn_noise");
}

at::Tensor uniform_noise_cuda(const at::Tensor& x, double lam, int64_t n, int64_t seed) {
  return noise_cuda(x, lam, n, seed, false, "fastsmooth::uniform_noise");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CUDA, m) {
  m.impl("dssn_split", &dssn_split_cuda);
  m.impl("ssn_noise", &ssn_noise_cuda);
  m.impl("uniform_noise", &uniform_noise_cuda);
}

}  // namespace fastsmooth
