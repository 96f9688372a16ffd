"""Structured ablation: the encoded, ablated batches of column / row / block smoothing.

Every function takes NCHW images and returns the image-major batch the base model consumes:
sample ``b * P + p`` is image b under ablation p, with 2C channels ``[x, 1 - x]`` (after the
optional per-channel normalization) and zeros where the ablation drops the pixel (semantics.md §0-1).
All of them run one fused kernel (see masks.py for how ablations are described to it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastsmooth.ops._dispatch import OpTable, kernel_for
from fastsmooth._validation import check_images, check_index_tensor, check_int, check_out, check_stats
from fastsmooth.ops.ablation import masks as _masks
from fastsmooth.ops.ablation.masks import KeepMasks, all_combinations
from fastsmooth.ops.ablation.native import ablate_native
from fastsmooth.ops.ablation.reference import ablate_reference

Stats = Sequence[float] | torch.Tensor | None
Indices = Sequence[int] | torch.Tensor | range | None

__all__ = [
    "encode",
    "ablate_bands",
    "ablate_blocks",
    "ablate_multi_bands",
    "ablate_multi_blocks",
    "ablate_random_band",
    "ablate_random_block",
    "band_combinations",
    "block_combinations",
    "ablate_with_masks",
]


def _ablate_triton(*args: Any, **kwargs: Any) -> torch.Tensor:
    from fastsmooth.ops.ablation.triton_kernel import ablate_triton  # triton is optional

    return ablate_triton(*args, **kwargs)


_IMPLS = OpTable(
    "ablation", {"reference": ablate_reference, "cpu": ablate_native, "cuda": ablate_native, "triton": _ablate_triton}
)


def ablate_with_masks(
    x: torch.Tensor,
    masks: KeepMasks,
    mean: Stats = None,
    std: Stats = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Run the fused ablation kernel for an explicit mask description (see ``masks.KeepMasks``).

    ``out`` may be contiguous or channels-last contiguous (``torch.empty(...,
    memory_format=torch.channels_last)``): every backend writes either layout directly, and
    convolutions on the CPU run faster on channels-last inputs."""
    check_images(x)
    B, C, H, W = x.shape
    mean_t, std_t = check_stats(mean, std, x)
    check_out(out, (B * masks.count, 2 * C, H, W), x, channels_last_ok=True)
    return ablation_kernel(backend, x.device)(x, masks.to(x.device), mean_t, std_t, out=out)


