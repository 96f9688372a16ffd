// Allocation of the CPU kernels' outputs.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "hugepages.h"

namespace fastsmooth {

// An uninitialized output. A fresh multi-megabyte tensor is mostly page faults when first
// written; transparent huge pages (2 MB) cut the faults by 512x, but asking for them can stall
// (hugepages.h), so the advice is given only where a huge page is there for the taking.
inline at::Tensor empty_output(const std::vector<int64_t>& shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

}  // namespace fastsmooth
