"""The compiled kernels (C++ on CPU, CUDA on GPU) of the fused Gaussian-noise op."""
from __future__ import annotations

import torch


def gaussian_noise_native(
    x: torch.Tensor,
    sigma: float,
    n: int,
    seed: int,
    start: int,
    count: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    if out is None:
        return torch.ops.fastsmooth.gaussian_noise(x, sigma, n, seed, start, count)
    torch.ops.fastsmooth.gaussian_noise_out(x, sigma, n, seed, start, count, out)
    return out
