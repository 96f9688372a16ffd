"""The sequential PREDICT (Cohen et al.'s binomial test at anytime-valid looks).

- its vectorized p-value is scipy's exact two-sided binomial test;
- it answers at the first look whose test passes, at that look's share of alpha;
- validity: on a base classifier whose class probabilities are known (p_A just above 1/2),
  the rate of returning the wrong class stays within alpha, and the same test catches the
  naive procedure that repeats the fixed-n test at level alpha at every look.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

import fastsmooth.smoothing.sequential as sequential_module
from fastsmooth import Smooth
from fastsmooth.engine import SequentialPredict, look_alphas
from fastsmooth.stats import binomial_pvalue, binomial_pvalues
from test_sequential_validity import OnePixel  # class 0 iff the noised pixel is below t


def test_vectorized_pvalues_equal_the_exact_binomial_test():
    n1, n2 = np.meshgrid(np.arange(0, 41), np.arange(0, 41))
    pairs = list(zip(n1.ravel(), n2.ravel())) + [(5000, 4800), (6000, 5200), (100_000, 99_000), (3, 90_000)]
    got = binomial_pvalues(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
    want = np.array([binomial_pvalue(int(a), int(b)) for a, b in pairs])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def test_look_alphas_sum_to_alpha_with_half_at_the_last_look():
    alphas = look_alphas(11, 0.001)
    assert sum(alphas) == pytest.approx(0.001) and alphas[-1] == pytest.approx(0.0005)
    assert len(set(alphas[:-1])) == 1
    assert look_alphas(1, 0.01) == [0.01]
    with pytest.raises(ValueError, match="final_share"):
        look_alphas(3, 0.01, 0.0)


def simulate(decider: SequentialPredict, classes: list[int], K: int) -> tuple[int, int]:
    """(prediction, samples used) of a one-slot decider fed prefixes of the class stream."""
    target = decider.start(0)
    while True:
        counts = torch.bincount(torch.tensor(classes[:target]), minlength=K)[None]
        nxt = decider.update([0], counts, [target])[0]
        if nxt is None:
            return int(decider.prediction[0]), target
        assert nxt > target
        target = nxt


def test_stops_at_the_first_look_whose_test_passes():
    """Against a plain loop over the looks with the exact binomial test."""
    gen = random.Random(0)
    n_max, alpha = 1500, 0.01
    decider = SequentialPredict(n_max, alpha, 1)
    alphas = dict(zip(decider.looks, look_alphas(len(decider.looks), alpha)))
    outcomes = set()
    for _ in range(60):
        gap = gen.choice([0.0, 0.02, 0.05, 0.1, 0.3])
        classes = gen.choices(range(3), weights=[0.4 + gap, 0.4, 0.2 - gap], k=n_max)
        want = (-1, n_max)
        for look in decider.looks:
            counts = sorted(np.bincount(classes[:look], minlength=3).tolist(), reverse=True)
            if binomial_pvalue(counts[0], counts[1]) <= alphas[look]:
                top = int(np.argmax(np.bincount(classes[:look], minlength=3)))
                want = (top, look)
                break
        assert simulate(SequentialPredict(n_max, alpha, 1), classes, 3) == want
        outcomes.add(want[0] == -1)
    assert outcomes == {True, False}  # both abstentions and early answers occurred


SIGMA, ALPHA, IMAGES, N_MAX = 1.0, 0.1, 1000, 3200
P_A = 0.505  # class 0 is g(x), barely: returning class 1 is an error


def wrong_predictions() -> tuple[int, torch.Tensor]:
    smooth = Smooth(OnePixel(SIGMA * norm.ppf(P_A)), 2, SIGMA, batch_size=20_000, backend="cpu")
    decided = smooth.predict_batch(torch.zeros(IMAGES, 1, 1, 1), N_MAX, ALPHA, sequential=True, seed=11)
    return int((decided.prediction == 1).sum()), decided.forwards


def test_wrong_class_rate_is_within_alpha():
    wrong, forwards = wrong_predictions()
    assert binomtest(wrong, IMAGES, ALPHA, alternative="greater").pvalue > 1e-3, wrong
    assert int(forwards.max()) <= N_MAX


class NaivePredict(SequentialPredict):
    """The fixed-n test at level alpha at every look (invalid: each look spends the whole alpha)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.look_alpha = {look: self.alpha for look in self.looks}


def test_the_same_test_catches_the_fixed_n_test_repeated_at_every_look(monkeypatch):
    monkeypatch.setattr(sequential_module, "SequentialPredict", NaivePredict)
    wrong, _ = wrong_predictions()
    assert binomtest(wrong, IMAGES, ALPHA, alternative="greater").pvalue < 1e-3, wrong


def test_fixed_and_sequential_predict_agree_on_clear_images_and_report_forwards():
    model = OnePixel(0.0)
    x = torch.tensor([0.0, 0.05, 0.95, 1.0]).reshape(4, 1, 1, 1)  # far from t = 0 except the first
    smooth = Smooth(model, 2, 0.25, backend="cpu")
    fixed = smooth.predict_batch(x, 2000, 0.001, seed=2)
    seq = smooth.predict_batch(x, 2000, 0.001, sequential=True, seed=2)
    assert fixed.forwards.tolist() == [2000] * 4 and fixed.certified.shape == (4, 0)
    assert seq.prediction[2:].tolist() == fixed.prediction[2:].tolist() == [1, 1]
    assert int(seq.forwards[2:].max()) < 2000
    assert smooth.predict(x[2], 2000, 0.001, sequential=True, seed=2) == 1
