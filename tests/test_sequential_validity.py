"""Validity of the sequential decision on a base classifier whose p_A is known exactly.

The base classifier looks at the noise of one pixel of a zero image: class 0 iff z < t, so
p_A = Phi(t / sigma). At p_A just below the level's threshold Phi(r / sigma), every
certification at r is false; over many images (independent noise streams) the rate must stay
within alpha (one-sided binomial test), and the same test must catch the naive procedure that
recomputes a fixed-n Clopper-Pearson bound at level alpha after every batch.
"""
from __future__ import annotations

import pytest
import torch
from scipy.stats import binomtest, norm

import fastsmooth.smoothing.sequential as sequential_module
from fastsmooth import Smooth
from fastsmooth.engine import Sequential

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
        super().__init__(*args, **kwargs, give_up=False)
        self.look_alpha = {look: self.alpha for look in self.looks}


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