def ablation_kernel(backend: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """The implementation ``ablate_with_masks`` runs for ``backend`` on ``device``, without its
    argument checks: ``kernel(x, masks, mean, std, out=out)`` with x from ``check_images``,
    mean / std from ``check_stats`` and masks on x's device. For loops that resolve and check
    once per call rather than once per chunk (a value check of device tensors would
    synchronize with the GPU)."""
    return kernel_for(_IMPLS, backend, device)


def _axis(axis: str) -> str:
    if axis not in ("column", "row"):
        raise ValueError(f"axis must be 'column' or 'row', got {axis!r}")
    return axis


def _positions(positions: Indices, name: str, high: int) -> torch.Tensor:
    t = check_index_tensor(positions, name, high, torch.device("cpu"))
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    return t


def encode(
    x: torch.Tensor, mean: Stats = None, std: Stats = None, *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2C, H, W): ``[v, 1 - v]`` with ``v = (x - mean) / std`` (or x), nothing ablated."""
    check_images(x)
    _, _, H, W = x.shape
    return ablate_with_masks(x, _masks.cached_masks("all", H, W, 1, 0, "column", x.device), mean, std, out=out, backend=backend)


def ablate_bands(
    x: torch.Tensor,
    size: int,
    positions: Indices = None,
    axis: str = "column",
    mean: Stats = None,
    std: Stats = None,
    *,
    stride: int = 1,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Band ablation: (B, C, H, W) -> (B * P, 2C, H, W), image-major.

    Ablation p keeps the band of ``size`` columns (or rows) starting at ``positions[p]``,
    wrapping around the last column: {pos, .., pos + size - 1} mod W. By default every
    position 0 .. W - 1 (or H - 1) in order; with ``stride`` s, the positions 0, s, 2s, ..
    (strided smoothing: only those ablations are written).
    """
    check_images(x)
    _, _, H, W = x.shape
    n = W if _axis(axis) == "column" else H
    size = check_int(size, "size", 1, n)
    stride = check_int(stride, "stride", 1, n)
    if positions is not None and stride != 1:
        raise ValueError(f"stride={stride} applies to the default positions; pass positions or stride, not both")
    if positions is None:
        masks = _masks.cached_masks("band", H, W, size, 0, axis, x.device, stride)
    else:
        masks = _masks.band_masks(H, W, size, _positions(positions, "positions", n), axis)
    return ablate_with_masks(x, masks, mean, std, out=out, backend=backend)


def _corners(positions: Indices, H: int, W: int) -> torch.Tensor:
    t = check_index_tensor(positions, "positions", max(H, W) * max(H, W) + 1, torch.device("cpu"))
    if t.dim() == 2 and t.shape[1] == 2:  # (i, j) pairs
        _positions(t[:, 0], "positions[:, 0] (row i)", H)
        _positions(t[:, 1], "positions[:, 1] (column j)", W)
        return t[:, 0] * W + t[:, 1]
    return _positions(t, "positions (flat corner i * W + j)", H * W)


def ablate_blocks(
    x: torch.Tensor,
    size: int,
    positions: Indices = None,
    mean: Stats = None,
    std: Stats = None,
    *,
    stride: int | tuple[int, int] = 1,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Block ablation: (B, C, H, W) -> (B * P, 2C, H, W), image-major.

    Ablation p keeps rows {i .. i + size - 1} mod H times columns {j .. j + size - 1} mod W.
    ``positions`` are flat corners ``i * W + j`` or (P, 2) pairs (i, j); by default all H * W
    corners, i-major, or with ``stride`` (an integer or (rows, columns)) the corners with i in
    0, s_r, 2 s_r, .. and j in 0, s_c, 2 s_c, .. only.
    """
    check_images(x)
    _, _, H, W = x.shape
    size = check_int(size, "size", 1, min(H, W))
    pair = tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)
    if len(pair) != 2:
        raise ValueError(f"stride must be an integer or a pair (rows, columns), got {stride!r}")
    pair = (check_int(pair[0], "stride (rows)", 1, H), check_int(pair[1], "stride (columns)", 1, W))
    if positions is not None and pair != (1, 1):
        raise ValueError(f"stride={stride} applies to the default corners; pass positions or stride, not both")
    if positions is None:
        masks = _masks.cached_masks("block", H, W, size, 0, "column", x.device, pair if pair != (1, 1) else 1)
    else:
        masks = _masks.block_masks(H, W, size, _corners(positions, H, W))
    return ablate_with_masks(x, masks, mean, std, out=out, backend=backend)


def band_combinations(n_bands: int, keep: int) -> torch.Tensor:
    """All ``keep``-subsets of ``range(n_bands)`` in ``itertools.combinations`` order, [P, keep]."""
    check_int(n_bands, "n_bands", 1, 1 << 30)
    check_int(keep, "keep", 1, n_bands)
    return all_combinations(n_bands, keep)


block_combinations = band_combinations  # tiles are numbered row-major; the same subsets


def _combos(combinations: Indices, n: int, keep: int) -> torch.Tensor:
    t = check_index_tensor(combinations, "combinations", n, torch.device("cpu"))
    if t.dim() != 2 or t.shape[1] != keep:
        raise ValueError(f"combinations must have shape (P, keep={keep}), got {tuple(t.shape)}")
    if t.numel() and bool((t.sort(dim=1).values[:, 1:] == t.sort(dim=1).values[:, :-1]).any()):
        raise ValueError("combinations must not repeat an index within a row")
    return t


def ablate_multi_bands(
    x: torch.Tensor,
    size: int,
    keep: int,
    combinations: Indices = None,
    axis: str = "column",
    mean: Stats = None,
    std: Stats = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-band ablation: ``keep`` aligned bands of width ``size`` per ablation, no wraparound.

    Band t covers columns (or rows) t * size .. t * size + size - 1, for t < n = W // size.
    Ablations are all ``keep``-subsets of the n bands in ``itertools.combinations`` order, or
    the rows of ``combinations`` (P, keep). Returns (B * P, 2C, H, W), image-major.
    """
    check_images(x)
    _, _, H, W = x.shape
    n_axis = W if _axis(axis) == "column" else H
    size = check_int(size, "size", 1, n_axis)
    n = n_axis // size
    keep = check_int(keep, "keep", 1, n)
    if combinations is None:
        masks = _masks.cached_masks("multi_band", H, W, size, keep, axis, x.device)
    else:
        masks = _masks.multi_band_masks(H, W, size, _combos(combinations, n, keep), axis)
    return ablate_with_masks(x, masks, mean, std, out=out, backend=backend)


def ablate_multi_blocks(
    x: torch.Tensor,
    size: int,
    keep: int,
    combinations: Indices = None,
    mean: Stats = None,
    std: Stats = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-block ablation: ``keep`` aligned ``size`` x ``size`` tiles per ablation.

    Tiles are numbered row-major: tile t covers tile row t // (W // size) and tile column
    t % (W // size). Ablations are all ``keep``-subsets of the (H // size) * (W // size) tiles
    in ``itertools.combinations`` order, or the rows of ``combinations``.
    """
    check_images(x)
    _, _, H, W = x.shape
    size = check_int(size, "size", 1, min(H, W))
    n = (H // size) * (W // size)
    keep = check_int(keep, "keep", 1, n)
    if combinations is None:
        masks = _masks.cached_masks("multi_block", H, W, size, keep, "column", x.device)
    else:
        masks = _masks.multi_block_masks(H, W, size, _combos(combinations, n, keep))
    return ablate_with_masks(x, masks, mean, std, out=out, backend=backend)


def ablate_random_band(
    x: torch.Tensor,
    size: int,
    axis: str = "column",
    mean: Stats = None,
    std: Stats = None,
    *,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Training-time band ablation: one uniformly random band per image, (B, 2C, H, W).

    Positions are drawn on the CPU with ``generator`` (a CPU ``torch.Generator``) for
    reproducibility independent of the device.
    """
    check_images(x)
    B, _, H, W = x.shape
    n = W if _axis(axis) == "column" else H
    size = check_int(size, "size", 1, n)
    starts = torch.randint(n, (B, 1), generator=generator)
    return ablate_with_masks(x, _masks.band_masks(H, W, size, starts, axis), mean, std, out=out, backend=backend)


def ablate_random_block(
    x: torch.Tensor,
    size: int,
    mean: Stats = None,
    std: Stats = None,
    *,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Training-time block ablation: one uniformly random block corner per image, (B, 2C, H, W)."""
    check_images(x)
    B, _, H, W = x.shape
    size = check_int(size, "size", 1, min(H, W))
    corners = torch.randint(H * W, (B, 1), generator=generator)
    return ablate_with_masks(x, _masks.block_masks(H, W, size, corners), mean, std, out=out, backend=backend)
