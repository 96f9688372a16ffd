"""Which pixels each structured ablation retains (semantics.md §0-1).

An ablation set is described compactly by three uint8 tensors, so one fused kernel serves
every kind of structured ablation:

- ``rows`` [M, P, H] and ``cols`` [M, P, W]: a pixel (h, w) of ablation p is retained only if
  ``rows[m, p, h]`` and ``cols[m, p, w]`` are 1;
- ``tiles`` [M, P, TH, TW] (multi-block only): additionally tile (h // tile_h, w // tile_w)
  must be 1; pixels past the last whole tile are never retained.

M is 1 when all images share the ablations, or B for per-image (training) ablations.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import torch


@dataclasses.dataclass(frozen=True)
class KeepMasks:
    rows: torch.Tensor
    cols: torch.Tensor
    tiles: torch.Tensor | None = None
    tile_h: int = 1
    tile_w: int = 1

    @property
    def count(self) -> int:
        """Number of ablations P per image."""
        return self.rows.shape[1]

    def to(self, device: torch.device) -> KeepMasks:
        tiles = None if self.tiles is None else self.tiles.to(device)
        return dataclasses.replace(self, rows=self.rows.to(device), cols=self.cols.to(device), tiles=tiles)

    def select(self, index: slice | torch.Tensor) -> KeepMasks:
        """The masks of some of the ablations (``index``, a slice or indices into P), tiles
        included (multi-block), contiguous: a slice of shared (M = 1) masks stays a view, no copy."""
        tiles = None if self.tiles is None else self.tiles[:, index].contiguous()
        return dataclasses.replace(self, rows=self.rows[:, index].contiguous(), cols=self.cols[:, index].contiguous(),
                                   tiles=tiles)

    def per_image(self) -> KeepMasks:
        """Masks [1, B, ...] (B ablations shared by all images) -> [B, 1, ...]: ablation b for
        image b (training draws one ablation per image)."""
        tiles = None if self.tiles is None else self.tiles.transpose(0, 1)
        return dataclasses.replace(self, rows=self.rows.transpose(0, 1), cols=self.cols.transpose(0, 1), tiles=tiles)

    def pixel_keep(self) -> torch.Tensor:
        """The retained pixels as a bool tensor [M, P, H, W] (readable, memory hungry)."""
        keep = self.rows.bool()[:, :, :, None] & self.cols.bool()[:, :, None, :]
        if self.tiles is not None:
            H, W = keep.shape[2], keep.shape[3]
            tile_rows, tile_cols = torch.arange(H) // self.tile_h, torch.arange(W) // self.tile_w
            valid = (tile_rows[:, None] < self.tiles.shape[2]) & (tile_cols[None, :] < self.tiles.shape[3])
            tr = tile_rows.clamp(max=self.tiles.shape[2] - 1).to(self.tiles.device)
            tc = tile_cols.clamp(max=self.tiles.shape[3] - 1).to(self.tiles.device)
            tiled = self.tiles.bool()[:, :, tr][:, :, :, tc]
            keep = keep & tiled & valid.to(keep.device)
        return keep


def _band_rows(length: int, size: int, starts: torch.Tensor) -> torch.Tensor:
    """[P, length] uint8: index i is in the band starting at `start` iff (i - start) mod length < size."""
    index = torch.arange(length)
    return (((index[None, :] - starts[:, None]) % length) < size).to(torch.uint8)


def _ones(count: int, length: int) -> torch.Tensor:
    return torch.ones(count, length, dtype=torch.uint8)


def band_masks(H: int, W: int, size: int, positions: torch.Tensor, axis: str) -> KeepMasks:
    """Bands of width `size` starting at `positions` (wraparound); positions may be [P] or [M, P]."""
    grid = positions if positions.dim() == 2 else positions[None]
    M, P = grid.shape
    flat = grid.reshape(-1)
    if axis == "column":
        rows, cols = _ones(M * P, H), _band_rows(W, size, flat)
    else:
        rows, cols = _band_rows(H, size, flat), _ones(M * P, W)
    return KeepMasks(rows.view(M, P, H), cols.view(M, P, W))


def block_masks(H: int, W: int, size: int, corners: torch.Tensor) -> KeepMasks:
    """Blocks of `size` x `size` with top-left corners i * W + j (wraparound); [P] or [M, P]."""
    grid = corners if corners.dim() == 2 else corners[None]
    M, P = grid.shape
    flat = grid.reshape(-1)
    rows, cols = _band_rows(H, size, flat // W), _band_rows(W, size, flat % W)
    return KeepMasks(rows.view(M, P, H), cols.view(M, P, W))


def multi_band_masks(H: int, W: int, size: int, combos: torch.Tensor, axis: str) -> KeepMasks:
    """Unions of aligned bands (band t covers indices t*size .. t*size+size-1, no wraparound).

    combos is [P, keep] band indices; indices past the last whole band are never retained.
    """
    P = combos.shape[0]
    length = W if axis == "column" else H
    band_of = torch.arange(length) // size
    n_bands = length // size
    chosen = torch.zeros(P, n_bands + 1, dtype=torch.bool)
    chosen.scatter_(1, combos, True)
    chosen[:, n_bands] = False  # the partial band at the end
    band_keep = chosen[:, band_of.clamp(max=n_bands)].to(torch.uint8)
    if axis == "column":
        return KeepMasks(_ones(P, H)[None], band_keep[None])
    return KeepMasks(band_keep[None], _ones(P, W)[None])


def multi_block_masks(H: int, W: int, size: int, combos: torch.Tensor) -> KeepMasks:
    """Unions of aligned size x size tiles, numbered row-major (t -> (t // (W//size), t % (W//size)))."""
    P = combos.shape[0]
    TH, TW = H // size, W // size
    tiles = torch.zeros(P, TH * TW, dtype=torch.uint8)
    tiles.scatter_(1, combos, 1)
    return KeepMasks(_ones(P, H)[None], _ones(P, W)[None], tiles.view(1, P, TH, TW), size, size)


@functools.lru_cache(maxsize=64)
def all_combinations(n: int, keep: int) -> torch.Tensor:
    """Every `keep`-subset of range(n) in itertools.combinations order, as a [C(n, keep), keep] tensor."""
    if math.comb(n, keep) == 0:
        return torch.zeros(0, keep, dtype=torch.int64)
    return torch.tensor(list(itertools.combinations(range(n), keep)), dtype=torch.int64).view(-1, keep)


def random_subsets(rows: int, n: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, keep] uniformly random keep-subsets of range(n), sorted (training draws of the
    multi-band / multi-block ablations)."""
    return torch.rand(rows, n, generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values


def strided_corners(H: int, W: int, stride: tuple[int, int]) -> torch.Tensor:
    """Flat block corners i * W + j of strided block smoothing, i in 0, s_r, .. < H and j in
    0, s_c, .. < W, i-major (the order of Salman et al.'s loops); every corner at (1, 1)."""
    rows = torch.arange(0, H, stride[0], dtype=torch.int64)
    cols = torch.arange(0, W, stride[1], dtype=torch.int64)
    return (rows[:, None] * W + cols[None, :]).reshape(-1)


@functools.lru_cache(maxsize=64)
def cached_masks(
    kind: str, H: int, W: int, size: int, keep: int, axis: str, device: torch.device,
    stride: int | tuple[int, int] = 1,
) -> KeepMasks:
    """Masks of the default 'every position' / 'every combination' sets, built once per device.

    ``stride`` (bands: an integer; blocks: an integer or (rows, columns)) keeps only the starts
    0, s, 2s, ..: only those ablations are built (strided smoothing, Salman et al.)."""
    if kind == "band":
        n = W if axis == "column" else H
        return band_masks(H, W, size, torch.arange(0, n, stride), axis).to(device)
    if kind == "block":
        pair = stride if isinstance(stride, tuple) else (stride, stride)
        return block_masks(H, W, size, strided_corners(H, W, pair)).to(device)
    if kind == "multi_band":
        n = (W if axis == "column" else H) // size
        return multi_band_masks(H, W, size, all_combinations(n, keep), axis).to(device)
    if kind == "multi_block":
        return multi_block_masks(H, W, size, all_combinations((H // size) * (W // size), keep)).to(device)
    if kind == "all":
        return KeepMasks(_ones(1, H)[None], _ones(1, W)[None]).to(device)
    raise ValueError(f"unknown ablation kind {kind!r}")
