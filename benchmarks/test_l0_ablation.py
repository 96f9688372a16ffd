"""l0 randomized ablation (issue: fused sampling-and-encoding kernels and fast exact radii).

- Creation of 10000 ablated samples of one CIFAR-10 image (k = 75 of 1024 pixels): fastsmooth
  per backend, and the authors'-style per-sample ``randperm`` + index version.
- The certified radius at ImageNet size (d = 224 * 224, k = 1000) for one image: ``l0_radius``
  against the authors'-style big-integer factorials (about 7 s per image in their code), and
  ``l0_radius`` over a batch of 1000 images (per-image figure = median / 1000).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastsmooth
from conftest import backend_for, quick, run, sync
from naive_l0 import naive_ablated_batch, naive_radius

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N_SAMPLES, CIFAR_KEEP = 10000, 75
IMAGENET_D, IMAGENET_KEEP = 224 * 224, 1000



@pytest.mark.parametrize("impl", [f"fastsmooth[{b}]" for b in fastsmooth.BACKENDS] + ["fastsmooth[auto] out=", "naive"])
def test_cifar_creation(benchmark, impl):
    x = torch.rand(1, 3, 32, 32, device=DEVICE)
    group = f"l0 ablation creation, CIFAR-10 1x3x32x32, n={N_SAMPLES}, k={CIFAR_KEEP}"
    rounds = 3 if quick() else 20
    if impl == "naive":
        run(benchmark, lambda: (naive_ablated_batch(x[0], CIFAR_KEEP, N_SAMPLES), sync()), group=group, role=impl,
            rounds=1 if quick() else 5)
        return
    backend = backend_for(impl, DEVICE)
    out = torch.empty(N_SAMPLES, 6, 32, 32, device=DEVICE)
    kw = {"out": out} if impl.endswith("out=") else {}

    def go():
        fastsmooth.ops.ablate_pixels(x, CIFAR_KEEP, N_SAMPLES, seed=0, backend=backend, **kw)
        sync()

    auto = fastsmooth._backend.resolve_backend("auto", x.device)
    run(benchmark, go, group=group, role=impl, rounds=rounds, primary=impl == f"fastsmooth[{auto}]",
        bytes=out.numel() * out.element_size())


@pytest.mark.parametrize("impl", ["l0_radius", "l0_radius, 1000 images", "naive big-integer"])
def test_imagenet_radius(benchmark, impl):
    group = f"l0 radius, ImageNet d={IMAGENET_D}, k={IMAGENET_KEEP}"
    p = 0.8  # radius 17, near the paper's median certificates
    if impl == "naive big-integer":
        result = run(benchmark, lambda: naive_radius(p, IMAGENET_D, IMAGENET_KEEP), group=group, role=impl, rounds=1)
    elif impl == "l0_radius":
        result = run(benchmark, lambda: int(fastsmooth.l0_radius(p, IMAGENET_D, IMAGENET_KEEP)), group=group,
                     role=impl, rounds=200, primary=True)
    else:
        ps = np.random.default_rng(0).uniform(0.5, 1, 1000)
        run(benchmark, lambda: fastsmooth.l0_radius(ps, IMAGENET_D, IMAGENET_KEEP), group=group, role=impl, rounds=50)
        return
    assert result == int(fastsmooth.l0_radius(p, IMAGENET_D, IMAGENET_KEEP))
