// The Python module fastsmooth._C and the torch op library "fastsmooth".
//
// Importing fastsmooth._C loads this shared object; its static initializers register
// every op (schemas in csrc/ops/*.cpp, kernels in csrc/ops/cpu and csrc/ops/cuda).
// No pybind11 is needed: the module only carries build facts as constants.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastsmooth, m) {
  // Each op family adds its schemas with TORCH_LIBRARY_FRAGMENT in csrc/ops/<family>.cpp.
}

static struct PyModuleDef fastsmooth_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

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
