"""Builds fastsmooth._C: the C++ CPU kernels, and the CUDA kernels when torch and nvcc can.

Every file under csrc/ is picked up: `*.cpp` outside csrc/ops/cuda always, `*.cu` and the
`*.cpp` of csrc/ops/cuda only for a CUDA build. Environment switches:

- FASTSMOOTH_CUDA=0 / 1: never / always build the CUDA kernels (default: when torch is a CUDA
  build, CUDA_HOME is found and holds the CUDA headers; a toolkit without them, e.g. an nvcc
  wrapper in /usr/local/bin, builds the CPU extension with a warning).
- FASTSMOOTH_SKIP_EXTENSION=1: install the pure-Python package only (reference and Triton backends).
- TORCH_CUDA_ARCH_LIST: GPU architectures (default "8.0;9.0" when no GPU is visible).
"""
import glob
import os
import warnings

from setuptools import setup

#: where torch.utils.cpp_extension looks for the CUDA headers, relative to CUDA_HOME
CUDA_HEADER_DIRS = ("include", os.path.join("targets", "x86_64-linux", "include"), os.path.join("targets", "sbsa-linux", "include"))


def cuda_headers_found(cuda_home: str | None) -> bool:
    """Whether CUDA_HOME holds cuda_runtime.h where a torch CUDA extension's compile looks."""
    return cuda_home is not None and any(
        os.path.isfile(os.path.join(cuda_home, d, "cuda_runtime.h")) for d in CUDA_HEADER_DIRS
    )


def cuda_decision(
    torch_cuda: str | None, cuda_home: str | None, flag: str | None, headers: bool
) -> tuple[bool, str | None]:
    """(build the CUDA kernels?, a warning to show or None), from torch's CUDA version, the
    CUDA_HOME torch found, FASTSMOOTH_CUDA and whether the CUDA headers are there.

    FASTSMOOTH_CUDA=1 forces CUDA (an error when torch or the toolkit is missing, so that a
    forced build never silently comes out CPU-only); =0 never builds it. By default CUDA is
    built when all of it is there; a CUDA torch with an nvcc but no headers (an incomplete
    toolkit) gets the CPU extension and a warning saying why and how to force CUDA.
    """
    if flag == "0":
        return False, None
    if flag == "1":
        if not torch_cuda or cuda_home is None:
            raise RuntimeError(
                f"FASTSMOOTH_CUDA=1 but torch.version.cuda={torch_cuda!r} and CUDA_HOME={cuda_home!r}"
            )
        return True, None
    if not torch_cuda or cuda_home is None:
        return False, None
    if not headers:
        return False, (
            f"fastsmooth: building the CPU extension only: torch is a CUDA {torch_cuda} build and found nvcc under "
            f"CUDA_HOME={cuda_home}, but not the CUDA headers (cuda_runtime.h in {cuda_home}/include), so the CUDA "
            "kernels would not compile. Point CUDA_HOME at a complete CUDA toolkit and set FASTSMOOTH_CUDA=1 to "
            "build them (the Triton backend runs on GPUs meanwhile)."
        )
    return True, None


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
    cuda, warning = cuda_decision(torch.version.cuda, CUDA_HOME, os.environ.get("FASTSMOOTH_CUDA"),
                                  cuda_headers_found(CUDA_HOME))
    if warning:
        warnings.warn(warning, stacklevel=1)
    if cuda:
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


if __name__ == "__main__":  # (pip and setuptools run it so; tests import the decision functions)
    ext_modules, cmdclass = _extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
