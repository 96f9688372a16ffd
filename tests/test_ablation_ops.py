"""Structured-ablation ops: masks against the formulas of semantics.md, every backend against the
reference element for element, argument errors, and opcheck of the compiled ops."""
from __future__ import annotations

import itertools

import pytest
import torch

import fastsmooth
from fastsmooth import ops
from fastsmooth.ops.ablation import masks as M
from conftest import KERNEL_BACKENDS, device_of, require_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# (B, C, H, W): one image, C = 1 and 3, H != W, odd sizes.
SHAPES = ((1, 1, 5, 7), (2, 3, 6, 5), (3, 3, 4, 9))


def rand_images(shape, dtype=torch.float32, device="cpu"):
    # Values away from 0 and 1 so that an ablated zero can never pass for real data.
    return (torch.rand(shape, dtype=torch.float64) * 0.9 + 0.05).to(dtype=dtype, device=device)


# ---------------------------------------------------------------- masks vs semantics.md


def spec_keep(kind, H, W, s, p, keep=None):
    """Retained pixels of ablation p, transcribed from semantics.md §1 with Python loops."""
    out = torch.zeros(H, W, dtype=torch.bool)
    if kind == "column":
        for h in range(H):
            for k in range(s):
                out[h, (p + k) % W] = True
    elif kind == "row":
        for w in range(W):
            for k in range(s):
                out[(p + k) % H, w] = True
    elif kind == "block":
        i, j = divmod(p, W)
        for a in range(s):
            for b in range(s):
                out[(i + a) % H, (j + b) % W] = True
    elif kind == "multi_column":
        combo = list(itertools.combinations(range(W // s), keep))[p]
        for t in combo:
            out[:, t * s:(t + 1) * s] = True
    elif kind == "multi_block":
        tw = W // s
        combo = list(itertools.combinations(range((H // s) * tw), keep))[p]
        for t in combo:
            r, c = divmod(t, tw)
            out[r * s:(r + 1) * s, c * s:(c + 1) * s] = True
    return out


@pytest.mark.parametrize("H,W", [(5, 7), (6, 4), (1, 3)])
def test_band_and_block_masks_follow_spec(H, W):
    for s in sorted({1, 2, min(H, W)}):
        col = M.cached_masks("band", H, W, s, 0, "column", torch.device("cpu")).pixel_keep()[0]
        assert all(torch.equal(col[p], spec_keep("column", H, W, s, p)) for p in range(W))
        row = M.cached_masks("band", H, W, s, 0, "row", torch.device("cpu")).pixel_keep()[0]
        assert all(torch.equal(row[p], spec_keep("row", H, W, s, p)) for p in range(H))
        blk = M.cached_masks("block", H, W, s, 0, "column", torch.device("cpu")).pixel_keep()[0]
        assert blk.shape[0] == H * W
        assert all(torch.equal(blk[p], spec_keep("block", H, W, s, p)) for p in range(H * W))


@pytest.mark.parametrize("H,W,s,keep", [(5, 7, 2, 2), (6, 9, 3, 1), (4, 8, 2, 3)])
def test_multi_masks_follow_spec(H, W, s, keep):
    mb = M.cached_masks("multi_band", H, W, s, keep, "column", torch.device("cpu")).pixel_keep()[0]
    assert mb.shape[0] == len(list(itertools.combinations(range(W // s), keep)))
    assert all(torch.equal(mb[p], spec_keep("multi_column", H, W, s, p, keep)) for p in range(mb.shape[0]))
    mk = M.cached_masks("multi_block", H, W, s, keep, "column", torch.device("cpu")).pixel_keep()[0]
    assert all(torch.equal(mk[p], spec_keep("multi_block", H, W, s, p, keep)) for p in range(mk.shape[0]))


def test_combinations_in_itertools_order():
    got = ops.band_combinations(6, 3)
    assert got.tolist() == [list(c) for c in itertools.combinations(range(6), 3)]


# ---------------------------------------------------------------- backends vs reference


def op_cases(H, W):
    """(name, callable(x, backend, out=None)) pairs covering every op and edge case."""
    last_col, last_row = W - 1, H - 1
    s_mid = max(1, min(H, W) // 2)
    cases = [
        ("encode", lambda x, b, **k: ops.encode(x, backend=b, **k)),
        ("columns s=1", lambda x, b, **k: ops.ablate_bands(x, 1, backend=b, **k)),
        ("columns s=W", lambda x, b, **k: ops.ablate_bands(x, W, backend=b, **k)),
        ("columns wrap", lambda x, b, **k: ops.ablate_bands(x, min(3, W), positions=[last_col, 0], backend=b, **k)),
        ("rows", lambda x, b, **k: ops.ablate_bands(x, s_mid, axis="row", backend=b, **k)),
        ("rows wrap", lambda x, b, **k: ops.ablate_bands(x, min(2, H), [last_row], axis="row", backend=b, **k)),
        ("blocks", lambda x, b, **k: ops.ablate_blocks(x, s_mid, backend=b, **k)),
        ("blocks corner", lambda x, b, **k: ops.ablate_blocks(x, min(2, H, W), [[last_row, last_col]], backend=b, **k)),
        ("multi-bands", lambda x, b, **k: ops.ablate_multi_bands(x, 2 if W >= 4 else 1, 2, backend=b, **k)),
        ("multi-bands subset", lambda x, b, **k: ops.ablate_multi_bands(x, 1, 2, [[0, W - 1]], backend=b, **k)),
        ("multi-blocks", lambda x, b, **k: ops.ablate_multi_blocks(x, 2, 2, backend=b, **k)),
        # one ablation per call (P = 1) takes the CPU kernel's single-pass path
        ("multi-blocks subset", lambda x, b, **k: ops.ablate_multi_blocks(
            x, 2, 2, [[0, (H // 2) * (W // 2) - 1]], backend=b, **k)),
    ]
    return cases


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_op_matches_reference(kernel_backend, shape, dtype):
    device = device_of(kernel_backend)
    x = rand_images(shape, dtype, device)
    C = shape[1]
    mean, std = torch.rand(C).tolist(), (torch.rand(C) + 0.1).tolist()
    for name, op in op_cases(shape[2], shape[3]):
        for stats in ({}, {"mean": mean, "std": std}):
            want = op(x, "reference", **stats)
            got = op(x, kernel_backend, **stats)
            assert got.dtype == dtype and got.device == x.device, name
            assert torch.equal(got, want), f"{name} {stats and 'normalized'}: {(got != want).sum()} elements differ"


def test_reference_semantics_by_hand():
    x = rand_images((1, 2, 3, 4))
    out = ops.ablate_bands(x, 2, positions=[3], backend="reference", mean=[0.5, 0.25], std=[2.0, 4.0])
    v = (x - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([2.0, 4.0]).view(1, 2, 1, 1)
    assert out.shape == (1, 4, 3, 4)
    kept = [3, 0]  # band of width 2 starting at the last column wraps to column 0
    assert torch.equal(out[0, :2, :, kept], v[0, :, :, kept])
    assert torch.equal(out[0, 2:, :, kept], 1 - v[0, :, :, kept])
    assert torch.count_nonzero(out[0, :, :, [1, 2]]) == 0


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_out_argument_is_filled_and_returned(backend):
    require_backend(backend) if backend != "reference" else None
    x = rand_images((2, 3, 5, 6))
    out = torch.full((12, 6, 5, 6), float("nan"))
    got = ops.ablate_bands(x, 2, axis="column", out=out, backend=backend)
    assert got is out
    assert torch.equal(out, ops.ablate_bands(x, 2, backend="reference"))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("backend", ["reference", *KERNEL_BACKENDS])
def test_channels_last_out_matches_reference(backend, shape, dtype):
    device = device_of(backend)
    if backend != "reference":
        require_backend(backend, device.type)
    x = rand_images(shape, dtype, device)
    for name, op in op_cases(shape[2], shape[3]):
        want = op(x, "reference")
        out = torch.full_like(want, float("nan")).contiguous(memory_format=torch.channels_last)
        assert not out.is_contiguous() or want.shape[2:] == (1, 1)
        got = op(x, backend, out=out)
        assert got is out and got.stride() == out.stride(), name
        assert torch.equal(got, want), f"{name}: {(got != want).sum()} elements differ"


@pytest.mark.parametrize(
    "case",
    [
        ("columns", (100, 3, 32, 32), torch.float32, lambda x, **k: ops.ablate_bands(x, 4, **k)),
        ("rows", (130, 2, 33, 31), torch.float16, lambda x, **k: ops.ablate_bands(x, 5, axis="row", **k)),
        ("multi-blocks", (7, 3, 64, 62), torch.float32, lambda x, **k: ops.ablate_multi_blocks(x, 8, 1, **k)),
        # one ablation per image (P = 1): the single-pass path, a corner block that wraps
        ("one block", (400, 3, 65, 63), torch.float32, lambda x, **k: ops.ablate_blocks(x, 9, [[60, 58]], **k)),
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_outputs_above_the_streaming_threshold(case, layout):
    """Outputs of >= 32 MB take the CPU kernel's streaming-store path (csrc/ops/cpu/stream.h)."""
    require_backend("cpu")
    _, shape, dtype, op = case
    x = rand_images(shape, dtype)
    want = op(x, backend="reference")
    assert want.numel() * want.element_size() >= 32 << 20
    assert torch.equal(op(x, backend="cpu"), want)
    out = torch.full_like(want, float("nan")).contiguous(memory_format=layout)
    assert torch.equal(op(x, backend="cpu", out=out), want)


def test_cpu_kernels_use_every_thread():
    """The extension must be built with OpenMP: otherwise at::parallel_for in its kernels runs
    serially while torch.get_num_threads() reports more threads."""
    require_backend("cpu")
    from fastsmooth import _C

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _C.parallel_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_image_major_order():
    x = rand_images((3, 1, 4, 5))
    out = ops.ablate_bands(x, 2)
    for b in range(3):
        for p in range(5):
            single = ops.ablate_bands(x[b:b + 1], 2, positions=[p], backend="reference")
            assert torch.equal(out[b * 5 + p], single[0])


# ---------------------------------------------------------------- training variants


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_random_band_keeps_one_band_per_image(backend):
    require_backend(backend) if backend != "reference" else None
    x = rand_images((64, 1, 4, 7))
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    out = ops.ablate_random_band(x, 3, generator=g, backend=backend)
    assert out.shape == (64, 2, 4, 7)
    starts = []
    for b in range(64):
        kept = (out[b, 0] != 0)[0]
        start = [p for p in range(7) if torch.equal(kept, spec_keep("column", 1, 7, 3, p)[0])]
        assert len(start) == 1
        starts.append(start[0])
    assert len(set(starts)) > 3  # positions vary across images
    g2 = torch.Generator().manual_seed(g.initial_seed())
    assert torch.equal(out, ops.ablate_random_band(x, 3, generator=g2, backend=backend))


def test_random_block_matches_reference_with_same_generator(kernel_backend):
    x = rand_images((5, 3, 6, 7), device=device_of(kernel_backend))
    seed = int(torch.randint(1 << 30, ()))
    want = ops.ablate_random_block(x, 3, generator=torch.Generator().manual_seed(seed), backend="reference")
    got = ops.ablate_random_block(x, 3, generator=torch.Generator().manual_seed(seed), backend=kernel_backend)
    assert torch.equal(got, want)
    assert (torch.count_nonzero(got[:, 0], dim=(1, 2)) == 9).all()  # one 3 x 3 block per image


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: ops.ablate_bands(x, 0), r"size must be in \[1, 7\], got 0"),
        (lambda x: ops.ablate_bands(x, 8), r"size must be in \[1, 7\], got 8"),
        (lambda x: ops.ablate_bands(x, 2, axis="row", positions=[5]), r"positions must lie in \[0, 5\), got 5"),
        (lambda x: ops.ablate_bands(x, 2, positions=[-1]), r"positions must lie in \[0, 7\), got -1"),
        (lambda x: ops.ablate_bands(x, 2, axis="diagonal"), r"axis must be 'column' or 'row', got 'diagonal'"),
        (lambda x: ops.ablate_bands(x[0], 2), r"x must be 4-D \(B, C, H, W\), got shape \(3, 5, 7\)"),
        (lambda x: ops.ablate_bands((x * 255).to(torch.uint8), 2), r"x must be float32.*got torch.uint8"),
        (lambda x: ops.ablate_bands(x, 2, mean=[0.5, 0.5], std=[1, 1, 1]), r"mean must have one entry per channel \(C = 3\), got 2"),
        (lambda x: ops.ablate_bands(x, 2, mean=[0.5] * 3), r"mean and std must be given together"),
        (lambda x: ops.ablate_bands(x, 2, mean=[0.5] * 3, std=[1, 0, 1]), r"std must be nonzero"),
        (lambda x: ops.ablate_bands(x, 2.5), r"size must be an integer, got 2.5"),
        (lambda x: ops.ablate_bands(x, 2, positions=[0.5]), r"positions must hold integers"),
        (lambda x: ops.ablate_blocks(x, 6), r"size must be in \[1, 5\], got 6"),
        (lambda x: ops.ablate_blocks(x, 2, positions=[[5, 0]]), r"positions\[:, 0\] \(row i\) must lie in \[0, 5\), got 5"),
        (lambda x: ops.ablate_multi_bands(x, 2, 4), r"keep must be in \[1, 3\], got 4"),
        (lambda x: ops.ablate_multi_bands(x, 2, 2, [[0, 0]]), r"combinations must not repeat"),
        (lambda x: ops.ablate_bands(x, 2, backend="gpu"), r"backend must be 'auto' or one of"),
        (lambda x: ops.ablate_bands(x, 2, out=torch.empty(3)), r"out must have shape \(14, 6, 5, 7\), got \(3,\)"),
        (lambda x: ops.ablate_bands(x, 2, out=torch.empty(14, 7, 5, 6).transpose(1, 3)),
         r"out must be contiguous or channels-last contiguous, got strides \(210, 1, 6, 30\)"),
    ],
)
def test_bad_arguments_are_named(call, match):
    x = rand_images((2, 3, 5, 7))
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


def test_native_op_checks_its_own_arguments():
    require_backend("cpu")
    x = rand_images((1, 1, 3, 3))
    rows = torch.ones(1, 2, 4, dtype=torch.uint8)  # H mismatch
    cols = torch.ones(1, 2, 3, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match=r"rows must be \[M, P, H = 3\]"):
        torch.ops.fastsmooth.ablate(x, rows, cols, None, 1, 1, None, None)


# ---------------------------------------------------------------- torch.library


def test_opcheck_compiled_ops():
    require_backend("cpu")
    x = rand_images((2, 3, 4, 5))
    m = M.cached_masks("block", 4, 5, 2, 0, "column", torch.device("cpu"))
    mt = M.cached_masks("multi_block", 4, 5, 2, 2, "column", torch.device("cpu"))
    mean, std = torch.rand(3), torch.rand(3) + 0.5
    for masks in (m, mt):
        args = (x, masks.rows, masks.cols, masks.tiles, masks.tile_h, masks.tile_w, mean, std)
        torch.library.opcheck(torch.ops.fastsmooth.ablate.default, args)
        out = torch.empty(2 * masks.count, 6, 4, 5)
        torch.library.opcheck(torch.ops.fastsmooth.ablate_out.default, args + (out,))


def test_backends_report_reasons():
    info = fastsmooth.backends()
    assert set(info) == set(fastsmooth.BACKENDS)
    assert info["reference"].available
    for b in info.values():
        assert b.available or b.reason, f"{b.name} is unavailable without a reason"
