"""Kept-token pixels of smoothed ViTs (semantics.md §10): image batch -> [B * P, K, C * p_h * p_w].

``ablate_tokens`` ablates, normalizes and cuts into patches in one pass, writing only the
pixels of the tokens each ablation keeps: sample ``b * P + p`` is image b under ablation p,
row k its k-th kept token (index ``tokens[p, k]`` on the row-major patch grid), flattened as
(c, dy, dx), the layout of a ViT's patch-embedding weight, so the embedding is one matmul
(:meth:`fastsmooth.models.vit.TokenViT.forward_tokens`). No full-size ablated image is made.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastsmooth._backend import resolve_backend
from fastsmooth._validation import check_images, check_out, check_stats
from fastsmooth.ops.ablation.masks import KeepMasks
from fastsmooth.ops.tokens.geometry import (
    TokenSets,
    band_tokens,
    block_tokens,
    group_by_count,
    multi_band_tokens,
    multi_block_tokens,
    tokens_from_axes,
    touched,
)
from fastsmooth.ops.tokens.native import ablate_tokens_native
from fastsmooth.ops.tokens.reference import ablate_tokens_reference

Stats = Sequence[float] | torch.Tensor | None

__all__ = [
    "ablate_tokens",
    "tokens_kernel",
    "TokenSets",
    "band_tokens",
    "block_tokens",
    "multi_band_tokens",
    "multi_block_tokens",
    "group_by_count",
    "tokens_from_axes",
    "touched",
    "NORMALIZE_MODES",
]

#: "after": ablated pixels are 0 in [0, 1] and then normalized (smoothed-vit); "before": the
#: image is normalized first and ablated pixels are 0 (ART's salman2021 path).
NORMALIZE_MODES = ("after", "before")


def _ablate_tokens_triton(*args: Any, **kwargs: Any) -> torch.Tensor:
    from fastsmooth.ops.tokens.triton_kernel import ablate_tokens_triton  # triton is optional

    return ablate_tokens_triton(*args, **kwargs)


_IMPLS = {
    "reference": ablate_tokens_reference,
    "cpu": ablate_tokens_native,
    "cuda": ablate_tokens_native,
    "triton": _ablate_tokens_triton,
}


def tokens_kernel(backend: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """The implementation ``ablate_tokens`` runs for ``backend`` on ``device``, without its checks:
    ``kernel(x, masks, tokens, patch, mean, std, normalize_fill, out=out)`` (for loops that check once)."""
    return _IMPLS[resolve_backend(backend, device)]


def _check_patch(patch: int | tuple[int, int], H: int, W: int) -> tuple[int, int]:
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    for name, p, n in (("patch height", ph, H), ("patch width", pw, W)):
        if isinstance(p, bool) or not isinstance(p, int) or p < 1 or n % p:
            raise ValueError(f"patch={patch!r}: the {name} must be a positive divisor of the image size {H} x {W}")
    return ph, pw


def ablate_tokens(
    x: torch.Tensor,
    masks: KeepMasks,
    tokens: torch.Tensor,
    patch: int | tuple[int, int],
    mean: Stats = None,
    std: Stats = None,
    *,
    normalize: str = "after",
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Kept tokens' pixels of every ablation of every image: (B, C, H, W) -> (B * P, K, C * p_h * p_w).

    Args:
        x: images, any floating dtype (arithmetic in float32, float64 for float64; rounded once).
        masks: the retained pixels of the P ablations (``fastsmooth.ops.ablation.masks``), shared
            (M = 1) or per image (M = B).
        tokens: int64 [P, K] or [M, P, K], the kept token indices (row-major on the patch grid;
            see ``band_tokens`` / ``block_tokens``); every ablation keeps the same number K.
        patch: the ViT's patch size (an int or (p_h, p_w)), dividing H and W.
        mean, std: per-channel normalization (x - mean) / std.
        normalize: where ablation sits relative to normalization (semantics.md §10): "after"
            (ablated pixels are 0 then normalized, ``-mean / std``; the authors' code) or
            "before" (ablated pixels are 0 in normalized space; ART's salman2021 path).
        out: optional contiguous output of the result's shape, x's dtype and device.
        backend: "auto", "reference", "cpu", "triton" or "cuda".
    """
    check_images(x)
    B, C, H, W = x.shape
    ph, pw = _check_patch(patch, H, W)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if not isinstance(masks, KeepMasks):
        raise TypeError(f"masks must be a fastsmooth.ops.ablation.masks.KeepMasks, got {type(masks).__name__}")
    M, P = masks.rows.shape[0], masks.count
    if masks.rows.shape[2] != H or masks.cols.shape[2] != W:
        raise ValueError(f"masks describe {masks.rows.shape[2]} x {masks.cols.shape[2]} images, x is {H} x {W}")
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 or tokens.dim() not in (2, 3):
        raise ValueError(f"tokens must be an int64 tensor [P, K] or [M, P, K], got {tokens!r}")
    tokens = tokens if tokens.dim() == 3 else tokens[None]
    if tokens.shape[:2] != (M, P):
        raise ValueError(f"tokens must be [P = {P}, K] or [M = {M}, P = {P}, K], got shape {tuple(tokens.shape)}")
    grid = (H // ph) * (W // pw)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= grid):
        raise ValueError(f"tokens must index the {H // ph} x {W // pw} patch grid (0 .. {grid - 1}), "
                         f"got {int(tokens.min())} .. {int(tokens.max())}")
    mean_t, std_t = check_stats(mean, std, x)
    check_out(out, (B * P, tokens.shape[2], C * ph * pw), x)
    kernel = tokens_kernel(backend, x.device)
    return kernel(x, masks.to(x.device), tokens.to(x.device).contiguous(), (ph, pw), mean_t, std_t,
                  normalize == "after", out=out)
