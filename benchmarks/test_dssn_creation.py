"""DSSN creation (all L evaluations of a CIFAR batch): fastsmooth vs the papers' style vs a copy.

- fastsmooth: ``dssn_split`` on the CPU kernel (and CUDA / Triton when a GPU is present).
- naive: the authors' formulation: the split values materialized as a float [L, d] tensor,
  compared with x, clamped and combined (several full-size temporaries).
- copy: ``torch.empty_like(out).copy_(src)`` of the same number of bytes, the bandwidth bound.

Run: ``pytest benchmarks/test_dssn_creation.py --benchmark-group-by=param:sigma``
(``--benchmark-disable`` only checks that everything runs). FASTSMOOTH_BENCH_BATCH sets the
number of CIFAR images (default 1: certification splits one image at a time).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from fastsmooth import backends
from conftest import run, sync
from fastsmooth.ops import dssn_levels, dssn_split, dssn_template

BATCH = int(os.environ.get("FASTSMOOTH_BENCH_BATCH", "1"))
SIGMAS = (0.5, 3.5)


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (BATCH, 3, 32, 32), generator=g).float() / 255).to(device)


def naive_split(x: torch.Tensor, v: torch.Tensor, levels: int, lam: float) -> torch.Tensor:
    """The papers' code: split values as a float tensor, a comparison and a clamp (lambda >= 0.5)."""
    B = x.shape[0]
    k = torch.arange(levels, device=x.device, dtype=torch.float32)
    splits = ((k[:, None] + v.reshape(1, -1).float()) % levels + 0.5) / 255  # [L, d] float
    batch = x.reshape(B, 1, -1).expand(B, levels, -1)
    out = ((batch > splits).float() + splits.clamp(max=1.0)) / 2
    return out.reshape(B * levels, *x.shape[1:])



@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("impl", ["fastsmooth", "naive", "copy floor"])
def test_dssn_creation(benchmark, impl, sigma, device):
    x = _images(device)
    lam, levels = dssn_levels(sigma=sigma)
    group = f"DSSN creation, CIFAR-10 {BATCH}x3x32x32, sigma={sigma} (L={levels}), {device}"
    nbytes = BATCH * levels * x[0].numel() * x.element_size()
    if impl == "fastsmooth":
        backend = "cpu" if device == "cpu" else "cuda"
        if not backends()[backend].available:
            pytest.skip(backends()[backend].reason)
        dssn_split(x, sigma=sigma, backend=backend)  # warm the template cache
        fn = lambda: (dssn_split(x, sigma=sigma, backend=backend), sync())  # noqa: E731
    elif impl == "naive":
        v = dssn_template(0, levels, (3, 32, 32), device)
        assert torch.equal(naive_split(x, v, levels, lam), dssn_split(x, sigma=sigma, backend="reference"))
        fn = lambda: (naive_split(x, v, levels, lam), sync())  # noqa: E731
    else:
        src = torch.rand(BATCH * levels, 3, 32, 32, device=device)
        fn = lambda: (torch.empty_like(src).copy_(src), sync())  # noqa: E731
    run(benchmark, fn, group=group, role=impl, rounds=20, primary=impl == "fastsmooth", bytes=nbytes)


assert math.isclose(dssn_levels(sigma=3.5)[1], 3091)
