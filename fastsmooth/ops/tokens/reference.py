"""Pure-PyTorch reference of the fused token-extraction op: the readable spec the kernels match.

The ablated, normalized image is built in full (the kernels never do), cut into patches and
the kept tokens gathered. Arithmetic in float32 (float64 for float64 input), rounded once.
"""
from __future__ import annotations

import torch

from fastsmooth._validation import accumulation_dtype
from fastsmooth.ops.ablation.masks import KeepMasks


def ablate_tokens_reference(
    x: torch.Tensor,
    masks: KeepMasks,
    tokens: torch.Tensor,
    patch: tuple[int, int],
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    normalize_fill: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    ph, pw = patch
    P, K = masks.count, tokens.shape[2]
    acc = accumulation_dtype(x.dtype)
    v = x.to(acc)
    fill = torch.zeros(C, dtype=acc, device=x.device)
    if mean is not None:
        v = (v - mean.view(1, C, 1, 1)) / std.view(1, C, 1, 1)
        if normalize_fill:  # ablated to 0 in [0, 1], then normalized (the authors' code)
            fill = (torch.zeros((), dtype=acc, device=x.device) - mean) / std
    keep = masks.pixel_keep().to(x.device)  # [M, P, H, W]
    ablated = torch.where(keep[:, :, None], v[:, None], fill.view(1, 1, C, 1, 1))  # [B, P, C, H, W]
    patches = ablated.reshape(B, P, C, H // ph, ph, W // pw, pw).permute(0, 1, 3, 5, 2, 4, 6)
    patches = patches.reshape(B, P, (H // ph) * (W // pw), C * ph * pw)
    index = tokens.to(x.device).expand(B, P, K)[..., None].expand(B, P, K, C * ph * pw)
    result = patches.gather(2, index).reshape(B * P, K, C * ph * pw).to(x.dtype)
    if out is None:
        return result
    return out.copy_(result)
