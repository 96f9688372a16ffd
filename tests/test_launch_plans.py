"""Launch plans of the GPU kernels (fastsmooth.ops.launch_plans), checked without a GPU.

1. Parallelism: on every launch shape of the benchmark rows (the papers' Table 9 patch rows,
   DSSN, l0, Gaussian / SSN / uniform and the smoothed-ViT token op at batch one image), every CUDA and Triton kernel's
   launch exposes at least min(outputs / 8, 2^20) lanes (CUDA threads; Triton programs x
   num_warps x 32), so one image fills a GPU.
2. Correctness of the chunked grids: the Triton structured-ablation kernel under the
   interpreter, with chunk sizes forced to 1, to sizes that do not divide P and to chunks that
   cross a band's wraparound, equals the reference; so do the CPU kernels on those ablations.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import require_backend
from fastsmooth import ops
from fastsmooth.ops import launch_plans as lp
from fastsmooth.ops.splitting import dssn_levels

# --- the benchmark rows' launch shapes --------------------------------------------------------

# Structured ablation (B, C, H, W, P), what one kernel call sees.
ABLATE_SHAPES = {
    # the papers' Table 9 rows at batch one image: every ablation of one image in one call
    "column MNIST": (1, 1, 28, 28, 28),
    "block MNIST": (1, 1, 28, 28, 28 * 28),
    "column CIFAR-10": (1, 3, 32, 32, 32),
    "block CIFAR-10": (1, 3, 32, 32, 32 * 32),
    "column ImageNet": (1, 3, 299, 299, 299),
    # the smoothers' calls: forwards of one ablation batched up to 1 MB (block CIFAR-10 at
    # batch 1: 42 ablations of 24 KB), ImageNet at batch 1 (one ablation per call)
    "block CIFAR-10, 1 MB of batch-1 forwards": (1, 3, 32, 32, 42),
    "column ImageNet, batch 1": (1, 3, 299, 299, 1),
    # the batch-creation benchmark rows
    "creation MNIST": (100, 1, 28, 28, 28),
    "creation CIFAR-10": (100, 3, 32, 32, 32),
    "creation ImageNet": (2, 3, 299, 299, 299),
    # training: one random band / block per image
    "training CIFAR-10": (128, 3, 32, 32, 1),
    "training one image": (1, 3, 32, 32, 1),
}
# DSSN (B, d, K): all L evaluations of one CIFAR-10 image, and one forward batch of them.
DSSN_SHAPES = {
    **{f"DSSN sigma={s} (L={dssn_levels(sigma=s)[1]})": (1, 3072, dssn_levels(sigma=s)[1])
       for s in (0.12, 0.25, 0.5, 1.0, 2.0, 3.5)},
    "DSSN one forward of 110": (1, 3072, 110),
    "DSSN one forward of 128": (1, 3072, 128),
}
# l0 pixel ablation (samples = B * n, C, d): batches of one image.
PIXEL_SHAPES = {
    "l0 MNIST, batch 100": (100, 1, 784),
    "l0 CIFAR-10, batch 100": (100, 3, 1024),
    "l0 CIFAR-10, batch 1000": (1000, 3, 1024),
    "l0 CIFAR-10 creation, n=10000": (10000, 3, 1024),
    "l0 CIFAR-10, n0 batch of 16": (16, 3, 1024),
}
# Gaussian (count, D) and SSN / uniform (B, d, n): one image, forward batches and small n.
GAUSSIAN_SHAPES = {"Gaussian CIFAR-10, batch 100": (100, 3072), "Gaussian CIFAR-10, n=16": (16, 3072),
                   "Gaussian CIFAR-10, batch 1000": (1000, 3072), "Gaussian ImageNet, batch 400": (400, 3 * 224 * 224)}
NOISE_SHAPES = {"SSN / uniform CIFAR-10, batch 100": (1, 3072, 100), "SSN / uniform CIFAR-10, n0=64": (1, 3072, 64),
                "SSN / uniform CIFAR-10, n=8": (1, 3072, 8)}

# Smoothed-ViT kept-token pixels (samples = B * P, per_sample = K x C x ph x pw): one image.
TOKEN_SHAPES = {
    "ViT-S/16 column s=19 (42 tokens)": (224, 42 * 3 * 16 * 16),
    "ViT-S/16 column s=19, a forward of 16": (16, 28 * 3 * 16 * 16),
    "CIFAR ViT block s=4 (4 x 4 patches)": (1024, 4 * 3 * 4 * 4),
    "MNIST ViT column s=2 (4 x 4 patches)": (28, 14 * 1 * 4 * 4),
}

# PatchCleanser mask pairs (rows, per_row = C x H x W): a forward of ImageNet pairs, CIFAR, digits.
MASK_PAIR_SHAPES = {
    "PatchCleanser ImageNet, a forward of 64 pairs": (64, 3 * 224 * 224),
    "PatchCleanser CIFAR-10, a forward of 512 pairs": (512, 3 * 32 * 32),
    "PatchCleanser digits, one pair": (1, 28 * 28),
}


def outputs(kernel: str, sizes: tuple[int, ...]) -> int:
    """Elements the kernel writes for these sizes."""
    if kernel == "ablate":
        B, C, H, W, P = sizes
        return B * P * 2 * C * H * W
    if kernel == "ablate_pixels":
        samples, C, d = sizes
        return samples * 2 * C * d
    if kernel == "gaussian_noise":
        return math.prod(sizes)
    return math.prod(sizes)  # dssn_split (B, d, K) and noise (B, d, n)


CASES = [
    *[("ablate", name, s) for name, s in ABLATE_SHAPES.items()],
    *[("dssn_split", name, s) for name, s in DSSN_SHAPES.items()],
    *[("ablate_pixels", name, s) for name, s in PIXEL_SHAPES.items()],
    *[("gaussian_noise", name, s) for name, s in GAUSSIAN_SHAPES.items()],
    *[("noise", name, s) for name, s in NOISE_SHAPES.items()],
    *[("ablate_tokens", name, s) for name, s in TOKEN_SHAPES.items()],
    *[("mask_pairs", name, s) for name, s in MASK_PAIR_SHAPES.items()],
]
TRITON_PLANS = {
    "ablate": lp.triton_ablate,
    "ablate_pixels": lp.triton_ablate_pixels,
    "gaussian_noise": lp.triton_gaussian_noise,
    "dssn_split": lp.triton_dssn_split,
    "noise": lp.triton_noise,
    "ablate_tokens": lp.triton_ablate_tokens,
    "mask_pairs": lp.triton_mask_pairs,
}


def check_fills_gpu(plan: lp.LaunchPlan, out: int, max_block: int) -> None:
    need = lp.lane_target(out)
    assert need >= min(out / 8, 1_000_000)
    assert plan.lanes >= need, f"{plan.kernel}: {plan.lanes} lanes for {out} outputs, need {need} ({plan})"
    assert 1 <= plan.threads <= max_block
    assert all(g >= 1 for g in plan.grid)


@pytest.mark.parametrize("kernel, name, sizes", CASES, ids=[c[1] for c in CASES])
def test_cuda_launch_fills_the_gpu(kernel, name, sizes):
    require_backend("cpu")
    plan = lp.cuda_plan(kernel, *sizes)
    check_fills_gpu(plan, outputs(kernel, sizes), 1024)
    assert plan.grid[0] <= 2**31 - 1 and plan.grid[1] <= 65535 and plan.grid[2] <= 65535
    if kernel in ("ablate", "dssn_split"):  # the chunks cover the inner axis
        assert 1 <= plan.chunk <= sizes[-1]


@pytest.mark.parametrize("kernel, name, sizes", CASES, ids=[c[1] for c in CASES])
def test_triton_launch_fills_the_gpu(kernel, name, sizes):
    plan = TRITON_PLANS[kernel](*sizes)
    check_fills_gpu(plan, outputs(kernel, sizes), 32 * 32)
    assert plan.threads == plan.meta["num_warps"] * 32
    if kernel == "ablate":  # programs x tile x chunk cover every output
        B, C, H, W, P = sizes
        per_program = 2 * plan.meta["BLOCK_PIX"] * plan.meta["BLOCK_C"] * plan.chunk
        assert plan.programs * per_program >= outputs(kernel, sizes)


def test_cuda_and_triton_agree_on_the_rule():
    """The C++ and Python plans share their chunking rule (launch_plan.h, launch_plans.py)."""
    require_backend("cpu")
    for B, C, H, W, P in [(1, 3, 32, 32, 1024), (3, 1, 5, 7, 11), (2, 3, 299, 299, 299)]:
        plan = lp.cuda_plan("ablate", B, C, H, W, P)
        tiles = math.ceil(B * C * H * W / plan.threads)
        assert plan.chunk == lp.chunk_for_target(P, tiles * plan.threads, outputs("ablate", (B, C, H, W, P)), 1024)


def test_cuda_plan_names_bad_arguments():
    require_backend("cpu")
    with pytest.raises(ValueError, match="kernel must be one of"):
        lp.cuda_plan("ablation", 1, 2, 3)
    with pytest.raises(TypeError, match=r"takes 5 sizes \(B, C, H, W, P\), got 3"):
        lp.cuda_plan("ablate", 1, 2, 3)
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        lp.cuda_plan("dssn_split", 1, -1, 3)


def test_empty_launches_do_nothing():
    require_backend("cpu")
    assert lp.cuda_plan("ablate", 0, 3, 32, 32, 4).work == 0
    assert lp.cuda_plan("ablate", 1, 3, 32, 32, 0).work == 0
    assert lp.cuda_plan("dssn_split", 1, 3072, 0).work == 0


# --- the chunked grids compute the reference --------------------------------------------------

def forced_chunk(chunk: int):
    """A triton_ablate that splits the ablations into chunks of ``chunk``."""

    def plan(B, C, H, W, P):
        p = lp.triton_ablate(B, C, H, W, P)
        c = min(chunk, max(P, 1))
        tiles = math.ceil(H * W / p.meta["BLOCK_PIX"])
        return dataclasses.replace(p, chunk=c, grid=(B * tiles * math.ceil(P / c), 1, 1))

    return plan


def chunk_cases(H: int, W: int):
    """(name, op, chunk): P not a multiple of the chunk, P = 1, chunks across the wraparound."""
    return [
        ("columns P=W, chunk 3", lambda x, **k: ops.ablate_bands(x, 3, **k), 3),
        ("columns, chunk 1", lambda x, **k: ops.ablate_bands(x, 2, **k), 1),
        # positions W-2, W-1, 0, 1 in one chunk: the bands wrap inside it
        ("wrapping bands in one chunk", lambda x, **k: ops.ablate_bands(x, 3, [W - 2, W - 1, 0, 1, 2], **k), 4),
        ("rows wrap, chunk 2", lambda x, **k: ops.ablate_bands(x, 2, [H - 1, 0, 1], axis="row", **k), 2),
        ("blocks, chunk 5", lambda x, **k: ops.ablate_blocks(x, 2, **k), 5),
        ("corner blocks, chunk 2", lambda x, **k: ops.ablate_blocks(x, 3, [[H - 1, W - 1], [H - 2, 0], [0, W - 1]], **k), 2),
        ("P = 1", lambda x, **k: ops.ablate_bands(x, 2, [W - 1], **k), 1),
        ("P = 1, chunk 4", lambda x, **k: ops.ablate_blocks(x, 2, [[H - 1, W - 1]], **k), 4),
        ("multi-blocks, chunk 4", lambda x, **k: ops.ablate_multi_blocks(x, 2, 2, **k), 4),
        ("multi-bands, chunk 3", lambda x, **k: ops.ablate_multi_bands(x, 1, 2, **k), 3),
        ("random bands", lambda x, **k: ops.ablate_random_band(x, 3, generator=torch.Generator().manual_seed(1), **k), 1),
    ]


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 9, 4), (3, 2, 4, 6)], ids=str)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_triton_chunked_grid_matches_reference(monkeypatch, shape, layout):
    require_backend("triton")
    from fastsmooth.ops.ablation import triton_kernel

    x = torch.rand(shape)
    C = shape[1]
    stats = {"mean": torch.rand(C).tolist(), "std": (torch.rand(C) + 0.1).tolist()}
    for name, op, chunk in chunk_cases(shape[2], shape[3]):
        monkeypatch.setattr(triton_kernel, "triton_ablate", forced_chunk(chunk))
        for kw in ({}, stats):
            want = op(x, backend="reference", **kw)
            out = torch.full_like(want, float("nan")).contiguous(memory_format=layout)
            got = op(x, backend="triton", out=out, **kw)
            assert torch.equal(got, want), f"{name}: {(got != want).sum()} elements differ"


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_cpu_kernel_on_the_chunk_cases(layout):
    require_backend("cpu")
    x = torch.rand(2, 3, 6, 7)
    for name, op, _ in chunk_cases(6, 7):
        want = op(x, backend="reference")
        out = torch.full_like(want, float("nan")).contiguous(memory_format=layout)
        assert torch.equal(op(x, backend="cpu", out=out), want), name
        assert torch.equal(op(x, backend="cpu"), want), name


def test_triton_default_plan_splits_one_image(monkeypatch):
    """At a benchmark shape the default plan really chunks the ablations (chunk < P), and
    the kernel computes the reference with the chunk a GPU would get (scaled-down image)."""
    plan = lp.triton_ablate(1, 3, 32, 32, 1024)
    assert 1 < plan.chunk < 1024 and 1024 % plan.chunk == 0
    require_backend("triton")
    from fastsmooth.ops.ablation import triton_kernel

    monkeypatch.setattr(triton_kernel, "triton_ablate", forced_chunk(plan.chunk))
    x = torch.rand(1, 3, 6, 5)
    assert torch.equal(ops.ablate_blocks(x, 2, backend="triton"), ops.ablate_blocks(x, 2, backend="reference"))
