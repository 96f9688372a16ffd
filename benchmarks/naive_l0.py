"""l0 randomized ablation written like the authors' released code: a ``torch.randperm`` per
sample to pick the retained pixels, index assignment into a mask, then the [x, 1 - x] encoding;
and the radius with big-integer factorials, recomputed for every rho."""
from __future__ import annotations

import math

import torch


def naive_ablated_batch(x: torch.Tensor, keep: int, n: int) -> torch.Tensor:
    """n ablations of one image x [C, H, W] -> (n, 2C, H, W)."""
    C, H, W = x.shape
    batch = torch.cat([x, 1 - x], 0).unsqueeze(0).repeat(n, 1, 1, 1)
    for j in range(n):
        mask = torch.zeros(H * W, device=x.device)
        mask[torch.randperm(H * W, device=x.device)[:keep]] = 1
        batch[j] *= mask.view(1, H, W)
    return batch


def naive_radius(p_lower: float, d: int, keep: int) -> int:
    """Largest rho with p_lower - Delta(rho) > 1/2, Delta from factorials (-1 if none)."""
    if p_lower <= 0.5:
        return -1
    rho = 0
    while rho + 1 <= d - keep:
        ratio = (math.factorial(d - rho - 1) * math.factorial(d - keep)) / (
            math.factorial(d) * math.factorial(d - rho - 1 - keep)
        )
        if p_lower - (1 - ratio) <= 0.5:
            break
        rho += 1
    return rho
