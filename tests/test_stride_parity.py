"""Parity with the strided certification of Salman et al. 2022 (MadryLab/smoothed-vit,
``src/utils/smoothing.py``: ``ablate``, ``ablate2``, ``DerandomizedSmoother``,
``BlockDerandomizedSmoother``, ``certify``), transcribed below from the paper and that code,
on counts of a model and images of this file's own, at strides 1, 5, 10 and 7 (which does
not divide the width 30).

Their procedure, as transcribed:
- positions ``range(0, total_pos, stride)`` per axis; a band of k at pos keeps pos .. pos + k - 1,
  continuing at 0 past the edge; blocks: rows and columns each so, for i in the row positions
  and j in the column positions (i outer);
- votes: ``softmax >= threshold``, or ``softmax == its max`` without a threshold;
- ``na = ceil((m + s - 1) / stride)``; certified iff the label is the top class (kthvalue) and
  ``top1 >= top2 + gap`` with ``gap = 2 na + 1`` (bands) or ``2 na^2 + 1`` (blocks).

The one adaptation: their base model's input is ``[x * mask, mask]``; fastsmooth's models take
the ``[x, 1 - x]`` encoding of semantics.md §0, so the transcription encodes the retained
region that way (the positions, votes and the certificate are theirs).

Where fastsmooth differs, on purpose (semantics.md, "Strided ablation"): a gap of exactly
2 Delta certifies when the top class has the smaller index (the tie rule of semantics.md §1;
they ask for one vote more), and when the stride does not divide the length, Delta is the
exact number of retained bands a patch can meet, which exceeds their na for a patch at the
left edge (the last band wraps onto the first columns, closer than a stride to band 0).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fastsmooth.certificates import top_two
from fastsmooth.smoothing import BlockSmoothing, ColumnSmoothing
from test_patch_smoothing import tiny_net

H = W = 30
SIZE = 4  # the ablation size s of their code


# -- the transcription ---------------------------------------------------------------------------


def their_band(x: torch.Tensor, pos: int, k: int, total: int, dim: int) -> torch.Tensor:
    """``ablate``: the retained pixels' mask [B, 1, H, W] of the band at pos (wrapping past the edge)."""
    mask = x.new_zeros(x.size(0), 1, x.size(2), x.size(3))
    if pos + k > total:
        first = [slice(None)] * 4
        second = [slice(None)] * 4
        first[dim], second[dim] = slice(pos, total), slice(0, pos + k - total)
        mask[tuple(first)] = 1
        mask[tuple(second)] = 1
    else:
        index = [slice(None)] * 4
        index[dim] = slice(pos, pos + k)
        mask[tuple(index)] = 1
    return mask


