"""Patch certificates of column / row / block smoothing (semantics.md §1), on vote counts.

Every function is pure and vectorized over a batch of images: counts are int64 [B, K]. A
"Delta" is the largest number of ablations an m x m adversarial patch can intersect, so it
can change at most Delta votes of every class (one per ablation and class, in threshold mode).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from fastsmooth._validation import check_int

from fastsmooth.certificates.counts import top_two

IntOrTensor = int | torch.Tensor

__all__ = [
    "band_delta",
    "block_delta",
    "band_starts",
    "bands_touched",
    "strided_band_delta",
    "strided_block_delta",
    "multi_band_delta",
    "multi_block_delta",
    "patch_deltas",
    "certify_counts",
    "largest_certified_patch",
    "randomized_band_certified",
    "randomized_band_patch_size",
]


def _check_patch(patch_size: IntOrTensor) -> None:
    if isinstance(patch_size, torch.Tensor):
        if patch_size.is_floating_point() or patch_size.dtype == torch.bool:
            raise TypeError(f"patch_size must hold integers, got dtype {patch_size.dtype}")
        low = int(patch_size.min()) if patch_size.numel() else 1
    elif isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral):
        raise TypeError(f"patch_size must be an integer or an integer tensor, got {patch_size!r}")
    else:
        low = int(patch_size)
    if low < 1:
        raise ValueError(f"patch_size must be >= 1, got {low}")


def _check_positive(value: int, name: str) -> int:
    return check_int(value, name, 1)


def band_delta(patch_size: IntOrTensor, size: int) -> IntOrTensor:
    """Band smoothing: an m-wide patch meets at most ``m + s - 1`` of the W band ablations."""
    _check_patch(patch_size)
    return patch_size + _check_positive(size, "size") - 1


def block_delta(patch_size: IntOrTensor, size: int) -> IntOrTensor:
    """Block smoothing: an m x m patch meets at most ``(m + s - 1)^2`` of the H * W block ablations."""
    return band_delta(patch_size, size) ** 2


def band_starts(length: int, stride: int) -> torch.Tensor:
    """The retained band starts of strided smoothing, 0, s, 2s, .. < length (int64): ceil(length / s)
    of them (Salman et al.'s ``range(0, length, stride)``)."""
    length = _check_positive(length, "length")
    return torch.arange(0, length, check_int(stride, "stride", 1, length), dtype=torch.int64)


def bands_touched(patch_size: IntOrTensor, size: int, stride: int, length: int) -> IntOrTensor:
    """The largest number of the retained bands (starts ``band_starts(length, stride)``, width
    ``size``, wraparound) that an m-wide patch, anywhere in the image (columns q .. q + m - 1,
    0 <= q <= length - m), meets: the exact maximum over the patch positions.

    Band p meets the patch iff p lies in the cyclic window {q - size + 1, .., q + m - 1} mod
    length (m + size - 1 residues, all of them once that reaches length). With s dividing the
    length this is min(ceil((m + size - 1) / s), length / s), the paper's count; otherwise the
    last band before the wrap is closer than s to band 0 and a window across the wrap can hold
    one band more than ceil((m + size - 1) / s): counting the window in the actual retained set
    keeps the certificate sound there (and tight everywhere).
    """
    _check_patch(patch_size)
    length = _check_positive(length, "length")
    size = check_int(size, "size", 1, length)
    stride = check_int(stride, "stride", 1, length)
    m = torch.as_tensor(patch_size, dtype=torch.int64)
    if m.numel() and int(m.max()) > length:
        raise ValueError(f"patch_size must be <= the image's length {length} along the bands' axis, got {int(m.max())}")
    retained = torch.zeros(length, dtype=torch.int64)
    retained[::stride] = 1
    # prefix sums over two turns of the circle: a window [a, a + w) with a < length, w <= length
    prefix = torch.cat([torch.zeros(1, dtype=torch.int64), retained.repeat(2).cumsum(0)])
    q = torch.arange(length, dtype=torch.int64)  # patch starts
    flat = m.reshape(-1, 1).to("cpu")
    first = (q - size + 1) % length  # [Q]
    width = (flat + size - 1).clamp(max=length)  # [M, 1]
    inside = prefix[first[None, :] + width] - prefix[first][None, :]  # [M, Q]
    inside = torch.where(q[None, :] <= length - flat, inside, torch.zeros((), dtype=torch.int64))
    most = inside.amax(dim=1)
    if isinstance(patch_size, torch.Tensor):
        return most.view(patch_size.shape).to(patch_size.device)
    return int(most[0])


def strided_band_delta(patch_size: IntOrTensor, size: int, stride: int, length: int) -> IntOrTensor:
    """Band smoothing over the retained starts 0, s, 2s, .. (``stride`` s): Delta = the largest
    number of them an m-wide patch meets (``bands_touched``). Stride 1 is ``band_delta``
    (m + s - 1, today's value, bit for bit)."""
    if check_int(stride, "stride", 1) == 1:
        return band_delta(patch_size, size)
    return bands_touched(patch_size, size, stride, length)


def _pair(stride: int | Sequence[int]) -> tuple[int, int]:
    """A block stride: one integer for both axes, or (rows, columns)."""
    if isinstance(stride, (tuple, list)):
        if len(stride) != 2:
            raise ValueError(f"stride must be an integer or a pair (rows, columns), got {stride!r}")
        return check_int(stride[0], "stride (rows)", 1), check_int(stride[1], "stride (columns)", 1)
    stride = check_int(stride, "stride", 1)
    return stride, stride


def strided_block_delta(
    patch_size: IntOrTensor, size: int, stride: int | Sequence[int], height: int, width: int
) -> IntOrTensor:
    """Block smoothing over the corners (i, j), i in 0, s_r, 2 s_r, .. < H and j in 0, s_c, .. < W:
    an m x m patch meets a retained block iff its rows meet the block's rows and its columns
    the block's columns, so Delta = bands_touched(rows) * bands_touched(columns) (the two
    maxima are reached together: the patch's row and column positions are independent).
    Stride 1 on both axes is ``block_delta``, bit for bit."""
    rows, cols = _pair(stride)
    if rows == cols == 1:
        return block_delta(patch_size, size)
    return bands_touched(patch_size, size, rows, height) * bands_touched(patch_size, size, cols, width)


def _tiles_touched(patch_size: int, size: int) -> int:
    """Aligned tiles of width s an m-wide interval can meet along one axis: ceil((m-1)/s) + 1."""
    return -(-(patch_size - 1) // size) + 1


def _multi_delta(patch_size: IntOrTensor, n: int, keep: int, touched: Callable[[int], int]) -> IntOrTensor:
    """C(n, keep) - C(n - a, keep): the keep-subsets of n units that contain one of the a touched units."""
    _check_patch(patch_size)
    _check_positive(n, "n_bands")
    keep = check_int(keep, "keep", 1, n)

    def one(m: int) -> int:
        a = touched(m)
        return math.comb(n, keep) - (math.comb(n - a, keep) if a <= n else 0)  # a may exceed n

    if isinstance(patch_size, torch.Tensor):
        values = [one(int(m)) for m in patch_size.reshape(-1).tolist()]
        return torch.tensor(values, dtype=torch.int64, device=patch_size.device).view(patch_size.shape)
    return one(patch_size)


def multi_band_delta(patch_size: IntOrTensor, size: int, n_bands: int, keep: int) -> IntOrTensor:
    """Multi-band smoothing (``keep`` of ``n_bands = W // s`` aligned bands, no wraparound).

    An m-wide patch touches at most a = ceil((m - 1) / s) + 1 bands; the ablations affected
    are those whose subset contains one of them: Delta = C(B, keep) - C(B - a, keep).
    """
    _check_positive(size, "size")
    return _multi_delta(patch_size, n_bands, keep, lambda m: _tiles_touched(m, size))


def multi_block_delta(patch_size: IntOrTensor, size: int, n_tiles: int, keep: int) -> IntOrTensor:
    """Multi-block smoothing (``keep`` of ``n_tiles = (H // s) * (W // s)`` aligned s x s tiles).

    An m x m patch touches at most a = (ceil((m - 1) / s) + 1)^2 tiles; same Delta formula.
    """
    _check_positive(size, "size")
    return _multi_delta(patch_size, n_tiles, keep, lambda m: _tiles_touched(m, size) ** 2)


def patch_deltas(delta: Callable[[torch.Tensor], torch.Tensor], max_patch: int) -> torch.Tensor:
    """Delta for every patch size m = 1 .. max_patch, as int64 [max_patch] (index m - 1)."""
    _check_positive(max_patch, "max_patch")
    return torch.as_tensor(delta(torch.arange(1, max_patch + 1, dtype=torch.int64)), dtype=torch.int64)


def _check_counts(counts: torch.Tensor) -> torch.Tensor:
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2 or counts.shape[1] < 2:
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"counts must be an integer tensor [B, K] with K >= 2, got {shape}")
    if counts.is_floating_point():
        raise TypeError(f"counts must hold integers, got dtype {counts.dtype}")
    return counts.to(torch.int64)


def certify_counts(counts: torch.Tensor, delta: IntOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, certified) for counts [B, K] against a patch whose Delta is ``delta``.

    ``delta`` is an int, or a tensor broadcasting against [B] (one Delta per image) or
    [B, M] (several patch sizes at once). The prediction c is the argmax (smallest index on
    ties) and r the runner-up of ``top_two``. Certified iff n_c - n_r > 2 Delta, or
    n_c - n_r == 2 Delta and c < r: the patch moves n_c down and n_r up by Delta at most,
    and a tie at the end still goes to c only if c has the smaller index.
    """
    counts = _check_counts(counts)
    prediction, runner_up = top_two(counts)
    gap = counts.gather(1, prediction[:, None])[:, 0] - counts.gather(1, runner_up[:, None])[:, 0]
    delta_t = torch.as_tensor(delta, dtype=torch.int64, device=counts.device)
    if delta_t.dim() == 2:
        gap, wins_tie = gap[:, None], (prediction < runner_up)[:, None]
    else:
        wins_tie = prediction < runner_up
    certified = (gap > 2 * delta_t) | ((gap == 2 * delta_t) & wins_tie)
    return prediction, certified


def largest_certified_patch(counts: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, m) with m the largest patch size certified, 0 when none is.

    ``deltas`` [M] holds Delta for m = 1 .. M (see ``patch_deltas``). Every m is tested
    (no assumption that certificates are monotone in m).
    """
    deltas = torch.as_tensor(deltas, dtype=torch.int64)
    if deltas.dim() != 1 or deltas.numel() < 1:
        raise ValueError(f"deltas must be a non-empty 1-D tensor (Delta for m = 1 .. M), got shape {tuple(deltas.shape)}")
    counts = _check_counts(counts)
    deltas = deltas.to(counts.device)
    prediction, certified = certify_counts(counts, deltas[None, :].expand(counts.shape[0], -1))
    sizes = torch.arange(1, deltas.numel() + 1, dtype=torch.int64, device=counts.device)
    return prediction, (certified * sizes).amax(dim=1)


def _length(length: int) -> int:
    return _check_positive(length, "length")


def randomized_band_certified(
    p_lower: float | torch.Tensor, patch_size: IntOrTensor, size: int, length: int
) -> torch.Tensor:
    """Randomized band smoothing: certified iff ``p_lower > 1/2 + (m + s - 1) / W``.

    A random band meets an m-wide patch with probability at most (m + s - 1) / W, so the
    top class keeps probability above 1/2 under any patch. ``length`` is W (H for rows).
    """
    p = torch.as_tensor(p_lower, dtype=torch.float64)
    bound = 0.5 + torch.as_tensor(band_delta(patch_size, size), dtype=torch.float64) / _length(length)
    return p > bound


def randomized_band_patch_size(
    p_lower: float | torch.Tensor | Sequence[float], size: int, length: int, max_patch: int
) -> torch.Tensor:
    """Largest m in 1 .. max_patch certified by ``randomized_band_certified`` (0 if none), int64 [B]."""
    p = torch.as_tensor(p_lower, dtype=torch.float64).reshape(-1)
    sizes = torch.arange(1, _check_positive(max_patch, "max_patch") + 1, dtype=torch.int64)
    certified = randomized_band_certified(p[:, None], sizes[None, :], size, length)
    return (certified * sizes).amax(dim=1)
