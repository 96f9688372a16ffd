"""RandomizedAblation on base models whose vote probabilities under ablation are known exactly."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import require_backend
from fastsmooth import RandomizedAblation
from fastsmooth.certificates import l0_radius
from fastsmooth.smoothing import Certified
from fastsmooth.stats import clopper_pearson_lower


class PixelVote(nn.Module):
    """Class `when_kept` if pixel (0, 0) is retained (a kept pixel has v + (1 - v) = 1), else `otherwise`.

    Under ablation keeping k of d pixels it votes `when_kept` with probability exactly k / d.
    """

    def __init__(self, num_classes: int = 3, when_kept: int = 1, otherwise: int = 0) -> None:
        super().__init__()
        self.num_classes, self.when_kept, self.otherwise = num_classes, when_kept, otherwise

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        C = z.shape[1] // 2
        kept = (z[:, 0, 0, 0] + z[:, C, 0, 0]) != 0
        votes = torch.where(kept, self.when_kept, self.otherwise)
        return nn.functional.one_hot(votes, self.num_classes).float()


class Constant(nn.Module):
    def __init__(self, label: int, num_classes: int = 4) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((z.shape[0],), self.label), self.num_classes).float()


def smoother(model, num_classes, keep, seed=0, **kw):
    return RandomizedAblation(model, num_classes, keep, generator=torch.Generator().manual_seed(seed), **kw)


def test_constant_model_closed_form_radius():
    """All n votes agree: p_lower = alpha ** (1 / n) exactly, so the radius is known in closed form."""
    n, alpha, d, keep = 2000, 0.05, 64, 4
    result = smoother(Constant(2), 4, keep, batch_size=512).certify(torch.rand(3, 3, 8, 8), n0=50, n=n, alpha=alpha)
    p_lower = alpha ** (1 / n)
    q = lambda rho: math.comb(d - rho, keep) / math.comb(d, keep)  # noqa: E731
    expected = max(rho for rho in range(d - keep + 1) if p_lower - (1 - q(rho)) > 0.5 + 1e-12)
    assert result.prediction.tolist() == [2, 2, 2]
    assert result.certificate.dtype == torch.float64
    assert result.certificate.tolist() == [expected] * 3


def test_pixel_vote_model_expected_radius():
    """Class 0 wins with probability exactly 1 - k / d = 60 / 64: the count is binomial, and the
    radius lies between those of the counts at the mean -/+ 5 standard deviations."""
    n, alpha, d, keep = 4000, 0.05, 64, 4
    s = smoother(PixelVote(), 3, keep, batch_size=1000)
    x = torch.rand(2, 1, 8, 8)
    counts = s.counts(x, n)
    p = 1 - keep / d
    assert counts.sum(1).tolist() == [n, n] and (counts[:, 2] == 0).all()
    assert (counts[:, 0] - n * p).abs().max() < 5 * math.sqrt(n * p * (1 - p))
    result = s.certify(x, n0=100, n=n, alpha=alpha)
    assert result.prediction.tolist() == [0, 0]
    bounds = [int(n * p + z * math.sqrt(n * p * (1 - p))) for z in (-5, 5)]
    low, high = (int(l0_radius(clopper_pearson_lower(c, n, alpha), d, keep)) for c in bounds)
    assert 0 < low <= high and all(low <= r <= high for r in result.certificate.tolist())


def test_abstain_is_distinct_from_radius_zero():
    # keep = d / 2: each class has probability exactly 1/2, p_lower < 1/2: abstain.
    abstained = smoother(PixelVote(2), 2, 8).certify(torch.rand(2, 1, 4, 4), n0=100, n=1000)
    assert abstained.prediction.tolist() == [-1, -1]
    assert abstained.certificate.tolist() == [-1.0, -1.0]
    # keep = d: Delta(1) = 1, so a confident prediction is certified at radius 0 only.
    zero = smoother(Constant(1, 2), 2, 16).certify(torch.rand(2, 1, 4, 4), n0=100, n=1000)
    assert zero.prediction.tolist() == [1, 1] and zero.certificate.tolist() == [0.0, 0.0]


def test_predict_binomial_test():
    s = smoother(PixelVote(3, when_kept=2, otherwise=1), 3, 2)
    assert s.predict(torch.rand(2, 1, 4, 4), n=500).tolist() == [1, 1]  # 14 / 16 of the votes
    tie = smoother(PixelVote(2), 2, 8, seed=3).predict(torch.rand(1, 1, 4, 4), n=200)
    assert tie.tolist() == [-1]  # p = 1/2 exactly: the test cannot reject at alpha = 0.05


@pytest.mark.parametrize("batch_size", [7, 64, 5000])
def test_counts_chunking(batch_size):
    """Whole images per batch (n < batch_size) and several batches per image give n votes each."""
    s = smoother(PixelVote(), 3, 4, batch_size=batch_size)
    counts = s.counts(torch.rand(3, 2, 4, 4), 50)
    assert counts.sum(1).tolist() == [50, 50, 50]


def test_evaluate_batch_protocol_and_reproducibility():
    s = smoother(PixelVote(), 3, 4, n0=20, n=300, alpha=0.01)
    assert s.certificate_name == "radius"
    out = s.evaluate_batch(torch.rand(2, 1, 8, 8))
    assert isinstance(out, Certified) and out.prediction.dtype == torch.int64
    x = torch.rand(1, 1, 8, 8)
    a, b = (smoother(PixelVote(), 3, 4).counts(x, 200) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, smoother(PixelVote(), 3, 4, seed=1).counts(x, 200))


def test_triton_backend_runs():
    require_backend("triton")
    s = smoother(PixelVote(), 3, 4, backend="triton", batch_size=32)
    assert s.counts(torch.rand(1, 1, 4, 4), 16).sum().item() == 16


def test_normalization_and_errors():
    s = smoother(PixelVote(), 3, 4, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    assert s.counts(torch.rand(1, 3, 4, 4), 40).sum().item() == 40
    with pytest.raises(ValueError, match="keep"):
        smoother(PixelVote(), 3, 17).counts(torch.rand(1, 1, 4, 4), 10)
    with pytest.raises(ValueError, match="alpha"):
        smoother(PixelVote(), 3, 4).certify(torch.rand(1, 1, 4, 4), alpha=0.7)
    with pytest.raises(ValueError, match="n0"):
        RandomizedAblation(PixelVote(), 3, 4, n0=0)
