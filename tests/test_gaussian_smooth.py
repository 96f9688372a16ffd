"""Smooth, the drop-in for Cohen et al.'s class: analytic certificates of a linear classifier,
abstention, reproducibility, on-device counting, and the authors' signatures."""
import inspect

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

import fastsmooth
from conftest import device_of, require_backend
from fastsmooth import Smooth
from fastsmooth.ops import gaussian_noise

SHAPE = (1, 4, 4)


class Linear(torch.nn.Module):
    """Two classes: class 0 iff w . x + c > 0. Under N(0, sigma^2 I) noise,
    P(class 0) = Phi(margin / (sigma ||w||)) with margin = w . x + c, and the smoothed
    classifier's exact l2 radius is |margin| / ||w||, the distance to the hyperplane."""

    def __init__(self, w: torch.Tensor, c: float) -> None:
        super().__init__()
        self.w, self.c = w.flatten().double(), c

    def margin(self, x: torch.Tensor) -> float:
        return float(x.flatten().double() @ self.w + self.c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1).double() @ self.w.to(x.device) + self.c).float()
        return torch.stack([s, -s], dim=1)


def _linear(distance: float) -> tuple[Linear, torch.Tensor]:
    """A classifier and an image at l2 distance `distance` on class 0's side."""
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    # in [0.375, 0.625]: the tests move x by up to 0.6 along the unit normal (at most 0.35 in
    # any pixel) and stay in [0, 1], as the input contract asks
    x = 0.375 + 0.25 * torch.rand(SHAPE, generator=torch.Generator().manual_seed(1))
    model = Linear(w, 0.0)
    model.c = distance * float(model.w.norm()) - model.margin(x)
    return model, x


def _radius_for(n_a: float, n: int, alpha: float, sigma: float) -> float:
    p = proportion_confint(max(0.0, min(n, n_a)), n, alpha=2 * alpha, method="beta")[0]
    return sigma * norm.ppf(p)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton", "cuda"])
def test_linear_classifier_certifies_the_analytic_radius(backend):
    device = device_of(backend) if backend != "reference" else torch.device("cpu")
    if backend != "reference":
        require_backend(backend, device.type)
    sigma, distance, n, alpha = 0.5, 0.3, 2000, 0.001
    model, x = _linear(distance)
    p_a = norm.cdf(distance / sigma)  # the analytic probability of class 0 under noise
    smooth = Smooth(model, 2, sigma, backend=backend)
    prediction, radius = smooth.certify(x.to(device), 100, n, alpha, 500, seed=123)
    assert prediction == 0
    # n_A ~ Binomial(n, p_a): the radius lies between those of n_A = n p_a -/+ 5 standard deviations ...
    spread = 5 * np.sqrt(n * p_a * (1 - p_a))
    assert _radius_for(n * p_a - spread, n, alpha, sigma) <= radius <= _radius_for(n * p_a + spread, n, alpha, sigma)
    # ... and below the true radius |margin| / ||w|| (a lower confidence bound at level alpha).
    assert radius < distance


def test_certify_batch_matches_analytic_radii_per_image():
    sigma, n, alpha = 0.25, 3000, 0.001
    model, x = _linear(0.2)
    # Images at distances 0.2 (class 0), ~0 (abstain) and 0.4 on class 1's side.
    normal = (model.w / model.w.norm()).float().view(SHAPE)
    xs = torch.stack([x, x - 0.2 * normal, x - 0.6 * normal])
    result = Smooth(model, 2, sigma).certify_batch(xs, 100, n, alpha, 700, seed=5)
    assert result.prediction.tolist() == [0, Smooth.ABSTAIN, 1]
    assert result.prediction.dtype == torch.int64 and result.certificate.dtype == torch.float64
    for i, d in ((0, 0.2), (2, 0.4)):
        p = norm.cdf(d / sigma)
        spread = 5 * np.sqrt(n * p * (1 - p))
        assert _radius_for(n * p - spread, n, alpha, sigma) <= result.certificate[i] <= _radius_for(
            n * p + spread, n, alpha, sigma
        )
    assert result.certificate[1] == 0.0
    assert Smooth.certificate_name == "radius"


