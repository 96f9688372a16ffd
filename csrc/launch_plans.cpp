// fastsmooth._C.cuda_launch_plan: the CUDA kernels' launch plans (common/launch_plan.h),
// computed on the host, so that a build without CUDA reports the launches a GPU would get.
#include <Python.h>

#include <cstring>
#include <string>

#include "launch_plans.h"
#include "ops/common/launch_plan.h"

namespace fastsmooth {
namespace {

// Kernel name -> (argument count, plan of those sizes).
struct PlanEntry {
  const char* name;
  const char* sizes;  // the sizes' names, for error messages and the docstring
  int arity;
  LaunchPlan (*plan)(const int64_t*);
};

const PlanEntry kPlans[] = {
    {"ablate", "B, C, H, W, P", 5, [](const int64_t* s) { return plan_ablate(s[0], s[1], s[2], s[3], s[4]); }},
    {"ablate_pixels", "samples, C, d", 3, [](const int64_t* s) { return plan_ablate_pixels(s[0], s[1], s[2]); }},
    {"gaussian_noise", "count, D", 2, [](const int64_t* s) { return plan_gaussian_noise(s[0], s[1]); }},
    {"dssn_split", "B, d, K", 3, [](const int64_t* s) { return plan_dssn_split(s[0], s[1], s[2]); }},
    {"noise", "B, d, n", 3, [](const int64_t* s) { return plan_noise(s[0], s[1], s[2]); }},
    {"ablate_tokens", "samples, per_sample", 2, [](const int64_t* s) { return plan_ablate_tokens(s[0], s[1]); }},
    {"mask_pairs", "rows, per_row", 2, [](const int64_t* s) { return plan_mask_pairs(s[0], s[1]); }},
};

std::string kernel_list() {
  std::string names;
  for (const PlanEntry& e : kPlans) names += std::string(names.empty() ? "" : ", ") + e.name + "(" + e.sizes + ")";
  return names;
}

}  // namespace

PyObject* cuda_launch_plan(PyObject*, PyObject* args) {
  const Py_ssize_t n = PyTuple_Size(args);
  if (n < 1 || !PyUnicode_Check(PyTuple_GetItem(args, 0))) {
    PyErr_Format(PyExc_TypeError, "cuda_launch_plan(kernel, *sizes): kernel must be one of %s", kernel_list().c_str());
    return nullptr;
  }
  const char* kernel = PyUnicode_AsUTF8(PyTuple_GetItem(args, 0));
  for (const PlanEntry& e : kPlans) {
    if (std::strcmp(kernel, e.name) != 0) continue;
    if (n - 1 != e.arity) {
      PyErr_Format(PyExc_TypeError, "cuda_launch_plan(%s, ...) takes %d sizes (%s), got %zd", e.name, e.arity, e.sizes,
                   n - 1);
      return nullptr;
    }
    int64_t sizes[8];
    for (int i = 0; i < e.arity; ++i) {
      sizes[i] = PyLong_AsLongLong(PyTuple_GetItem(args, i + 1));
      if (sizes[i] == -1 && PyErr_Occurred()) return nullptr;
      if (sizes[i] < 0) {
        PyErr_Format(PyExc_ValueError, "cuda_launch_plan(%s, ...): sizes (%s) must be >= 0, got %lld at position %d",
                     e.name, e.sizes, static_cast<long long>(sizes[i]), i);
        return nullptr;
      }
    }
    const LaunchPlan p = e.plan(sizes);
    return Py_BuildValue("{s:(LLL),s:L,s:L,s:L}", "grid", static_cast<long long>(p.grid_x),
                         static_cast<long long>(p.grid_y), static_cast<long long>(p.grid_z), "block",
                         static_cast<long long>(p.block), "chunk", static_cast<long long>(p.chunk), "work",
                         static_cast<long long>(p.work));
  }
  PyErr_Format(PyExc_ValueError, "cuda_launch_plan: unknown kernel '%s'; expected one of %s", kernel,
               kernel_list().c_str());
  return nullptr;
}

}  // namespace fastsmooth
