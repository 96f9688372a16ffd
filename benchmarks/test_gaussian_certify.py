"""Per-image Gaussian certification time on CIFAR-10 shapes: fastsmooth.Smooth vs the authors' loop.

Both run in the same session on the same small network, image and parameters (n0 = 100,
alpha = 0.001, batch 1000). n defaults to the paper's 100000 on a GPU and to 2000 on a CPU
(too slow otherwise); set FASTSMOOTH_BENCH_N to choose, e.g.

    FASTSMOOTH_BENCH_N=100000 pytest benchmarks/test_gaussian_certify.py --benchmark-group-by=param:n

The figure to read is the mean time per call: one call certifies one image.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import fastsmooth
from cohen_naive import NaiveSmooth
from conftest import run, sync

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
N = int(os.environ.get("FASTSMOOTH_BENCH_N", 100_000 if DEVICE.type == "cuda" else 2000))
N0, ALPHA, BATCH, SIGMA = 100, 0.001, 1000, 0.25


def small_cifar_net() -> nn.Module:
    """A small CNN for 3 x 32 x 32 inputs, 10 classes (weights fixed by a seed)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    ).to(DEVICE).eval()



@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor]:
    return small_cifar_net(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)).to(DEVICE)


@pytest.mark.parametrize("n", [N])
@pytest.mark.parametrize("implementation", ["naive", "fastsmooth"])
def test_certify_one_image(benchmark, setup, implementation, n):
    model, x = setup
    smooth = NaiveSmooth(model, 10, SIGMA) if implementation == "naive" else fastsmooth.Smooth(model, 10, SIGMA)

    def certify() -> tuple[int, float]:
        result = smooth.certify(x, N0, n, ALPHA, BATCH)
        sync()
        return result

    group = f"gaussian certify, CIFAR 3x32x32, small CNN, n={n}, {DEVICE.type}"
    prediction, radius = run(benchmark, certify, group=group, role=implementation, rounds=3,
                             primary=implementation == "fastsmooth", images=1, n=n, n0=N0, batch_size=BATCH)
    benchmark.extra_info.update(prediction=prediction, radius=radius)
    assert prediction == smooth.ABSTAIN or 0 <= prediction < 10
