"""Pure-PyTorch reference of the structured-ablation op: the readable spec the kernels match.

Arithmetic in float32 (float64 for float64 input), rounded once to x's dtype at the end.
"""
from __future__ import annotations

import torch

from fastsmooth._validation import accumulation_dtype
from fastsmooth.ops.ablation.masks import KeepMasks


def ablate_kept_reference(
    x: torch.Tensor,
    keep: torch.Tensor,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The encoded, ablated batch for retained pixels ``keep`` (bool [M, P, H, W], M = 1 or B).

    Shared by every ablation reference (structured here, l0 pixel ablation in ops/pixel_ablation).
    """
    B, C, H, W = x.shape
    v = x.to(accumulation_dtype(x.dtype))
    if mean is not None:
        v = (v - mean.view(1, C, 1, 1)) / std.view(1, C, 1, 1)
    encoded = torch.cat([v, 1 - v], dim=1)  # [B, 2C, H, W]: x then 1 - x
    ablated = torch.where(keep[:, :, None], encoded[:, None], torch.zeros((), dtype=v.dtype, device=x.device))
    result = ablated.reshape(B * keep.shape[1], 2 * C, H, W).to(x.dtype)
    if out is None:
        return result
    return out.copy_(result)


def ablate_reference(
    x: torch.Tensor,
    masks: KeepMasks,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    return ablate_kept_reference(x, masks.pixel_keep().to(x.device), mean, std, out)
