"""Exact early exit on real smoothers: ``decide_batch`` / ``certify`` / ``predict`` of every
deterministic smoother equal the answers of the full enumeration, on random nets."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastsmooth.certificates import certify_counts
from fastsmooth.certificates.l1 import dssn_radius
from fastsmooth.smoothing import DSSN
from test_patch_smoothing import make, tiny_net

KINDS = [("column", 2, 0), ("row", 3, 0), ("block", 2, 0), ("multi_band", 2, 2), ("multi_block", 2, 2)]


@pytest.mark.parametrize("kind, s, keep", KINDS)
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_patch_decisions_equal_the_full_enumeration(kind, s, keep, threshold):
    gen = torch.Generator().manual_seed(hash((kind, threshold)) % 1000)
    for trial in range(2):
        model = tiny_net(1, 4, seed=trial, scale=4.0, bias=float(torch.rand((), generator=gen)) * 2)
        x = torch.rand(6, 1, 8, 8, generator=gen)
        for batch_size in (5, 64):
            smoother = make(kind, model, 4, s, keep, threshold, batch_size=batch_size)
            counts = smoother.counts(x)
            total = int(smoother.masks(8, 8, x.device).count)
            levels = [1, 2, 3]
            decided = smoother.decide_batch(x, levels)
            for k, m in enumerate(levels):
                prediction, certified = certify_counts(counts, smoother.delta(m, 8, 8))
                assert torch.equal(decided.prediction, prediction), (kind, m)
                assert torch.equal(decided.certified[:, k], certified), (kind, m)
            assert bool((decided.forwards <= total).all()) and bool((decided.forwards >= 1).all())
            prediction, certified = smoother.certify(x, 2)
            want_prediction, want_certified = certify_counts(counts, smoother.delta(2, 8, 8))
            assert torch.equal(prediction, want_prediction) and torch.equal(certified, want_certified)
            assert torch.equal(smoother.predict(x), certify_counts(counts, 0)[0])
            undecided = smoother.decide_batch(x, [2], predict=False)
            assert torch.equal(undecided.certified[:, 0], certified)
            assert bool((undecided.forwards <= smoother.decide_batch(x, [2]).forwards).all())


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("value", torch.tensor(logits))

    def forward(self, x):
        return self.value.expand(x.shape[0], -1)


def test_a_unanimous_model_stops_after_the_decisive_ablations():
    smoother = make("column", Constant([0.0, 3.0, 1.0]), 3, 2)  # every ablation votes class 1
    decided = smoother.decide_batch(torch.rand(2, 1, 6, 20), [1])
    # Delta = 2 at m = 1; the runner-up 0 < 1 wins ties, so certified once n_1 - 1 - (20 - n_1) >= 4
    # even if every later ablation voted 0: after 13 of the 20 ablations (12 would not do)
    assert decided.forwards.tolist() == [13, 13] and decided.certified.tolist() == [[True], [True]]


def test_dssn_decisions_equal_the_full_certificate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    with torch.no_grad():
        model[1].weight.mul_(20)
    x = torch.randint(0, 256, (5, 3, 4, 4)) / 255
    for batch_size in (7, 1000):
        dssn = DSSN(model, 4, sigma=0.3, batch_size=batch_size, backend="reference")
        prediction, radius = dssn.certify(x)
        levels = [0.0, 1 / 255, 5 / 255, 0.05, 0.2]
        decided = dssn.decide_batch(x, levels)
        assert torch.equal(decided.prediction, prediction)
        for k, t in enumerate(levels):
            assert torch.equal(decided.certified[:, k], radius >= t), t
        assert bool((decided.forwards <= dssn.levels).all())
    counts = dssn.counts(x).cpu()
    assert torch.equal(dssn_radius(counts, 255)[1], radius)
