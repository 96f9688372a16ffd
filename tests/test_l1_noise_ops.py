"""SSN and uniform noise ops: the Philox stream, bit-identical backends, and their distributions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsmooth.ops import ssn_noise, uniform_noise
from fastsmooth.ops._philox import philox4x32
from tests.conftest import device_of, require_backend


def test_numpy_philox_equals_triton_philox():
    require_backend("triton")
    import triton
    import triton.language as tl

    @triton.jit
    def words_kernel(out_ptr, seed, c1, c2, c3, N: tl.constexpr):
        c0 = tl.arange(0, N).to(tl.uint32) * 977
        wide = tl.zeros_like(c0).to(tl.int64)  # counters may exceed 2**31: widen, then take 32 bits
        w0, w1, w2, w3 = tl.philox(
            seed, c0, (wide + c1).to(tl.uint32), (wide + c2).to(tl.uint32), (wide + c3).to(tl.uint32)
        )
        i = tl.arange(0, N)
        tl.store(out_ptr + i * 4, w0.to(tl.int64))
        tl.store(out_ptr + i * 4 + 1, w1.to(tl.int64))
        tl.store(out_ptr + i * 4 + 2, w2.to(tl.int64))
        tl.store(out_ptr + i * 4 + 3, w3.to(tl.int64))

    for seed, c1, c2, c3 in [(0, 0, 0, 0), (12345, 7, 1, 0), (2**40 + 3, 2**31 + 5, 2, 9)]:
        out = torch.empty(64 * 4, dtype=torch.int64, device=device_of("triton"))
        words_kernel[(1,)](out, seed, c1, c2, c3, N=64)
        c0 = np.arange(64, dtype=np.uint64) * np.uint64(977)
        expected = np.stack(philox4x32(seed, c0, c1, c2, c3), axis=1).astype(np.int64).reshape(-1)
        assert np.array_equal(out.cpu().numpy(), expected), seed


def _images(B=2, C=3, H=4, W=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (B, C, H, W), generator=g).double() / 255).to(dtype)


@pytest.mark.parametrize("op", [ssn_noise, uniform_noise])
@pytest.mark.parametrize("lam", [0.2, 0.5, 1.3])
def test_backend_equals_reference(kernel_backend, op, lam):
    x = _images(2, 3, 3, 7)  # d = 63: a partial group of four elements at the end
    expected = op(x, lam, 5, seed=2**35 + 11, backend="reference")
    got = op(x.to(device_of(kernel_backend)), lam, 5, seed=2**35 + 11, backend=kernel_backend).cpu()
    assert got.shape == (10, 3, 3, 7) and torch.equal(got, expected)


@pytest.mark.parametrize("op", [ssn_noise, uniform_noise])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_backend_equals_reference_dtypes(kernel_backend, op, dtype):
    x = _images(1, 2, 3, 4, dtype=dtype)
    expected = op(x, 0.7, 3, seed=4, backend="reference")
    got = op(x.to(device_of(kernel_backend)), 0.7, 3, seed=4, backend=kernel_backend).cpu()
    assert got.dtype == dtype and torch.equal(got, expected)


@pytest.mark.parametrize("op", [ssn_noise, uniform_noise])
def test_reproducible_with_seed_or_generator(op):
    x = _images()
    assert torch.equal(op(x, 0.5, 4, seed=1), op(x, 0.5, 4, seed=1))
    assert not torch.equal(op(x, 0.5, 4, seed=1), op(x, 0.5, 4, seed=2))
    a = op(x, 0.5, 4, torch.Generator().manual_seed(3))
    b = op(x, 0.5, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    copies = op(x, 0.5, 4, seed=1).reshape(2, 4, -1)
    assert not torch.equal(copies[:, 0], copies[:, 1])  # the n copies differ


def test_uniform_noise_distribution():
    x = torch.full((1, 1, 16, 16), 0.25)
    lam = 0.8
    noise = uniform_noise(x, lam, 200, seed=0, backend="reference") - 0.25
    assert float(noise.min()) >= -lam and float(noise.max()) < lam
    assert abs(float(noise.mean())) < 0.01  # 51200 draws, sd of the mean ~ 0.002
    assert abs(float(noise.var()) - lam**2 / 3) < 0.01


def test_ssn_noise_distribution():
    # lambda >= 0.5: s >= 1 (x~ = 1/2) with probability (2 lambda - 1) / (2 lambda); else x~ = s / 2
    # when x <= s (probability (s - x) ...), x~ = (1 + s) / 2 when x > s (probability x / (2 lambda)).
    x = torch.full((1, 1, 16, 16), 0.25)
    lam = 1.0
    y = ssn_noise(x, lam, 200, seed=0, backend="reference")
    assert abs(float((y == 0.5).double().mean()) - 0.5) < 0.01
    assert abs(float((y > 0.5).double().mean()) - 0.125) < 0.01
    # lambda < 0.5: x~ is the centre of x's cell, and cells have width 2 lambda inside [0, 1].
    y = ssn_noise(x, 0.2, 200, seed=0, backend="reference")
    assert float((y - 0.25).abs().max()) <= 0.2 + 1e-6


def test_errors_name_the_argument():
    x = _images()
    with pytest.raises(ValueError, match="lam must be a positive"):
        ssn_noise(x, 0.0, 3)
    with pytest.raises(ValueError, match="n must be in"):
        uniform_noise(x, 0.5, -1)


@pytest.mark.parametrize("name", ["ssn_noise", "uniform_noise"])
def test_opcheck_noise(name):
    require_backend("cpu")
    op = getattr(torch.ops.fastsmooth, name).default
    for lam in (0.3, 0.9):
        torch.library.opcheck(op, (_images(2, 3, 4, 5), lam, 3, 12345))
