"""Pure-PyTorch (and NumPy Philox) reference of the fused Gaussian-noise op: the readable spec.

Sample s of the flat image-major (B * n) grid is copy ``j = s % n`` of image ``b = s // n``.
Its element e (flat C, H, W index) takes the standard normal number ``e % 4`` of

    words = philox4x32(seed, c0 = e // 4, c1 = j, c2 = b, c3 = STREAM)
    (w0, w1) -> r = sqrt(-2 log u1), t = 2 pi u2 -> (r cos t, r sin t)   for e % 4 in (0, 1)
    (w2, w3) -> the same                                                  for e % 4 in (2, 3)

with ``u1 = uniform_open0(w_even)`` in (0, 1] and ``u2 = uniform_open1(w_odd)`` in [0, 1)
(float32 on every backend). Arithmetic after the uniforms is in float32 (float64 for float64
images); the sample is ``x[b] + sigma * z``, rounded once to x's dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fastsmooth._validation import accumulation_dtype
from fastsmooth.ops._philox import philox4x32, uniform_open0, uniform_open1

STREAM = 0x6A09E667  # kGaussianStream in csrc/ops/common/gaussian.h


def _box_muller(w_radius: np.ndarray, w_angle: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    u1 = uniform_open0(w_radius).to(dtype)
    u2 = uniform_open1(w_angle).to(dtype)
    r = torch.sqrt(-2 * torch.log(u1))
    t = torch.tensor(2 * math.pi, dtype=dtype) * u2
    return r * torch.cos(t), r * torch.sin(t)


def standard_normals(seed: int, samples: np.ndarray, n: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """The standard normals [len(samples), numel] of flat samples ``samples`` (CPU tensor of ``dtype``)."""
    quads = (numel + 3) // 4
    b, j = samples // n, samples % n
    q = np.arange(quads, dtype=np.int64)
    w = philox4x32(seed, q[None, :], j[:, None], b[:, None], STREAM)
    z0, z1 = _box_muller(w[0], w[1], dtype)
    z2, z3 = _box_muller(w[2], w[3], dtype)
    return torch.stack([z0, z1, z2, z3], dim=-1).reshape(len(samples), 4 * quads)[:, :numel]


def gaussian_noise_reference(
    x: torch.Tensor,
    sigma: float,
    n: int,
    seed: int,
    start: int,
    count: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    acc = accumulation_dtype(x.dtype)
    samples = np.arange(start, start + count, dtype=np.int64)
    z = standard_normals(seed, samples, n, C * H * W, acc).to(x.device)
    images = torch.as_tensor(samples // n, device=x.device)
    result = (x.to(acc)[images] + torch.tensor(sigma, dtype=acc, device=x.device) * z.view(count, C, H, W)).to(x.dtype)
    if out is None:
        return result
    return out.copy_(result)
