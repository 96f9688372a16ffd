"""Validity of the sequential decision.

- Exactly, at the boundary: ``fastsmooth.engine.audit.exact`` computes a rule's false-certification
  rate at p_A = p* (the worst case of "certificate(p_A) < t") by dynamic programming over the
  looks, for the hybrid and the union-bound rules, and the same computation catches two invalid
  variants. A simulation of 20,000 streams through ``update`` checks that the exact computation
  describes the decider's code path.
- End to end, on a base classifier whose p_A is known exactly: it looks at the noise of one
  pixel of a zero image, class 0 iff z < t, so p_A = Phi(t / sigma). At p_A just below the
  level's threshold Phi(r / sigma), every certification at r is false; over many images
  (independent noise streams) the rate must stay within alpha (one-sided binomial test), and
  the same test must catch the naive procedure that recomputes a fixed-n Clopper-Pearson bound
  at level alpha after every batch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

import fastsmooth.smoothing.sequential as sequential_module
from fastsmooth import Smooth
from fastsmooth.engine import Sequential
from fastsmooth.engine.audit import exact, one_level, simulate

SIGMA, RADIUS, ALPHA, IMAGES = 1.0, 1.0, 0.1, 1000
P_A = norm.cdf(RADIUS / SIGMA) - 0.003  # just below the threshold Phi(r / sigma) = 0.8413


class OnePixel(torch.nn.Module):
    """Class 0 iff the noised pixel is below t (the image is 0): p_A = Phi(t / sigma)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.reshape(x.shape[0], -1)[:, :1]
        return torch.cat([self.t - v, v - self.t], dim=1)


def false_certifications() -> tuple[int, torch.Tensor]:
    smooth = Smooth(OnePixel(SIGMA * norm.ppf(P_A)), 2, SIGMA, batch_size=20_000, backend="cpu")
    decided = smooth.decide_batch(torch.zeros(IMAGES, 1, 1, 1), [RADIUS], n0=100, n_max=3200, alpha=ALPHA, seed=5)
    return int((decided.certified[:, 0] & (decided.prediction == 0)).sum()), decided.forwards


def test_false_certification_rate_is_within_alpha():
    false, forwards = false_certifications()
    assert binomtest(false, IMAGES, ALPHA, alternative="greater").pvalue > 1e-3, false
    assert int(forwards.max()) <= 100 + 3200


class Naive(Sequential):
    """Recomputes the fixed-n Clopper-Pearson bound at level alpha at every look and stops once
    it certifies (invalid: each look spends the whole alpha)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("give_up", False)
        super().__init__(*args, **{**kwargs, "rule": "union"})
        self.look_alpha = {look: self.alpha for look in self.looks}


class Twice(Sequential):
    """The hybrid rule spending the whole alpha twice: the mixture at alpha and Clopper-Pearson
    at alpha at n_max (invalid: the two halves must share alpha)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "rule": "hybrid"})
        self.mixture_log_bound = float(np.log(1 / self.alpha))
        self.look_alpha = {look: self.alpha for look in self.look_alpha}


def identity(p: np.ndarray) -> np.ndarray:
    return np.asarray(p, dtype=np.float64)


@pytest.mark.parametrize("rule", ["hybrid", "union"])
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_exact_false_certification_rate_at_the_boundary_is_within_alpha(rule, alpha):
    for p_star in (0.5, 0.9, 0.99):
        decider = one_level(3200, alpha, p_star, rule=rule)
        at = exact(decider, p_star).certified
        assert 0.25 * alpha < at <= alpha, (p_star, at)  # valid, and not vacuously so
        assert exact(decider, p_star - 0.01).certified < at  # further into the null: rarer


@pytest.mark.parametrize("variant", [Naive, Twice])
def test_the_exact_audit_catches_invalid_variants(variant):
    alpha, p_star = 0.01, 0.8
    decider = variant(0, 3200, alpha, [p_star], identity, 1)
    assert exact(decider, p_star).certified > 1.2 * alpha


def test_the_exact_audit_describes_the_deciders_code_path():
    """20,000 Bernoulli streams through ``update`` (the engine's calls): the rate of
    certification and the mean samples agree with the exact computation."""
    n_max, alpha, p_star, streams = 1000, 0.05, 0.8, 20_000
    want = exact(one_level(n_max, alpha, p_star), p_star)
    certified, used = simulate(lambda s: one_level(n_max, alpha, p_star, slots=s), p_star, streams, seed=3)
    assert binomtest(int(certified.sum()), streams, want.certified).pvalue > 1e-3
    assert abs(used.mean() - want.samples) < 4 * used.std() / np.sqrt(streams)
    assert 0 < certified.mean() <= alpha


def test_the_same_test_catches_repeated_fixed_n_clopper_pearson(monkeypatch):
    monkeypatch.setattr(sequential_module, "Sequential", Naive)
    false, _ = false_certifications()
    assert binomtest(false, IMAGES, ALPHA, alternative="greater").pvalue < 1e-3, false


@pytest.mark.parametrize("batch_size", [700, 20_000])
def test_answers_do_not_depend_on_batch_size_or_image_order(batch_size):
    model = OnePixel(0.5)
    x = torch.linspace(0, 1, 12).reshape(12, 1, 1, 1)  # images in [0, 1], around the class boundary t
    smooth = Smooth(model, 2, 0.5, backend="cpu")
    a = smooth.decide_batch(x, [0.1, 0.3], n0=50, n_max=2000, alpha=0.01, batch_size=batch_size, seed=3)
    b = smooth.decide_batch(x, [0.1, 0.3], n0=50, n_max=2000, alpha=0.01, batch_size=333, seed=3)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.certified, b.certified)
    assert torch.equal(a.forwards, b.forwards)


def test_predict_false_skips_the_abstention_samples():
    """p_A = 0.6 and a radius it cannot reach: the level is given up within a few looks, but
    showing p_A > 1/2 (not abstaining) takes hundreds of samples; predict=False does not spend
    them, reports -1 ("not decided") where no level is certified, c_A where one is."""
    far = Smooth(OnePixel(SIGMA * norm.ppf(0.6)), 2, SIGMA, backend="cpu")
    x = torch.zeros(8, 1, 1, 1)
    both = far.decide_batch(x, [RADIUS], n0=100, n_max=3200, alpha=0.001, seed=2)
    levels_only = far.decide_batch(x, [RADIUS], n0=100, n_max=3200, alpha=0.001, seed=2, predict=False)
    assert not both.certified.any() and not levels_only.certified.any()
    assert (both.prediction == 0).all() and (levels_only.prediction == -1).all()
    assert float(levels_only.forwards.float().mean()) * 2 < float(both.forwards.float().mean())
    clear = Smooth(OnePixel(SIGMA * norm.ppf(0.999)), 2, SIGMA, backend="cpu")
    shown = clear.decide_batch(x, [0.5], n0=100, n_max=3200, alpha=0.001, seed=2, predict=False)
    assert shown.certified.all() and (shown.prediction == 0).all()
