"""l1 smoothers: DSSN counts / certify against a direct computation, input checks, SSN / uniform CERTIFY."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastsmooth import DSSN, SSN, UniformSmoothing
from fastsmooth.certificates import dssn_radius
from fastsmooth.ops import dssn_split
from fastsmooth.smoothing.base import Certified
from fastsmooth.stats import clopper_pearson_lower
from tests.conftest import require_backend

CLASSES = 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES))


def _images(B=3) -> torch.Tensor:
    return torch.randint(0, 256, (B, 3, 4, 4), generator=torch.Generator().manual_seed(1)).float() / 255


class Constant(nn.Module):
    """Always votes for class `c`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], CLASSES)
        out[:, self.c] = 1.0
        return out


@pytest.mark.parametrize("sigma", [0.12, 0.5])
@pytest.mark.parametrize("batch_size", [50, 1000])  # chunks of one image's evaluations / several images per pass
def test_dssn_counts_and_certify(sigma, batch_size):
    model, x = _model(), _images()
    smoother = DSSN(model, CLASSES, sigma=sigma, seed=3, batch_size=batch_size, backend="reference")
    L = smoother.levels
    with torch.no_grad():
        votes = model(dssn_split(x, sigma=sigma, seed=3, backend="reference")).argmax(1).reshape(3, L)
    expected = torch.stack([torch.bincount(v, minlength=CLASSES) for v in votes])
    counts = smoother.counts(x)
    assert torch.equal(counts, expected) and bool((counts.sum(1) == L).all())
    prediction, radius = smoother.certify(x)
    c, r = dssn_radius(expected)
    assert torch.equal(prediction, c) and torch.equal(radius, r)
    assert torch.equal(smoother.predict(x), c)
    result = smoother.evaluate_batch(x)
    assert isinstance(result, Certified) and result.certificate.dtype == torch.float64
    assert DSSN.certificate_name == "radius"


def test_dssn_compiled_backend_counts_equal_reference():
    require_backend("cpu")
    model, x = _model(), _images()
    a = DSSN(model, CLASSES, sigma=0.25, backend="reference", batch_size=64).counts(x)
    b = DSSN(model, CLASSES, sigma=0.25, backend="cpu", batch_size=64).counts(x)
    assert torch.equal(a, b)


def test_dssn_constant_model_radius():
    # All L votes for class 2: radius = floor(L / 2) / 255 (runner-up 0 < 2 costs one vote: (L - 1) // 2).
    smoother = DSSN(Constant(2), CLASSES, sigma=0.25, backend="reference")
    prediction, radius = smoother.certify(_images(2))
    assert prediction.tolist() == [2, 2] and radius.tolist() == [((220 - 1) // 2) / 255] * 2


def test_dssn_rejects_unquantized_input_and_says_how_far():
    smoother = DSSN(_model(), CLASSES, sigma=0.25, backend="reference")
    x = _images(1)
    x[0, 1, 2, 3] += 0.3 / 255
    with pytest.raises(ValueError, match=r"reaches 0\.3 levels .*quantize=True"):
        smoother.certify(x)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        smoother.certify(_images(1) + 1.0)
    rounding = DSSN(_model(), CLASSES, sigma=0.25, backend="reference", quantize=True)
    assert torch.equal(rounding.counts(x), smoother.counts(_images(1)))
    half = DSSN(_model(), CLASSES, sigma=0.25, backend="reference", quantize=True)
    assert torch.equal(half.counts(_images(1).half()), smoother.counts(_images(1)))
    assert torch.equal(smoother.prepare(_images(1).double()), _images(1).double())  # float64 k / 255 passes


@pytest.mark.parametrize("cls", [SSN, UniformSmoothing])
def test_randomized_certify_constant_model(cls):
    # Every sample votes for class 1: n_c = n, p_lower = (one-sided alpha) ** (1 / n).
    smoother = cls(Constant(1), CLASSES, sigma=0.5, batch_size=256, backend="reference")
    lam = 0.5 * math.sqrt(3)
    prediction, radius = smoother.certify(_images(2), n0=8, n=500, alpha=0.001)
    expected = 2 * lam * ((0.0005) ** (1 / 500) - 0.5)  # alpha two-sided by default
    assert prediction.tolist() == [1, 1]
    assert radius.dtype == torch.float64 and radius.tolist() == pytest.approx([expected] * 2, rel=1e-9)
    _, one = smoother.certify(_images(2), n0=8, n=500, alpha=0.001, sided="one")
    assert one.tolist() == pytest.approx([2 * lam * (0.001 ** (1 / 500) - 0.5)] * 2, rel=1e-9)
    assert float(one[0]) > float(radius[0])


@pytest.mark.parametrize("cls", [SSN, UniformSmoothing])
def test_randomized_certify_reproducible_and_counted(cls):
    model, x = _model(), _images(2)
    kwargs = dict(lam=0.8, batch_size=100, backend="reference", n0=16, n=300)
    a = cls(model, CLASSES, generator=torch.Generator().manual_seed(0), **kwargs)
    b = cls(model, CLASSES, generator=torch.Generator().manual_seed(0), **kwargs)
    pa, ra = a.certify(x)
    pb, rb = b.evaluate_batch(x)
    assert torch.equal(pa, pb) and torch.equal(ra, rb)
    counts = a.counts(x, 300)
    assert counts.sum(1).tolist() == [300, 300]
    k = counts.gather(1, counts.argmax(1, keepdim=True))[:, 0]
    p = clopper_pearson_lower(k.numpy(), 300, 0.0005)
    assert bool(((2 * 0.8 * (p - 0.5)) <= 2 * 0.8 * 0.5).all())
    assert isinstance(b.evaluate_batch(x), Certified)


def test_argument_errors():
    with pytest.raises(ValueError, match="exactly one of sigma and lam"):
        DSSN(_model(), CLASSES)
    with pytest.raises(ValueError, match="exactly one of sigma and lam"):
        SSN(_model(), CLASSES, sigma=1.0, lam=1.0)
    with pytest.raises(ValueError, match="sided must be"):
        UniformSmoothing(_model(), CLASSES, sigma=1.0, sided="both")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        SSN(_model(), CLASSES, sigma=1.0).counts(_images(1), 0)
