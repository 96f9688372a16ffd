"""Sequential (anytime-valid) decisions of the sampling smoothers at given levels.

Shared by ``Smooth``, ``SSN``, ``UniformSmoothing``, ``RandomizedAblation`` and
``RandomizedBandSmoothing``: n0 samples choose the class, then the estimation samples of the
same stream are looked at on a geometric schedule (``fastsmooth.engine.Sequential``: a union
bound over the looks of Clopper-Pearson intervals) until every level is decided.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fastsmooth.engine import Sequential
from fastsmooth.smoothing.base import Decided

FIRST_LOOK = 100  # estimation samples at the first look
GROWTH = 2.0  # each look has at least this many times the samples of the last


def decide_sequentially(
    execute: Callable[[Sequential], torch.Tensor],
    images: int,
    levels: Sequence[float],
    n0: int,
    n_max: int,
    alpha: float,
    certificate: Callable[[np.ndarray], np.ndarray],
    abstains: bool,
    first: int = FIRST_LOOK,
    growth: float = GROWTH,
) -> Decided:
    """Run ``execute(decider)`` (the smoother's units through the engine; returns the units
    each image used) and read the answers.

    ``certificate(p)``: the certificate (radius / patch size) of a lower bound p, non-decreasing.
    ``abstains``: the smoother abstains (prediction -1, nothing certified) when the certificate
    of its bound is below 0 at the end, as Cohen's CERTIFY does below p = 1/2; level 0 is then
    decided alongside the others.
    """
    asked = [float(t) for t in levels]
    decider = Sequential(n0, n_max, alpha, asked + ([0.0] if abstains else []), certificate, images, first, growth)
    units = execute(decider)
    prediction, certified = decider.prediction.clone(), decider.certified.clone()
    if abstains:
        holds = certified[:, -1]
        prediction = torch.where(holds, prediction, torch.full_like(prediction, -1))
        certified = certified[:, :-1] & holds[:, None]
    return Decided(prediction, certified, units.clone())
