"""The compiled kernels (C++ on CPU, CUDA on GPU) of the l1 splitting ops."""
from __future__ import annotations

import torch


def dssn_split_native(
    x: torch.Tensor, offsets: torch.Tensor, template: torch.Tensor, levels: int, q: int, general: bool
) -> torch.Tensor:
    return torch.ops.fastsmooth.dssn_split(x, offsets, template, levels, q, general)


def ssn_noise_native(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    return torch.ops.fastsmooth.ssn_noise(x, lam, n, seed)


def uniform_noise_native(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    return torch.ops.fastsmooth.uniform_noise(x, lam, n, seed)
