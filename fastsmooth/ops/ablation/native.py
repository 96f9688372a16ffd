"""The compiled kernels (C++ on CPU, CUDA on GPU) of the structured-ablation op."""
from __future__ import annotations

import torch

from fastsmooth.ops.ablation.masks import KeepMasks


def ablate_native(
    x: torch.Tensor,
    masks: KeepMasks,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    args = (x, masks.rows, masks.cols, masks.tiles, masks.tile_h, masks.tile_w, mean, std)
    if out is None:
        return torch.ops.fastsmooth.ablate(*args)
    torch.ops.fastsmooth.ablate_out(*args, out)
    return out
