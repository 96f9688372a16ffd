"""DSSN split ops: the template, the spec's formulas, and every backend against the reference bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastsmooth.ops import dssn_levels, dssn_split, dssn_split_random, dssn_template
from fastsmooth.ops.splitting.reference import dssn_split_reference
from tests.conftest import device_of, require_backend


def _images(B=2, C=3, H=4, W=5, q=255, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, q + 1, (B, C, H, W), generator=g).double() / q).to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("levels,shape", [(7, (1, 2, 3)), (441, (3, 4, 5)), (3091, (3, 32, 32))])
def test_template_is_numpy_stream(seed, levels, shape):
    t = dssn_template(seed, levels, shape)
    expected = np.random.RandomState(seed).randint(levels, size=int(np.prod(shape)))
    assert t.dtype == torch.int16 and tuple(t.shape) == shape
    assert np.array_equal(t.reshape(-1).numpy().astype(np.int64), expected)
    assert dssn_template(seed, levels, shape) is t  # cached


@pytest.mark.parametrize("sigma,levels", [(0.25, 220), (0.5, 441), (1.0, 883), (3.5, 3091)])
def test_levels_of_spec(sigma, levels):
    lam, L = dssn_levels(sigma=sigma)
    assert L == levels and lam == sigma / 3**-0.5  # the authors' expression, bit for bit


def _spec_split(x: float, v: int, k: int, L: int, q: int, lam: float) -> np.float32:
    """semantics.md §3 literally, one element, with NumPy float32 scalars."""
    f = np.float32
    s = f(f((k + v) % L) + f(0.5)) / f(q)
    if lam >= 0.5:
        return (f(x > s) + min(s, f(1))) / f(2)
    t = f(np.ceil(f(q) * (f(x) - s) / f(L))) * f(L) / f(q) + s
    return (min(t, f(1)) + max(t - f(L) / f(q), f(0))) / f(2)


@pytest.mark.parametrize("lam,q", [(0.25, 4), (0.5, 4), (1.5, 4), (0.3, 255), (0.5, 255), (1.2, 255)])
def test_reference_is_the_spec_formula(lam, q):
    _, L = dssn_levels(lam=lam, q=q)
    x = _images(1, 1, 2, 3, q=q, seed=3)
    v = dssn_template(7, L, (1, 2, 3))
    out = dssn_split(x, lam=lam, seed=7, q=q, backend="reference").reshape(L, 6)
    xs, vs = x.reshape(-1).tolist(), v.reshape(-1).tolist()
    expected = [[_spec_split(np.float32(xs[i]), vs[i], k, L, q, lam) for i in range(6)] for k in range(L)]
    assert np.array_equal(out.numpy(), np.array(expected, dtype=np.float32))


def test_hand_computed_values():
    # q = 4, lambda = 0.625 -> L = 5; x = 1/4, v = 3, k = 0: s = 3.5 / 4 = 0.875 -> (0 + 0.875) / 2.
    # k = 3: m = 1, s = 1.5 / 4 = 0.375 -> x <= s -> 0.1875; k = 2: m = 0, s = 0.125 -> (1 + 0.125) / 2.
    x = torch.full((1, 1, 1, 1), 0.25)
    out = dssn_split(x, lam=0.625, template=torch.tensor([3]), q=4, offsets=[0, 3, 2], backend="reference")
    assert out.reshape(-1).tolist() == [0.4375, 0.1875, 0.5625]
    # lambda = 0.25, q = 4 -> L = 2 (general case); x = 1/2, v = 0, k = 1: s = 1.5 / 4 = 0.375,
    # t = ceil(4 * 0.125 / 2) * 2 / 4 + 0.375 = 0.875 -> (0.875 + 0.375) / 2 = 0.625.
    x = torch.full((1, 1, 1, 1), 0.5)
    out = dssn_split(x, lam=0.25, template=torch.tensor([0]), q=4, offsets=[1], backend="reference")
    assert out.item() == 0.625


def test_lambda_branch_on_float_lambda():
    assert dssn_levels(lam=0.5) == (0.5, 255)
    lam, L = dssn_levels(sigma=0.5 / math.sqrt(3))  # lambda a hair off 0.5: the branch follows the float
    assert L == (255 if lam >= 0.5 else 254)
    assert dssn_levels(lam=0.4999)[1] == 254


def _check_backend(backend, x, **kwargs):
    dev = device_of(backend)
    expected = dssn_split(x, backend="reference", **kwargs)
    got = dssn_split(x.to(dev), backend=backend, **kwargs).cpu()
    assert got.dtype == x.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("lam", [0.3, 0.5, 1.7])
def test_backend_equals_reference_all_levels(kernel_backend, lam):
    _check_backend(kernel_backend, _images(2, 3, 3, 5), lam=lam, seed=1)


@pytest.mark.parametrize("lam", [0.3, 0.5, 1.7])
def test_backend_equals_reference_single_offset(kernel_backend, lam):
    _, L = dssn_levels(lam=lam)
    x = _images(2, 3, 5, 7, seed=2)
    _check_backend(kernel_backend, x, lam=lam, offsets=[L - 1])
    _check_backend(kernel_backend, x, lam=lam, offsets=[0, L // 2, L - 1, 3])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_backend_equals_reference_dtypes(kernel_backend, dtype):
    x = _images(1, 3, 4, 5, dtype=dtype)
    _check_backend(kernel_backend, x, sigma=0.25, offsets=range(0, 220, 7))
    _check_backend(kernel_backend, x, sigma=0.12, offsets=range(0, 106, 5))


@pytest.mark.parametrize("lam", [0.25, 0.5, 1.5])
def test_backend_equals_reference_tiny_q_and_unquantized_x(kernel_backend, lam):
    x = torch.rand(3, 2, 3, 3, generator=torch.Generator().manual_seed(5))  # not quantized: exercises ties too
    _check_backend(kernel_backend, x, lam=lam, q=4, seed=3)
    _check_backend(kernel_backend, torch.cat([x, x * 4]), lam=lam, q=4)  # values above 1


@pytest.mark.parametrize("lam,q", [(0.003, 255), (0.2, 4)])
def test_backend_equals_reference_single_level(kernel_backend, lam, q):
    assert dssn_levels(lam=lam, q=q)[1] == 1  # L = 1: every split point is 1 / (2q)
    _check_backend(kernel_backend, _images(2, 3, 2, 3, q=q), lam=lam, q=q)


def test_random_split_is_one_evaluation_per_image(kernel_backend):
    dev = device_of(kernel_backend)
    x = _images(4, 3, 4, 4)
    out = dssn_split_random(x.to(dev), sigma=0.25, generator=torch.Generator().manual_seed(0), backend=kernel_backend)
    again = dssn_split_random(x.to(dev), sigma=0.25, generator=torch.Generator().manual_seed(0), backend=kernel_backend)
    assert torch.equal(out, again) and out.shape == x.shape
    ks = torch.randint(220, (4, 1), generator=torch.Generator().manual_seed(0))
    for b in range(4):
        expected = dssn_split(x[b : b + 1], sigma=0.25, offsets=[int(ks[b])], backend="reference")
        assert torch.equal(out[b : b + 1].cpu(), expected)


def test_errors_name_the_argument():
    x = _images(1, 1, 2, 2)
    with pytest.raises(ValueError, match="exactly one of sigma and lam"):
        dssn_split(x, sigma=0.5, lam=0.5)
    with pytest.raises(ValueError, match="offsets must lie in"):
        dssn_split(x, sigma=0.5, offsets=[441])
    with pytest.raises(ValueError, match="template must hold"):
        dssn_split(x, sigma=0.5, template=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="sigma must be a positive"):
        dssn_split(x, sigma=-1.0)
    with pytest.raises(ValueError, match="L = int"):
        dssn_levels(sigma=100.0)


def test_opcheck_dssn_split():
    require_backend("cpu")
    x = _images(2, 3, 4, 5)
    tmpl = dssn_template(0, 441, (3, 4, 5)).reshape(-1)
    for offsets, general, levels in [(torch.arange(5).reshape(1, 5), False, 441), (torch.tensor([[3], [7]]), True, 100)]:
        torch.library.opcheck(torch.ops.fastsmooth.dssn_split.default, (x, offsets, tmpl % levels, levels, 255, general))
