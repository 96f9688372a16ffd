"""Triton side of fastsmooth/ops/_philox.py: the same words and uniform floats inside kernels."""
import triton
import triton.language as tl


@triton.jit
def uniform_open1(word):
    """float32 in [0, 1) from a uint32 word."""
    return (word >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def uniform_open0(word):
    """float32 in (0, 1] from a uint32 word."""
    return ((word >> 8) + 1).to(tl.float32) * (1.0 / 16777216.0)
