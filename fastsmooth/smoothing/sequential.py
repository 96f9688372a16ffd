"""Sequential (anytime-valid) decisions of the sampling smoothers at given levels.

Shared by ``Smooth``, ``SSN``, ``UniformSmoothing``, ``RandomizedAblation`` and
``RandomizedBandSmoothing``: up to n0 samples choose the class (adaptive selection stops at
16, 32, 64, ... samples once a sign test shows the leader ahead), then the estimation samples of the
same stream are looked at on a schedule (``fastsmooth.engine.Sequential``: a truncated
Krichevsky-Trofimov mixture test per level plus Clopper-Pearson at n_max, or the union bound
over the looks of Clopper-Pearson intervals) until every level is decided. The
sequential PREDICT (``fastsmooth.engine.SequentialPredict``) tests the top two counts on the
same schedule.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fastsmooth.engine import Sequential, SequentialPredict
from fastsmooth.engine.deciders import FIRST_LOOK, GROWTH, top_two_pvalues
from fastsmooth.smoothing.base import Decided


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
    predict: bool = True,
    rule: str = "hybrid",
    selection: str | None = None,
) -> Decided:
    """Run ``execute(decider)`` (the smoother's units through the engine; returns the units
    each image used) and read the answers.

    ``certificate(p)``: the certificate (radius / patch size) of a lower bound p, non-decreasing.
    ``abstains``: the smoother abstains (prediction -1, nothing certified) when the certificate
    of its bound is below 0 at the end, as Cohen's CERTIFY does below p = 1/2.
    ``predict``: decide the abstention too (level 0 is then decided alongside the others and an
    image is certified at a level only where it does not abstain). ``predict=False`` asks only
    the levels: an image stops once they are decided, without the samples that showing
    certificate >= 0 may take after every level is given up (at p_A = 0.6 and a level it cannot
    reach, ~500 against 64); its prediction is c_A where some level is certified (a certificate
    >= t >= 0 shows it does not abstain) and -1, "not decided", elsewhere.
    ``rule``: the decision rule; ``selection``: how c_A is chosen, ``"adaptive"`` (the
    default under the hybrid rule: a sign test at 16, 32, 64, ... selection samples may fix c_A
    before n0) or ``"fixed"`` (n0 samples); see ``fastsmooth.engine.Sequential``. The units each
    image used (``forwards``) count the selection samples it actually drew.
    """
    asked = [float(t) for t in levels]
    decide_abstention = abstains and predict
    decider = Sequential(n0, n_max, alpha, asked + ([0.0] if decide_abstention else []), certificate, images,
                         first, growth, rule=rule, selection=selection)
    units = execute(decider)
    prediction, certified = decider.prediction.clone(), decider.certified.clone()
    if decide_abstention:
        holds = certified[:, -1]
        prediction = torch.where(holds, prediction, torch.full_like(prediction, -1))
        certified = certified[:, :-1] & holds[:, None]
    elif abstains:  # not decided: c_A only where a certified level shows it
        shown = certified.any(dim=1) if certified.shape[1] else torch.zeros_like(prediction, dtype=torch.bool)
        prediction = torch.where(shown, prediction, torch.full_like(prediction, -1))
    return Decided(prediction, certified, units.clone())


def predict_sequentially(
    execute: Callable[[SequentialPredict], torch.Tensor], images: int, n_max: int, alpha: float
) -> Decided:
    """Cohen et al.'s PREDICT with anytime-valid looks: ``execute(decider)`` runs the units of
    one stream per image (no separate selection samples) and returns the units each used.
    ``certified`` is empty ([B, 0]): no level is asked."""
    decider = SequentialPredict(n_max, alpha, images)
    units = execute(decider)
    return Decided(decider.prediction.clone(), torch.zeros(images, 0, dtype=torch.bool), units.clone())


def predict_fixed(counts: torch.Tensor, alpha: float, n: int) -> Decided:
    """Cohen et al.'s PREDICT on complete counts [B, K] of n samples: the top class unless the
    two-sided binomial test of the top two counts at p = 1/2 has p-value > alpha (-1)."""
    top, pvalues = top_two_pvalues(counts.cpu())
    abstain = torch.from_numpy(pvalues > alpha)
    prediction = torch.where(abstain, torch.full_like(top, -1), top)
    B = counts.shape[0]
    return Decided(prediction, torch.zeros(B, 0, dtype=torch.bool), torch.full((B,), n, dtype=torch.int64))
