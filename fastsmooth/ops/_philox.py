"""Philox4x32-10: the counter-based random numbers of every random op, on every backend.

The reference (NumPy) and the Triton helpers here, and csrc/ops/common/philox.h for the C++
and CUDA kernels, compute the same stream as Triton's ``tl.philox``: key = the 64-bit seed as
(low word, high word), counter = four 32-bit words chosen by the op. An op that draws from
the same (seed, counter) on every backend gets bit-identical random numbers everywhere.

Uniform floats use the top 24 bits of a word: ``(w >> 8) * 2**-24`` in [0, 1), exact in
float32, or ``((w >> 8) + 1) * 2**-24`` in (0, 1].
"""
from __future__ import annotations

import numpy as np
import torch

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LOW = np.uint64(0xFFFFFFFF)


def philox4x32(seed: int, c0, c1, c2, c3) -> tuple[np.ndarray, ...]:
    """Four uint32 arrays of random words for counters (c0, c1, c2, c3) (broadcast) and ``seed``."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32)
    c = [np.asarray(v, dtype=np.uint64) & _LOW for v in np.broadcast_arrays(c0, c1, c2, c3)]
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0, p2 = _M0 * c[0], _M1 * c[2]  # exact 64-bit products of 32-bit words
            c = [
                (p2 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0),
                p2 & _LOW,
                (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
                p0 & _LOW,
            ]
            k0, k1 = k0 + _W0, k1 + _W1
    return tuple(v.astype(np.uint32) for v in c)


def uniform_open1(words: np.ndarray) -> torch.Tensor:
    """float32 in [0, 1) from uint32 words."""
    return torch.from_numpy((words >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24))


def uniform_open0(words: np.ndarray) -> torch.Tensor:
    """float32 in (0, 1] from uint32 words."""
    return torch.from_numpy(((words >> np.uint32(8)) + np.uint32(1)).astype(np.float32) * np.float32(2.0**-24))


def seed_from(generator: torch.Generator | None, seed: int | None = None) -> int:
    """A 63-bit seed for the kernels: ``seed`` if given, else drawn from ``generator`` (or torch's global one)."""
    if seed is not None:
        return int(seed) & 0x7FFFFFFFFFFFFFFF
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64, generator=generator))
