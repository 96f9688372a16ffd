"""The compiled kernels (C++ on CPU, CUDA on GPU) of l0 pixel ablation."""
from __future__ import annotations

import torch


def ablate_pixels_native(
    x: torch.Tensor,
    keep: int,
    n: int,
    seed: int,
    shared: bool,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    if out is None:
        return torch.ops.fastsmooth.ablate_pixels(x, keep, n, seed, shared, mean, std)
    torch.ops.fastsmooth.ablate_pixels_out(x, keep, n, seed, shared, mean, std, out)
    return out