def their_block(x: torch.Tensor, corner: tuple[int, int], k: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """``ablate2``: the mask of the block at corner, each axis wrapping as ``ablate``."""
    mask = x.new_zeros(x.size(0), 1, x.size(2), x.size(3))
    slices = []
    for pos, size, total in zip(corner, k, shape):
        slices.append([slice(0, pos + size - total), slice(pos, total)] if pos + size > total else [slice(pos, pos + size)])
    for si, sj in itertools.product(*slices):
        mask[:, :, si, sj] = 1
    return mask


def encoded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The adaptation: fastsmooth's [x, 1 - x] encoding of the retained region (0 elsewhere)."""
    return torch.cat([x, 1 - x], dim=1) * mask


def their_counts(model, x, mode: str, stride: int, threshold: float | None, nclasses: int) -> torch.Tensor:
    """``DerandomizedSmoother`` (column model only) / ``BlockDerandomizedSmoother`` votes."""
    predictions = torch.zeros(x.size(0), nclasses, dtype=torch.int64)
    if mode == "col":
        masks = [their_band(x, pos, SIZE, W, 3) for pos in range(0, W, stride)]
    else:
        masks = [their_block(x, (i, j), (SIZE, SIZE), (H, W)) for i in range(0, H, stride) for j in range(0, W, stride)]
    with torch.no_grad():
        for mask in masks:
            out = F.softmax(model(encoded(x, mask)), dim=1)
            if threshold is not None:
                predictions += (out >= threshold).long()
            else:
                predictions += (out.max(1)[0].unsqueeze(1) == out).long()
    return predictions


def their_certified(counts: torch.Tensor, y: torch.Tensor, mode: str, m: int, stride: int) -> torch.Tensor:
    """``certify``: the label is the top class and it leads the runner-up by ``gap``."""
    nclasses = counts.shape[1]
    na = math.ceil((m + SIZE - 1) / stride)
    gap = 2 * na**2 + 1 if mode == "block" else 2 * na + 1
    first_vals, first_idx = counts.kthvalue(nclasses, dim=1)
    second_vals, _ = counts.kthvalue(nclasses - 1, dim=1)
    return (y == first_idx) & (first_vals >= second_vals + gap)


# -- the comparison --------------------------------------------------------------------------------


# blocks at stride 1 (900 per image) are left to the band case
@pytest.mark.parametrize("mode,stride", [("col", 1), ("col", 5), ("col", 10), ("col", 7), ("block", 5), ("block", 10),
                                         ("block", 7)])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_counts_and_certificates_match_the_transcription(mode, stride, threshold):
    nclasses, certified_somewhere = 10, 0
    for seed, bias in ((0, 1.0), (1, 4.0), (2, 8.0)):  # biases spread the margins
        model = tiny_net(1, nclasses, seed=seed, scale=3.0, bias=bias)
        x = torch.rand(4, 1, H, W, generator=torch.Generator().manual_seed(seed))
        y = torch.tensor([0, 0, 1, 2])  # images whose label is, and is not, the top class
        cls = ColumnSmoothing if mode == "col" else BlockSmoothing
        smoother = cls(model, nclasses, SIZE, threshold=threshold, batch_size=64, stride=stride)
        counts = smoother.counts(x)
        assert torch.equal(counts, their_counts(model, x, mode, stride, threshold, nclasses))
        prediction, runner_up = top_two(counts)
        gap = counts.gather(1, prediction[:, None])[:, 0] - counts.gather(1, runner_up[:, None])[:, 0]
        full = smoother.evaluate_batch(x)  # the largest certified m, from the full counts
        assert torch.equal(full.prediction, prediction)  # theirs: predictions.argmax(1)
        early = smoother.certify(x, 2)  # the exact early exit answers the same
        assert torch.equal(early[0], prediction) and torch.equal(early[1], full.certificate >= 2)
        for m in (1, 2, 3, 5, 8):
            delta = int(smoother.delta(m, H, W))
            na = math.ceil((m + SIZE - 1) / stride)
            paper = na**2 if mode == "block" else na
            if W % stride == 0:
                assert delta == paper or (stride == 1 and m + SIZE - 1 > W)  # their count
            else:
                assert delta >= paper  # a band wrapping onto the first columns: one more at the edge
            ours = (full.certificate >= m) & (prediction == y)
            theirs = their_certified(counts, y, mode, m, stride)
            tie = (prediction == y) & (gap == 2 * delta) & (prediction < runner_up)
            if delta == paper:  # the same Delta: they differ exactly in the tie rule
                assert torch.equal(ours, theirs | tie)
            else:  # a larger, exact Delta: fastsmooth certifies a subset of theirs
                assert not bool((ours & ~theirs).any())
            certified_somewhere += int(theirs.sum())
    assert certified_somewhere > 0  # the comparison met certified images


def test_their_count_is_broken_by_a_patch_when_the_stride_does_not_divide_the_width():
    """W = 30, stride 7: bands start at 0, 7, 14, 21, 28; band 28 keeps columns 28, 29, 0, 1, so a
    1 x 1 patch at column 0 meets two bands, not ceil((1 + 4 - 1) / 7) = 1. A model that votes 1
    wherever a retained pixel is bright: one bright pixel at column 15 gives counts (4, 1), a gap
    of 3 = 2 na + 1 that they certify at m = 1; the patch flips two votes and the prediction."""
    from test_patch_smoothing import Trigger

    model = Trigger(1, 2, default=0, target=1)
    x = torch.full((1, 1, H, W), 0.5)
    x[0, 0, 5, 15] = 1.0
    smoother = ColumnSmoothing(model, 2, SIZE, stride=7)
    counts = smoother.counts(x)
    assert counts.tolist() == [[4, 1]] and torch.equal(counts, their_counts(model, x, "col", 7, None, 2))
    assert bool(their_certified(counts, torch.tensor([0]), "col", 1, 7)[0])
    patched = x.clone()
    patched[0, 0, 5, 0] = 1.0
    assert smoother.counts(patched).tolist() == [[2, 3]]  # the prediction flips under a 1 x 1 patch
    assert smoother.delta(1, H, W) == 2 and not bool(smoother.certify(x, 1)[1][0])  # fastsmooth does not certify
