// Maps a torch dtype to the launchers' dtype code (host only).
#pragma once
#include <ATen/ATen.h>

#include "launchers.h"

namespace fastsmooth {
namespace cuda {

inline DType dtype_code(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t, " (expected float32, float64, float16 or bfloat16)");
  }
}

}  // namespace cuda
}  // namespace fastsmooth
