"""DSSN's lambda is computed exactly as the authors' code does, sigma / 3 ** -0.5 (SPEC §3)."""
from __future__ import annotations

import math

import numpy as np
import torch

import fastsmooth
from fastsmooth.ops import dssn_levels


def test_levels_on_a_dense_sigma_grid_match_the_authors_expression():
    sigmas = np.linspace(0.002, 4.0, 40001).tolist() + [0.4528237405408829, 0.25, 0.5, 1.0, 3.5]
    mismatched_sqrt3 = 0
    for sigma in sigmas:
        lam = sigma / 3 ** -0.5
        assert dssn_levels(sigma=sigma) == (lam, int(2 * lam * 255)), sigma
        mismatched_sqrt3 += int(2 * sigma * math.sqrt(3) * 255) != int(2 * lam * 255)
    assert mismatched_sqrt3 > 0  # the grid is dense enough to tell the two expressions apart


def test_the_spec_example_and_the_smoother():
    assert dssn_levels(sigma=0.4528237405408829)[1] == 400  # sigma * sqrt(3) gives 399
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    dssn = fastsmooth.DSSN(model, 3, sigma=0.4528237405408829)
    assert dssn.levels == 400 and dssn.lam == 0.4528237405408829 / 3 ** -0.5
    for sigma, levels in ((0.25, 220), (0.5, 441), (1.0, 883), (3.5, 3091)):  # SPEC §3
        assert dssn_levels(sigma=sigma)[1] == levels
