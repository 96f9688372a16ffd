// Portability macros for element logic shared by the CPU (C++) and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define FS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FS_HOST_DEVICE inline
#endif
