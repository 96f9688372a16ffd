"""l0 certificates against exact big-integer arithmetic, including near-ties at 1/2 + Delta(rho)."""
import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from fastsmooth.certificates import l0 as l0_module
from fastsmooth.certificates import l0_delta, l0_delta_exact, l0_radius


def brute_radius(p: float, d: int, keep: int) -> int:
    """Largest rho with p - (1 - C(d - rho, k) / C(d, k)) > 1/2 in exact rationals; -1 if none."""
    p = Fraction(p)
    radius = -1
    for rho in range(d + 1):
        if p - (1 - Fraction(math.comb(d - rho, keep), math.comb(d, keep))) > Fraction(1, 2):
            radius = rho
        else:
            break
    return radius


def brute_radius_product(p: float, d: int, keep: int) -> int:
    """The same with Q(rho) as a running product of exact factors (fast enough at ImageNet size)."""
    p, q, radius = Fraction(p), Fraction(1), -1
    for rho in range(d + 1):
        if p - (1 - q) > Fraction(1, 2):
            radius = rho
        else:
            break
        q *= Fraction(d - keep - rho, d - rho) if rho < d else 0
    return radius


EDGES = [(1, 0), (1, 1), (2, 1), (5, 0), (5, 5), (5, 4), (10, 1), (64, 3), (100, 50), (784, 45), (1024, 75)]


@pytest.mark.parametrize("d,keep", EDGES)
def test_radius_matches_brute_force(d, keep):
    rng = np.random.default_rng(d * 1000 + keep)
    ps = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0.5, 1, 40), 1 - rng.uniform(0, 1e-3, 20),
                         [0.0, 0.5, np.nextafter(0.5, 1), 0.75, np.nextafter(1, 0), 1.0]])
    expected = [brute_radius(float(p), d, keep) for p in ps]
    assert l0_radius(ps, d, keep).tolist() == expected


@pytest.mark.parametrize("d,keep", [(10, 3), (784, 45), (1024, 75), (50176, 1000), (50176, 1), (100000, 7)])
def test_near_ties_are_decided_exactly(d, keep, monkeypatch):
    """p_lower at the floats nearest to 1/2 + Delta(rho) (and 1e-12 either side)."""
    calls = []
    exact = l0_module._q_above
    monkeypatch.setattr(l0_module, "_q_above", lambda *a: calls.append(a) or exact(*a))
    ps = []
    for rho in range(0, 40):
        if rho > d - keep:
            break
        tie = Fraction(1, 2) + l0_delta_exact(rho, d, keep)
        if tie > 1:
            break
        p = float(tie)
        ps += [np.nextafter(p, 0), p, np.nextafter(p, 1), p - 1e-12, p + 1e-12, np.nextafter(np.nextafter(p, 1), 1)]
    ps = np.clip(np.array(ps), 0, 1)
    expected = [brute_radius_product(float(p), d, keep) for p in ps]
    assert l0_radius(ps, d, keep).tolist() == expected
    assert calls  # the near-ties went through the integer comparison


def test_exact_ties_are_not_certified():
    """p_lower - Delta(rho) == 1/2 exactly (d = 4, k = 2: Delta(1) = 1/2) is not > 1/2."""
    assert l0_delta_exact(1, 4, 2) == Fraction(1, 2)
    assert l0_radius([1.0, np.nextafter(1.0, 0)], 4, 2).tolist() == [0, 0]
    assert l0_delta_exact(1, 8, 2) == Fraction(1, 4)
    assert l0_radius([0.75, np.nextafter(0.75, 1)], 8, 2).tolist() == [0, 1]


@pytest.mark.parametrize("d,keep", [(1024, 75), (50176, 1000), (7, 7), (7, 0), (30, 29)])
def test_delta_matches_exact(d, keep):
    rho = np.arange(0, d + 1)
    got = l0_delta(rho, d, keep)
    exact = np.array([float(l0_delta_exact(int(r), d, keep)) for r in rho[:300]])
    np.testing.assert_allclose(got[:300], exact, rtol=1e-12, atol=0)
    assert got[0] == 0 and not np.signbit(got[0])
    assert np.all(np.diff(got) >= 0) and got[-1] == (1.0 if keep else 0.0)


def test_vectorized_shapes_and_torch_input():
    p = torch.tensor([[0.9, 0.2], [0.6, 0.99]], dtype=torch.float64)
    r = l0_radius(p, 1024, 75)
    assert r.shape == (2, 2) and r.dtype == np.int64
    assert r.tolist() == [[brute_radius(float(v), 1024, 75) for v in row] for row in p.tolist()]
    assert l0_radius(0.3, 1024, 75).shape == ()


def test_keep_zero_and_keep_all():
    assert l0_radius([0.4, 0.6], 9, 0).tolist() == [-1, 9]  # a constant classifier: any change
    assert l0_radius([0.4, 0.6, 1.0], 9, 9).tolist() == [-1, 0, 0]


def test_imagenet_speed():
    ps = np.random.default_rng(0).uniform(0.5, 1, 1000)
    l0_radius(ps[:1], 50176, 1000)  # the cached table is built once per (d, keep)
    start = time.perf_counter()
    radii = l0_radius(ps, 50176, 1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.3f} s for 1000 images"  # < 1 ms per image even on a loaded machine
    assert radii[:20].tolist() == [brute_radius_product(float(p), 50176, 1000) for p in ps[:20]]


def test_errors():
    with pytest.raises(ValueError, match="keep"):
        l0_radius(0.9, 10, 11)
    with pytest.raises(ValueError, match="p_lower"):
        l0_radius([0.9, 1.5], 10, 3)
    with pytest.raises(ValueError, match="p_lower"):
        l0_radius(float("nan"), 10, 3)
    with pytest.raises(ValueError, match="rho"):
        l0_delta(11, 10, 3)
    with pytest.raises(TypeError, match="d must be an integer"):
        l0_radius(0.9, 10.0, 3)
