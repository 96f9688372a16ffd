"""Patch certificates on counts: known answers, a transcription of semantics.md §1, and the
soundness of every Delta by brute force over patch positions (wraparound included)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsmooth import ops
from fastsmooth.certificates import (
    band_delta,
    block_delta,
    certify_counts,
    largest_certified_patch,
    multi_band_delta,
    multi_block_delta,
    patch_deltas,
    randomized_band_certified,
    randomized_band_patch_size,
)


def counts(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


# -- known answers ------------------------------------------------------------------------


def test_runner_up_is_smallest_index_of_second_largest_count():
    # c = 1 (11 votes); the runner-up is class 0, the smallest index holding 3. Gap 8 = 2 * Delta
    # (Delta = 3 + 2 - 1 = 4) and c > r: NOT certified. A runner-up taken as the largest index
    # (3) or by kthvalue would give c < r and wrongly certify.
    prediction, certified = certify_counts(counts([3, 11, 3, 3]), band_delta(3, 2))
    assert prediction.tolist() == [1]
    assert certified.tolist() == [False]
    assert largest_certified_patch(counts([3, 11, 3, 3]), patch_deltas(lambda m: band_delta(m, 2), 9))[1].tolist() == [2]


def test_tie_at_exactly_two_delta_in_both_index_orders():
    delta = band_delta(3, 2)  # 4
    _, certified = certify_counts(counts([11, 3], [3, 11]), delta)
    assert certified.tolist() == [True, False]  # gap 8 == 2 * Delta: only c < r certifies
    _, certified = certify_counts(counts([12, 3], [3, 12], [10, 3], [3, 10]), delta)
    assert certified.tolist() == [True, True, False, False]  # gap 9 > 8, gap 7 < 8


def test_tied_prediction_goes_to_smallest_index_and_is_not_certified():
    prediction, certified = certify_counts(counts([1, 5, 5], [0, 0, 0]), 1)
    assert prediction.tolist() == [1, 0]
    assert certified.tolist() == [False, False]
    # Delta = 0 (no patch) still needs the tie to go to c: c = 1, r = 2 -> 0 == 0 and c < r
    assert certify_counts(counts([1, 5, 5]), 0)[1].tolist() == [True]


def test_largest_certified_patch_hand_computed():
    deltas = patch_deltas(lambda m: band_delta(m, 2), 20)
    # gap 26: 26 >= 2 (m + 1) with equality allowed only for c < r
    prediction, size = largest_certified_patch(counts([30, 4, 0], [4, 30, 0], [5, 5, 0]), deltas)
    assert prediction.tolist() == [0, 1, 0]
    assert size.tolist() == [12, 11, 0]
    assert largest_certified_patch(counts([30, 4, 0]), deltas[:10])[1].tolist() == [10]  # capped at max_patch


def test_delta_values():
    assert band_delta(1, 1) == 1 and band_delta(5, 4) == 8
    assert block_delta(2, 3) == 16 and block_delta(5, 12) == 256
    # W = 28, s = 4: 7 bands, keep 2 -> 21 combinations
    assert multi_band_delta(1, 4, 7, 2) == 21 - 15  # a = 1
    assert multi_band_delta(4, 4, 7, 2) == 21 - 10  # a = ceil(3/4) + 1 = 2
    assert multi_band_delta(5, 4, 7, 2) == 21 - 10  # a = ceil(4/4) + 1 = 2
    assert multi_band_delta(6, 4, 7, 2) == 21 - 6  # a = ceil(5/4) + 1 = 3
    assert multi_band_delta(28, 4, 7, 2) == 21  # a = 8 > B: every combination
    # 28 x 28, s = 7: 16 tiles, keep 2 -> 120 combinations
    assert multi_block_delta(1, 7, 16, 2) == 120 - 105  # a = 1
    assert multi_block_delta(8, 7, 16, 2) == 120 - 66  # a = (1 + 1)^2 = 4
    assert multi_block_delta(9, 7, 16, 2) == 120 - 21  # a = (ceil(8/7) + 1)^2 = 9
    assert multi_block_delta(20, 7, 16, 2) == 120  # a = 16 = B


def test_delta_accepts_tensors():
    m = torch.arange(1, 8)
    assert band_delta(m, 3).tolist() == [band_delta(int(v), 3) for v in m]
    assert block_delta(m, 3).tolist() == [block_delta(int(v), 3) for v in m]
    assert multi_band_delta(m, 4, 7, 3).tolist() == [multi_band_delta(int(v), 4, 7, 3) for v in m]
    assert multi_block_delta(m, 2, 9, 2).tolist() == [multi_block_delta(int(v), 2, 9, 2) for v in m]


def test_randomized_band_bound():
    # certified iff p_lower > 1/2 + (m + s - 1) / W; s = 2, W = 10: p 0.85 certifies m <= 2
    assert randomized_band_certified(0.85, 2, 2, 10).item()
    assert not randomized_band_certified(0.85, 3, 2, 10).item()
    sizes = randomized_band_patch_size(torch.tensor([0.85, 0.5, 0.61, 1.0]), 2, 10, 5)
    assert sizes.tolist() == [2, 0, 0, 3]  # p = 1: m + 1 < 5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: band_delta(0, 2), "patch_size"),
        (lambda: band_delta(2.0, 2), "patch_size"),
        (lambda: band_delta(2, 0), "size"),
        (lambda: multi_band_delta(2, 4, 7, 8), "keep"),
        (lambda: certify_counts(torch.zeros(3), 1), "counts"),
        (lambda: certify_counts(torch.zeros(2, 3), 1), "counts"),
        (lambda: largest_certified_patch(counts([1, 2]), torch.zeros(0)), "deltas"),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# -- transcription of the spec ------------------------------------------------------------


def spec_certified(row: list[int], delta: int) -> tuple[int, bool]:
    order = sorted(range(len(row)), key=lambda k: -row[k])  # stable: smallest index first on ties
    c, r = order[0], order[1]
    gap = row[c] - row[r]
    return c, gap > 2 * delta or (gap == 2 * delta and c < r)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 12), min_size=4, max_size=4), min_size=1, max_size=6),
    st.integers(1, 6),
    st.integers(1, 3),
)
def test_certify_counts_matches_spec_transcription(rows, max_patch, size):
    c = torch.tensor(rows)
    deltas = patch_deltas(lambda m: band_delta(m, size), max_patch)
    prediction, largest = largest_certified_patch(c, deltas)
    for b, row in enumerate(rows):
        expected = [spec_certified(row, int(d)) for d in deltas]
        assert prediction[b].item() == expected[0][0]
        assert largest[b].item() == max([m + 1 for m, (_, ok) in enumerate(expected) if ok], default=0)
        for m, d in enumerate(deltas.tolist()):
            assert certify_counts(c[b : b + 1], d)[1].item() == expected[m][1]


# -- soundness of Delta: no patch meets more than Delta ablations --------------------------


def retained(ablated: torch.Tensor) -> torch.Tensor:
    """[P, H, W] bool: which pixels each ablation keeps (the input is 0.5 everywhere, so kept
    pixels are 0.5 in both encoded channels and ablated ones 0)."""
    return ablated[:, 0] != 0


def max_patch_hits(keep: torch.Tensor, m: int) -> tuple[int, int]:
    """(most, least) ablations met by an m x m patch over every position inside the image."""
    P, H, W = keep.shape
    hits = torch.nn.functional.max_pool2d(keep.float()[:, None], m, stride=1)[:, 0]  # [P, H-m+1, W-m+1]
    per_position = hits.sum(dim=0)
    return int(per_position.max()), int(per_position.min())


SHAPE = (7, 9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.sampled_from(["column", "row"]))
def test_band_delta_is_sound_and_tight(size, m, axis):
    H, W = SHAPE
    x = torch.full((1, 1, H, W), 0.5)
    length = W if axis == "column" else H
    size = min(size, length)
    keep = retained(ops.ablate_bands(x, size, axis=axis, backend="reference"))
    most, _ = max_patch_hits(keep, m)
    assert most <= band_delta(m, size)
    assert most == min(length, band_delta(m, size))  # a band of width s meets m + s - 1 positions


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7))
def test_block_delta_is_sound_and_tight(size, m):
    H, W = SHAPE
    x = torch.full((1, 1, H, W), 0.5)
    keep = retained(ops.ablate_blocks(x, size, backend="reference"))
    most, _ = max_patch_hits(keep, m)
    assert most <= block_delta(m, size)
    assert most == min(H, band_delta(m, size)) * min(W, band_delta(m, size))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 7), st.sampled_from(["column", "row"]))
def test_multi_band_delta_is_sound(size, keep, m, axis):
    H, W = SHAPE
    n = (W if axis == "column" else H) // size
    keep = min(keep, n)
    x = torch.full((1, 1, H, W), 0.5)
    kept = retained(ops.ablate_multi_bands(x, size, keep, axis=axis, backend="reference"))
    assert kept.shape[0] == math.comb(n, keep)
    most, _ = max_patch_hits(kept, m)
    assert most <= multi_band_delta(m, size, n, keep)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 7))
def test_multi_block_delta_is_sound(size, keep, m):
    H, W = SHAPE
    n = (H // size) * (W // size)
    keep = min(keep, n)
    x = torch.full((1, 1, H, W), 0.5)
    kept = retained(ops.ablate_multi_blocks(x, size, keep, backend="reference"))
    most, _ = max_patch_hits(kept, m)
    assert most <= multi_block_delta(m, size, n, keep)