def test_certify_abstains_on_the_decision_boundary():
    model, x = _linear(0.0)
    assert Smooth(model, 2, 0.5).certify(x, 100, 2000, 0.001, 1000, seed=0) == (Smooth.ABSTAIN, 0.0)


def test_predict_abstains_when_the_top_two_are_balanced():
    model, x = _linear(0.0)  # P(class 0) = 1/2 exactly
    smooth = Smooth(model, 2, 0.5)
    assert smooth.predict(x, 2000, 0.001, 500, seed=1) == Smooth.ABSTAIN
    far, x_far = _linear(0.5)
    assert Smooth(far, 2, 0.5).predict(x_far, 2000, 0.001, 500, seed=1) == 0


def test_same_seed_same_result_for_any_batch_size():
    model, x = _linear(0.1)
    smooth = Smooth(model, 2, 0.5)
    a = smooth.certify(x, 50, 1000, 0.01, 300, seed=42)
    assert smooth.certify(x, 50, 1000, 0.01, 1050, seed=42) == a
    assert smooth.certify(x, 50, 1000, 0.01, 7, generator=torch.Generator().manual_seed(3)) == smooth.certify(
        x, 50, 1000, 0.01, 1000, generator=torch.Generator().manual_seed(3)
    )
    torch.manual_seed(0)  # the drop-in default: torch's global RNG
    b = smooth.certify(x, 50, 1000, 0.01, 300)
    torch.manual_seed(0)
    assert smooth.certify(x, 50, 1000, 0.01, 300) == b


def test_counts_are_the_votes_on_the_fused_noise():
    """On-device counting over chunks that straddle images and the n0 / n split is exact."""
    model, x = _linear(0.05)
    xs = torch.stack([x, 1 - x])
    sigma, n, split = 0.5, 37, 10
    counts = Smooth(model, 2, sigma).sample_counts(xs, n, 16, split=split, seed=9)
    votes = model(gaussian_noise(xs, sigma, n, seed=9)).argmax(1).view(2, n)
    expected = torch.stack(
        [torch.stack([torch.bincount(v[:split], minlength=2), torch.bincount(v[split:], minlength=2)]) for v in votes]
    )
    assert torch.equal(counts, expected)
    assert torch.equal(Smooth(model, 2, sigma).sample_counts(xs, n, 5, seed=9), expected.sum(1))


def test_certify_batch_of_one_equals_certify():
    model, x = _linear(0.15)
    smooth = Smooth(model, 2, 0.5)
    one = smooth.certify_batch(x[None], 100, 1000, 0.001, 256, seed=4)
    assert (int(one.prediction[0]), float(one.certificate[0])) == smooth.certify(x, 100, 1000, 0.001, 256, seed=4)


def test_drop_in_signatures():
    assert fastsmooth.Smooth is Smooth and Smooth.ABSTAIN == -1
    assert list(inspect.signature(Smooth.__init__).parameters)[1:4] == ["base_classifier", "num_classes", "sigma"]
    assert list(inspect.signature(Smooth.certify).parameters)[1:6] == ["x", "n0", "n", "alpha", "batch_size"]
    assert list(inspect.signature(Smooth.predict).parameters)[1:5] == ["x", "n", "alpha", "batch_size"]
    model, x = _linear(0.3)
    smooth = Smooth(model, 2, 0.25)
    assert smooth.base_classifier is model and smooth.num_classes == 2 and smooth.sigma == 0.25
    prediction, radius = smooth.certify(x, 10, 100, 0.001, 50)
    assert type(prediction) is int and type(radius) is float
    assert type(smooth.predict(x, 100, 0.001, 50)) is int


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, x: s.certify(x[None], 10, 100, 0.001, 50), "single image"),
        (lambda s, x: s.certify(x, 0, 100, 0.001, 50), "n0"),
        (lambda s, x: s.certify(x, 10, 100, 0.7, 50), "alpha"),
        (lambda s, x: s.predict(x, 100, 0.001, 0), "batch_size"),
        (lambda s, x: s.predict(x, -5, 0.001, 10), "n must"),
        (lambda s, x: Smooth(s.base_classifier, 2, -1.0), "sigma"),
    ],
)
def test_argument_errors(call, match):
    model, x = _linear(0.3)
    with pytest.raises(ValueError, match=match):
        call(Smooth(model, 2, 0.5), x)
