// Python binding of the CUDA launch plans (launch_plans.cpp), added to fastsmooth._C's methods.
#pragma once
#include <Python.h>

namespace fastsmooth {

// cuda_launch_plan(kernel: str, *sizes: int) -> {"grid": (x, y, z), "block", "chunk", "work"}
PyObject* cuda_launch_plan(PyObject* self, PyObject* args);

}  // namespace fastsmooth
