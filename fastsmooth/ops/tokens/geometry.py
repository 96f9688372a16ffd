"""Which ViT tokens each ablation keeps, computed from the ablation's geometry (semantics.md §10).

A patch token is kept iff its patch contains a retained pixel. For bands and blocks that is
an intersection of cyclic intervals, so the kept tokens follow from the band / block start
alone, with no pixel mask: the patch column [g * p, g * p + p) meets the band
{start, .., start + s - 1} mod L iff ``(g * p - start) mod L < s`` or ``(start - g * p) mod L < p``
(two cyclic intervals meet iff either one's start lies in the other). Bands that straddle patch
boundaries touch several patch columns, wrapped bands the columns at both ends: the union.

Ablations with the same number of kept tokens can share a forward pass; :func:`group_by_count`
orders a set of ablations that way.
"""
from __future__ import annotations

import dataclasses

import torch

__all__ = [
    "TokenSets", "band_tokens", "block_tokens", "multi_band_tokens", "multi_block_tokens", "touched", "tokens_from_axes",
    "group_by_count",
]


def touched(length: int, size: int, starts: torch.Tensor, patch: int) -> torch.Tensor:
    """bool [P, length // patch]: which patch intervals the cyclic bands ``starts`` of ``size`` meet."""
    grid = length // patch
    first = torch.arange(grid, dtype=torch.int64) * patch  # first pixel of each patch interval
    starts = starts.to(torch.int64).reshape(-1, 1)
    if size >= length:
        return torch.ones(starts.shape[0], grid, dtype=torch.bool)
    return ((first[None, :] - starts) % length < size) | ((starts - first[None, :]) % length < patch)


def tokens_from_axes(rows: torch.Tensor, cols: torch.Tensor) -> list[torch.Tensor]:
    """Row-major token indices of each ablation whose kept patch rows / columns are ``rows`` [P, G_h]
    and ``cols`` [P, G_w] (bool): the tokens of the product set, increasing."""
    grid_w = cols.shape[1]
    keep = rows[:, :, None] & cols[:, None, :]  # [P, G_h, G_w]
    return [row.reshape(-1).nonzero()[:, 0] for row in keep] if grid_w else []


@dataclasses.dataclass(frozen=True)
class TokenSets:
    """Kept tokens of P ablations: ``index[p]`` holds the (increasing) token indices of ablation p."""

    index: list[torch.Tensor]

    @property
    def counts(self) -> torch.Tensor:
        return torch.tensor([len(t) for t in self.index], dtype=torch.int64)


def band_tokens(
    height: int, width: int, size: int, starts: torch.Tensor, patch: tuple[int, int], axis: str = "column"
) -> TokenSets:
    """Kept tokens of bands of ``size`` columns (rows for ``axis="row"``) starting at ``starts``."""
    ph, pw = patch
    P = starts.numel()
    if axis == "column":
        cols = touched(width, size, starts, pw)
        rows = torch.ones(P, height // ph, dtype=torch.bool)
    else:
        rows = touched(height, size, starts, ph)
        cols = torch.ones(P, width // pw, dtype=torch.bool)
    return TokenSets(tokens_from_axes(rows, cols))


def block_tokens(height: int, width: int, size: int, corners: torch.Tensor, patch: tuple[int, int]) -> TokenSets:
    """Kept tokens of ``size`` x ``size`` blocks with top-left corners ``i * width + j`` (wraparound)."""
    ph, pw = patch
    corners = corners.to(torch.int64).reshape(-1)
    rows = touched(height, size, corners // width, ph)
    cols = touched(width, size, corners % width, pw)
    return TokenSets(tokens_from_axes(rows, cols))


def multi_band_tokens(
    height: int, width: int, size: int, combos: torch.Tensor, patch: tuple[int, int], axis: str = "column"
) -> TokenSets:
    """Kept tokens of unions of aligned bands (band t: indices t * size .. t * size + size - 1, no
    wraparound; ``combos`` [P, keep] band indices, as ``ops.ablation.masks.multi_band_masks``):
    the union of the patch columns (rows) each chosen band touches."""
    ph, pw = patch
    length, p = (width, pw) if axis == "column" else (height, ph)
    bands = length // size
    per_band = touched(length, size, torch.arange(bands) * size, p)  # [bands, G]: aligned bands never wrap
    chosen = per_band[combos.to(torch.int64)].any(dim=1)  # [P, G]
    P = chosen.shape[0]
    if axis == "column":
        return TokenSets(tokens_from_axes(torch.ones(P, height // ph, dtype=torch.bool), chosen))
    return TokenSets(tokens_from_axes(chosen, torch.ones(P, width // pw, dtype=torch.bool)))


def multi_block_tokens(height: int, width: int, size: int, combos: torch.Tensor, patch: tuple[int, int]) -> TokenSets:
    """Kept tokens of unions of aligned ``size`` x ``size`` tiles (numbered row-major over the
    (H // size) x (W // size) whole tiles; ``combos`` [P, keep], as ``multi_block_masks``): the
    union of each chosen tile's touched patch rows x columns. A union of tiles is not a product
    set, so the union is taken over token grids."""
    ph, pw = patch
    tiles_w = width // size
    rows = touched(height, size, torch.arange(height // size) * size, ph)  # [TH, G_h]
    cols = touched(width, size, torch.arange(tiles_w) * size, pw)  # [TW, G_w]
    per_tile = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, rows.shape[1] * cols.shape[1])
    chosen = per_tile[combos.to(torch.int64)].any(dim=1)  # [P, G]
    return TokenSets([row.nonzero()[:, 0] for row in chosen])


def group_by_count(sets: TokenSets) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ablation indices [P_k], kept tokens [P_k, K]) for each kept-token count K, K increasing.

    Within a group, ablations keep their order. Every ablation of a group has K tokens, so a
    group's samples stack into one [N, K, E] batch.
    """
    counts = sets.counts
    groups = []
    for k in torch.unique(counts).tolist():
        members = (counts == k).nonzero()[:, 0]
        stacked = torch.stack([sets.index[i] for i in members.tolist()]) if k else torch.zeros(len(members), 0,
                                                                                                  dtype=torch.int64)
        groups.append((members, stacked))
    return groups
