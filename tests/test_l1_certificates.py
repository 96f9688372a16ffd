"""l1 certificates: the DSSN radius by hand, and its exactness by brute force over a tiny quantized domain."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsmooth.certificates import dssn_radius, randomized_l1_radius
from fastsmooth.ops import dssn_levels, dssn_split


@pytest.mark.parametrize(
    "counts,prediction,levels",
    [
        ([10, 3, 2], 0, 3),  # margin 7 -> floor(7 / 2)
        ([3, 10, 10], 1, 0),  # tie with a larger index: c = 1 wins it, margin 0
        ([4, 4, 0], 0, 0),  # tie won by the smaller index
        ([2, 7, 1, 2], 1, 2),  # runner-up r = 0 < c: (7 - 2 - 1) / 2
        ([2, 8, 0, 2], 1, 2),  # (8 - 2 - 1) / 2 = 2.5 -> 2
        ([0, 3, 0], 1, 1),  # (3 - 0 - 1) / 2
        ([0, 0, 0], 0, 0),
        ([1, 0, 9], 2, 3),  # r = 0 < c: floor((9 - 1 - 1) / 2)
    ],
)
def test_radius_by_hand(counts, prediction, levels):
    c, radius = dssn_radius(torch.tensor([counts]))
    assert int(c) == prediction
    assert radius.dtype == torch.float64 and float(radius) == levels / 255
    assert float(dssn_radius(torch.tensor([counts]), q=4)[1]) == levels / 4


def test_radius_rejects_float_counts():
    with pytest.raises(TypeError, match="counts must hold integers"):
        dssn_radius(torch.tensor([[1.0, 2.0]]))


def test_randomized_radius():
    r = randomized_l1_radius(np.array([0.5, 0.75, 0.25]), lam=2.0)
    assert r.dtype == torch.float64 and r.tolist() == [0.0, 1.0, -1.0]


Q, D = 4, 3
GRID = torch.tensor(list(itertools.product(range(Q + 1), repeat=D)), dtype=torch.int64)  # 125 points, in levels
L1 = (GRID[:, None, :] - GRID[None, :, :]).abs().sum(-1)  # ||x - x'||_1 * q


def _exact_counts(lam: float, template: list[int], table: np.ndarray, classes: int) -> torch.Tensor:
    """Votes of the base function `table` (a class per split image) over all L evaluations of every x."""
    x = (GRID.double() / Q).float().reshape(-1, D, 1, 1)
    _, L = dssn_levels(lam=lam, q=Q)
    split = dssn_split(x, lam=lam, template=torch.tensor(template), q=Q, backend="reference")
    coords = torch.round(split.reshape(-1, D).double() * 4 * Q).long()  # split values lie on a 1/(4q) grid
    assert torch.equal(coords.double() / (4 * Q), split.reshape(-1, D).double())
    key = (coords * torch.tensor([(4 * Q + 1) ** 2, 4 * Q + 1, 1])).sum(-1)
    votes = torch.from_numpy(table[key.numpy()]).reshape(len(GRID), L)
    return torch.zeros(len(GRID), classes, dtype=torch.int64).scatter_add_(1, votes, torch.ones_like(votes))


@pytest.mark.parametrize("lam", [0.25, 0.5, 1.5])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_exact_by_brute_force(lam, data):
    _, L = dssn_levels(lam=lam, q=Q)
    assert L == round(2 * lam * Q)  # 2 lambda = L / q exactly for these lambdas
    template = data.draw(st.lists(st.integers(0, L - 1), min_size=D, max_size=D), label="template")
    classes = data.draw(st.integers(2, 4), label="classes")
    seed = data.draw(st.integers(0, 2**32 - 1), label="base function seed")
    table = np.random.RandomState(seed).randint(classes, size=(4 * Q + 1) ** D)
    counts = _exact_counts(lam, template, table, classes)
    assert bool((counts.sum(1) == L).all())
    # p_c(x) = n_c(x) / L is 1/(2 lambda)-Lipschitz in l1: |n_c(x) - n_c(x')| <= q ||x - x'||_1.
    change = (counts[:, None, :] - counts[None, :, :]).abs().amax(-1)
    assert bool((change <= L1).all()), "p(x) is not 1/(2 lambda)-Lipschitz"
    # The radius never certifies a pair whose prediction differs.
    prediction, radius = dssn_radius(counts, q=Q)
    covered = L1 <= torch.round(radius * Q).long()[:, None]
    assert bool((prediction[:, None] == prediction[None, :])[covered].all()), "unsound certificate"
    assert bool(covered.diagonal().all())  # a radius is never negative
