"""The compiled kernels (C++ on CPU, CUDA on GPU) of the fused token-extraction op."""
from __future__ import annotations

import torch

from fastsmooth.ops.ablation.masks import KeepMasks


def ablate_tokens_native(
    x: torch.Tensor,
    masks: KeepMasks,
    tokens: torch.Tensor,
    patch: tuple[int, int],
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    normalize_fill: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    args = (x, masks.rows, masks.cols, masks.tiles, masks.tile_h, masks.tile_w, tokens, patch[0], patch[1], mean, std,
            normalize_fill)
    if out is None:
        return torch.ops.fastsmooth.ablate_tokens(*args)
    torch.ops.fastsmooth.ablate_tokens_out(*args, out)
    return out
