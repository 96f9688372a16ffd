// The Python module fastsmooth._C and the torch op library "fastsmooth".
//
// Importing fastsmooth._C loads this shared object; its static initializers register
// every op (schemas in csrc/ops/*.cpp, kernels in csrc/ops/cpu and csrc/ops/cuda).
// No pybind11 is needed: the module only carries build facts as constants.
#include <Python.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "launch_plans.h"

TORCH_LIBRARY(fastsmooth, m) {
  // Each op family adds its schemas with TORCH_LIBRARY_FRAGMENT in csrc/ops/<family>.cpp.
}

// How many threads at::parallel_for really uses inside this extension. Its OpenMP pragma is
// compiled here, not in libtorch: an extension built without -fopenmp runs every CPU kernel
// on one thread while torch.get_num_threads() still reports more (a test checks this).
static PyObject* parallel_threads(PyObject*, PyObject*) {
  std::atomic<uint64_t> seen{0};
  Py_BEGIN_ALLOW_THREADS
  at::parallel_for(0, 64, 1, [&](int64_t, int64_t) {
    seen |= uint64_t(1) << (at::get_thread_num() % 64);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let the other threads take chunks
  });
  Py_END_ALLOW_THREADS
  long threads = 0;
  for (uint64_t bits = seen.load(); bits != 0; bits &= bits - 1) ++threads;
  return PyLong_FromLong(threads);
}

static PyMethodDef fastsmooth_methods[] = {
    {"parallel_threads", parallel_threads, METH_NOARGS, "Threads that at::parallel_for uses in fastsmooth's CPU kernels."},
    {"cuda_launch_plan", fastsmooth::cuda_launch_plan, METH_VARARGS,
     "cuda_launch_plan(kernel, *sizes) -> dict(grid=(x, y, z), block, chunk, work): the launch the CUDA kernel "
     "gets for these sizes (computed on the host, available in every build). fastsmooth.ops.launch_plans wraps it."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef fastsmooth_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, fastsmooth_methods};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&fastsmooth_module);
  if (module == nullptr) return nullptr;
#ifdef FASTSMOOTH_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
