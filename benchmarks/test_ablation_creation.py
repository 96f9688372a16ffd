"""Creation of the column-ablated batch (issue: structured-ablation ops).

Per shape, in one run: fastsmooth per backend (allocating, and into a reused ``out=``), the
naive per-position version of the papers' code, and the copy floor: ``torch.empty_like(out)
.copy_(out)`` of the same number of bytes (what this machine's memory system allows).
"""
from __future__ import annotations

import os

import pytest
import torch

import fastsmooth
from conftest import backend_for, quick, run, sync
from naive_ablation import naive_column_batches

IMAGENET_BATCH = int(os.environ.get("FASTSMOOTH_BENCH_IMAGENET_BATCH", "2" if quick() else "8"))
CASES = {
    "MNIST 100x1x28x28 s=2": ((100, 1, 28, 28), 2, 20),
    "CIFAR-10 100x3x32x32 s=4": ((100, 3, 32, 32), 4, 20),
    f"ImageNet {IMAGENET_BATCH}x3x299x299 s=25": ((IMAGENET_BATCH, 3, 299, 299), 25, 3),
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"



IMPLS = [f"fastsmooth[{b}]" for b in fastsmooth.BACKENDS] + ["fastsmooth[auto] out=", "naive", "copy floor"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", IMPLS)
def test_column_batch_creation(benchmark, case, impl):
    shape, size, rounds = CASES[case]
    x = torch.rand(shape, device=DEVICE)
    nbytes = 2 * shape[0] * shape[3] * x[0].numel() * x.element_size()
    group = f"column ablation, {case}"
    if impl.startswith("fastsmooth"):
        backend = backend_for(impl, DEVICE)
        if backend == "reference" and shape[3] > 100:
            pytest.skip("the reference materializes a [P, H, W] mask per call: too slow at this size")
        out = torch.empty(shape[0] * shape[3], 2 * shape[1], shape[2], shape[3], device=DEVICE)
        kw = {"out": out} if impl.endswith("out=") else {}

        def go():
            fastsmooth.ops.ablate_bands(x, size, backend=backend, **kw)
            sync()

        auto = fastsmooth._backend.resolve_backend("auto", x.device)
        run(benchmark, go, group=group, role=impl, rounds=rounds, primary=impl == f"fastsmooth[{auto}]", bytes=nbytes)
    elif impl == "naive":
        run(benchmark, lambda: (naive_column_batches(x, size), sync()), group=group, role="naive", rounds=rounds)
    else:
        src = fastsmooth.ops.ablate_bands(x, size)
        run(benchmark, lambda: (torch.empty_like(src).copy_(src), sync()), group=group, role="copy floor", rounds=rounds, bytes=nbytes)
