"""Pure-PyTorch reference of the fused double-masking op: the readable spec the kernels match.

The masks of every row are built in full (the kernels never do): pixel (h, w) of row r is
masked when it lies in either rectangle of rects[r]. Arithmetic in float32 (float64 for
float64 input), rounded once.
"""
from __future__ import annotations

import torch

from fastsmooth._validation import accumulation_dtype


def pair_masked(rects: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """bool [R, H, W]: covered by either rectangle of rects [R, 2, 4] (top, left, bottom, right)."""
    h = torch.arange(H, device=rects.device)[None, None, :, None]
    w = torch.arange(W, device=rects.device)[None, None, None, :]
    r = rects[:, :, :, None, None]
    inside = (h >= r[:, :, 0]) & (h < r[:, :, 2]) & (w >= r[:, :, 1]) & (w < r[:, :, 3])
    return inside.any(dim=1)


def mask_pairs_reference(
    x: torch.Tensor,
    images: torch.Tensor,
    rects: torch.Tensor,
    fill: float,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    _, C, H, W = x.shape
    acc = accumulation_dtype(x.dtype)
    v = x.to(acc)[images]
    if mean is not None:
        v = (v - mean.view(1, C, 1, 1)) / std.view(1, C, 1, 1)
    masked = pair_masked(rects, H, W)[:, None]
    result = torch.where(masked, torch.tensor(fill, dtype=acc, device=x.device), v).to(x.dtype)
    if out is None:
        return result
    return out.copy_(result)
