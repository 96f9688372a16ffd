"""Builds fastsmooth._C: the C++ CPU kernels, and the CUDA kernels when torch and nvcc can.

Every file under csrc/ is picked up: `*.cpp` outside csrc/ops/cuda always, `*.cu` and the
`*.cpp` of csrc/ops/cuda only for a CUDA build. Environment switches:

- FASTSMOOTH_CUDA=0 / 1: never / always build the CUDA kernels (default: when torch is a CUDA
  build and CUDA_HOME is found).
- FASTSMOOTH_SKIP_EXTENSION=1: install the pure-Python package only (reference and Triton backends).
- TORCH_CUDA_ARCH_LIST: GPU architectures (default "8.0;9.0" when no GPU is visible).
"""
import glob
import os

from setuptools import setup


def _cuda_wanted(torch_cuda: bool, cuda_home: str | None) -> bool:
    flag = os.environ.get("FASTSMOOTH_CUDA")
    if flag == "0":
        return False
    if flag == "1":
        if not torch_cuda or cuda_home is None:
            raise RuntimeError(
                f"FASTSMOOTH_CUDA=1 but torch.version.cuda={torch_cuda!r} and CUDA_HOME={cuda_home!r}"
            )
        return True
    return bool(torch_cuda) and cuda_home is not None


def _extensions():
    if os.environ.get("FASTSMOOTH_SKIP_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cuda_dir = os.path.join("csrc", "ops", "cuda") + os.sep
    host_sources = [s for s in sources if not s.startswith(cuda_dir)]
    cxx = ["-O3"]  # torch.utils.cpp_extension adds the C++ standard torch needs
    link = []
    if torch.backends.openmp.is_available() and os.name != "nt":
        # at::parallel_for is an inline `#pragma omp parallel` when ATen's backend is OpenMP:
        # without -fopenmp the pragma is ignored and every CPU kernel runs on one thread.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    include_dirs = [os.path.abspath("csrc")]
    if _cuda_wanted(torch.version.cuda, CUDA_HOME):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext = CUDAExtension(
            "fastsmooth._C",
            sources + sorted(glob.glob("csrc/**/*.cu", recursive=True)),
            include_dirs=include_dirs,
            define_macros=[("FASTSMOOTH_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension(
            "fastsmooth._C", host_sources, include_dirs=include_dirs, extra_compile_args=cxx, extra_link_args=link
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
