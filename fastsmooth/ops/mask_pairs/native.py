"""The compiled kernels (C++ on CPU, CUDA on GPU) of the fused double-masking op."""
from __future__ import annotations

import torch


def mask_pairs_native(
    x: torch.Tensor,
    images: torch.Tensor,
    rects: torch.Tensor,
    fill: float,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    if out is None:
        return torch.ops.fastsmooth.mask_pairs(x, images, rects, fill, mean, std)
    torch.ops.fastsmooth.mask_pairs_out(x, images, rects, fill, mean, std, out)
    return out
