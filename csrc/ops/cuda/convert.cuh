// Loads and stores of the four floating dtypes through their accumulation type, rounding to
// nearest even like c10::Half / c10::BFloat16 on the CPU.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launchers.h"

namespace fastsmooth {
namespace cuda {

template <typename T>
struct Convert {
  using acc_t = T;
  __device__ static acc_t load(T v) { return v; }
  __device__ static T store(acc_t v) { return v; }
};

template <>
struct Convert<__half> {
  using acc_t = float;
  __device__ static float load(__half v) { return __half2float(v); }
  __device__ static __half store(float v) { return __float2half_rn(v); }
};

template <>
struct Convert<__nv_bfloat16> {
  using acc_t = float;
  __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// Calls f(T{}) with T the CUDA type of `dtype`: the one place the four floating dtypes are
// mapped to kernel instantiations.
template <typename F>
cudaError_t with_float_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastsmooth
