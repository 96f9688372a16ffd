"""Smoothed-ViT token ops: kept tokens from the ablation geometry against pixel masks, the fused
token-extraction op on every backend against the reference bit for bit, by-hand semantics,
argument errors, and opcheck / fake kernels of the compiled op."""
from __future__ import annotations

import pytest
import torch

from fastsmooth import ops
from fastsmooth.ops.ablation import masks as M
from fastsmooth.ops.tokens import geometry as G
from conftest import device_of, require_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def rand_images(shape, dtype=torch.float32, device="cpu"):
    return (torch.rand(shape, dtype=torch.float64) * 0.9 + 0.05).to(dtype=dtype, device=device)


def pooled_tokens(keep: torch.Tensor, patch: tuple[int, int]) -> list[list[int]]:
    """Tokens whose patch holds a retained pixel, by scanning the pixel mask (the definition)."""
    ph, pw = patch
    P, H, W = keep.shape
    any_kept = keep.reshape(P, H // ph, ph, W // pw, pw).any(dim=4).any(dim=2)
    return [row.reshape(-1).nonzero()[:, 0].tolist() for row in any_kept]


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("H,W,patch", [(8, 12, (2, 3)), (16, 16, (4, 4)), (6, 9, (3, 3)), (4, 4, (1, 1))])
def test_band_and_block_tokens_equal_mask_pooling(H, W, patch):
    cpu = torch.device("cpu")
    for s in sorted({1, 2, 3, 5, min(H, W) - 1, min(H, W)} - {0}):
        for axis, length in (("column", W), ("row", H)):
            got = G.band_tokens(H, W, s, torch.arange(length), patch, axis).index
            want = pooled_tokens(M.cached_masks("band", H, W, s, 0, axis, cpu).pixel_keep()[0], patch)
            assert [t.tolist() for t in got] == want, (axis, s)
        got = G.block_tokens(H, W, s, torch.arange(H * W), patch).index
        want = pooled_tokens(M.cached_masks("block", H, W, s, 0, "column", cpu).pixel_keep()[0], patch)
        assert [t.tolist() for t in got] == want, ("block", s)


@pytest.mark.parametrize("H,W,patch", [(8, 12, (2, 3)), (16, 16, (4, 4)), (9, 9, (3, 3)), (12, 8, (4, 2))])
def test_multi_band_and_multi_block_tokens_equal_mask_pooling(H, W, patch):
    """Sizes that straddle patch boundaries and leave a partial band / tile at the end."""
    cpu = torch.device("cpu")
    for s in (1, 2, 3, 5):
        for axis, length in (("column", W), ("row", H)):
            for keep in sorted({1, 2, length // s} - {0}):
                if keep > length // s:
                    continue
                combos = M.all_combinations(length // s, keep)
                got = G.multi_band_tokens(H, W, s, combos, patch, axis).index
                want = pooled_tokens(M.cached_masks("multi_band", H, W, s, keep, axis, cpu).pixel_keep()[0], patch)
                assert [t.tolist() for t in got] == want, (axis, s, keep)
        tiles = (H // s) * (W // s)
        for keep in sorted({1, 2, 3} & set(range(1, tiles + 1))):
            got = G.multi_block_tokens(H, W, s, M.all_combinations(tiles, keep), patch).index
            want = pooled_tokens(M.cached_masks("multi_block", H, W, s, keep, "column", cpu).pixel_keep()[0], patch)
            assert [t.tolist() for t in got] == want, ("multi-block", s, keep)


def test_straddling_and_wrapping_bands_keep_the_union():
    # 224 x 224, 16 x 16 patches, s = 19: 2 or 3 patch columns of 14 tokens each
    sets = G.band_tokens(224, 224, 19, torch.arange(224), (16, 16))
    assert set(sets.counts.tolist()) == {28, 42}
    start_col = lambda p: sorted({t % 14 for t in sets.index[p].tolist()})  # noqa: E731
    assert start_col(0) == [0, 1]  # columns 0..18
    assert start_col(14) == [0, 1, 2]  # columns 14..32 straddle two boundaries
    assert start_col(210) == [0, 13]  # columns 210..223 and 0..4 wrap around
    assert start_col(208) == [0, 13]  # columns 208..223 and 0..2
    assert start_col(192) == [12, 13]  # columns 192..210: touches column 13 only by 208..210


def test_group_by_count_partitions_in_order():
    sets = G.band_tokens(16, 16, 5, torch.arange(16), (4, 4))
    groups = G.group_by_count(sets)
    seen = torch.cat([members for members, _ in groups]).sort().values
    assert torch.equal(seen, torch.arange(16))
    for members, tokens in groups:
        assert tokens.shape == (len(members), tokens.shape[1])
        for row, p in zip(tokens, members.tolist()):
            assert torch.equal(row, sets.index[p])
    assert [t.shape[1] for _, t in groups] == sorted({int(c) for c in sets.counts})


# ---------------------------------------------------------------- the fused op


def op_cases(H, W, patch):
    """(name, masks, tokens [M, P, K]) with equal K per case: bands, blocks, per-image masks, tiles."""
    cpu = torch.device("cpu")
    cases = []
    for kind, axis, s in (("band", "column", 3), ("band", "row", 2), ("block", "column", 2)):
        masks = M.cached_masks(kind, H, W, s, 0, axis, cpu)
        length = {"column": W, "row": H}[axis] if kind == "band" else H * W
        sets = (G.band_tokens(H, W, s, torch.arange(length), patch, axis) if kind == "band"
                else G.block_tokens(H, W, s, torch.arange(length), patch))
        for members, tokens in G.group_by_count(sets):
            sub = M.KeepMasks(masks.rows[:, members], masks.cols[:, members])
            cases.append((f"{kind}-{axis}-K{tokens.shape[1]}", sub, tokens[None]))
    # every token of an image (the no-dropping mode): ablated pixels inside kept tokens
    every = torch.arange((H // patch[0]) * (W // patch[1]))[None, None].expand(1, 2, -1).contiguous()
    band = M.cached_masks("band", H, W, 2, 0, "column", cpu)
    cases.append(("all-tokens", M.KeepMasks(band.rows[:, :2], band.cols[:, :2]), every))
    # per-image masks (M = B = 2), one ablation each
    rows = torch.ones(2, 1, H, dtype=torch.uint8)
    cols = M.band_masks(H, W, 3, torch.tensor([[1], [W - 1]]), "column").cols
    sets = G.band_tokens(H, W, 3, torch.tensor([1, W - 1]), patch)
    if len(set(sets.counts.tolist())) == 1:
        cases.append(("per-image", M.KeepMasks(rows, cols), torch.stack(sets.index)[:, None]))
    # multi-block tiles (tile = patch), token set from the pixel mask
    mb = M.multi_block_masks(H, W, patch[0], torch.tensor([[0, 1], [1, 2]])) if patch[0] == patch[1] else None
    if mb is not None:
        toks = torch.tensor(pooled_tokens(mb.pixel_keep()[0], patch))
        cases.append(("multi-block", mb, toks[None]))
    return cases


@pytest.mark.parametrize("shape,patch", [((2, 3, 8, 12), (2, 3)), ((1, 1, 8, 8), (4, 4)), ((2, 2, 6, 6), (3, 3))],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_backend_matches_reference(kernel_backend, shape, patch, dtype):
    device = device_of(kernel_backend)
    x = rand_images(shape, dtype, device)
    C = shape[1]
    mean, std = torch.rand(C).tolist(), (torch.rand(C) + 0.1).tolist()
    for name, masks, tokens in op_cases(shape[2], shape[3], patch):
        for stats in ({}, {"mean": mean, "std": std, "normalize": "after"}, {"mean": mean, "std": std,
                                                                              "normalize": "before"}):
            want = ops.ablate_tokens(x, masks, tokens, patch, backend="reference", **stats)
            got = ops.ablate_tokens(x, masks, tokens, patch, backend=kernel_backend, **stats)
            assert got.dtype == dtype and got.device == x.device, name
            assert torch.equal(got, want), f"{name} {stats}: {(got != want).sum()} elements differ"


def test_reference_semantics_by_hand():
    x = rand_images((1, 2, 4, 4))
    mean, std = torch.tensor([0.5, 0.25]), torch.tensor([2.0, 4.0])
    masks = M.band_masks(4, 4, 1, torch.tensor([3]), "column")  # keeps column 3 only
    tokens = torch.tensor([[1, 3]])  # patches (0, 1) and (1, 1) of a 2 x 2 grid of 2 x 2 patches
    for normalize in ("after", "before"):
        out = ops.ablate_tokens(x, masks, tokens, 2, mean.tolist(), std.tolist(), normalize=normalize,
                                backend="reference")
        assert out.shape == (1, 2, 2 * 2 * 2)
        v = (x[0] - mean.view(2, 1, 1)) / std.view(2, 1, 1)
        fill = -mean / std if normalize == "after" else torch.zeros(2)
        for k, (r0, c0) in enumerate([(0, 2), (2, 2)]):
            token = out[0, k].view(2, 2, 2)  # (c, dy, dx)
            assert torch.equal(token[:, :, 1], v[:, r0:r0 + 2, 3])  # column 3: retained
            assert torch.equal(token[:, :, 0], fill.view(2, 1).expand(2, 2))  # column 2: ablated


def test_only_kept_tokens_are_written():
    """The op's output is exactly the kept patches: no full-size image, K rows per sample."""
    x = rand_images((2, 1, 8, 8))
    sets = G.band_tokens(8, 8, 2, torch.tensor([0]), (4, 4))
    masks = M.band_masks(8, 8, 2, torch.tensor([0]), "column")
    out = ops.ablate_tokens(x, masks, sets.index[0][None], 4)
    assert out.shape == (2, 2, 16)  # 2 of the 4 tokens


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, m, t: ops.ablate_tokens(x, m, t, 3), r"patch=3: the patch height must be a positive divisor"),
        (lambda x, m, t: ops.ablate_tokens(x, m, t.float(), 2), r"tokens must be an int64 tensor"),
        (lambda x, m, t: ops.ablate_tokens(x, m, t + 100, 2), r"tokens must index the 4 x 4 patch grid"),
        (lambda x, m, t: ops.ablate_tokens(x, m, t[:, :0].repeat(2, 1), 2), r"tokens must be \[P = 1, K\]"),
        (lambda x, m, t: ops.ablate_tokens(x, m, t, 2, normalize="inside"), r"normalize must be one of"),
        (lambda x, m, t: ops.ablate_tokens(x, m, t, 2, out=torch.empty(3)), r"out must have shape \(2, 4, 12\)"),
    ],
)
def test_bad_arguments_are_named(call, match):
    x = rand_images((2, 3, 8, 8))
    masks = M.band_masks(8, 8, 2, torch.tensor([0]), "column")
    tokens = G.band_tokens(8, 8, 2, torch.tensor([0]), (2, 2)).index[0][None]
    with pytest.raises((ValueError, TypeError), match=match):
        call(x, masks, tokens)


def test_native_op_checks_token_range():
    require_backend("cpu")
    x = rand_images((1, 1, 4, 4))
    masks = M.band_masks(4, 4, 2, torch.tensor([0]), "column")
    with pytest.raises(RuntimeError, match=r"token indices must be in \[0, 4\)"):
        torch.ops.fastsmooth.ablate_tokens(x, masks.rows, masks.cols, None, 1, 1, torch.tensor([[[4]]]), 2, 2,
                                           None, None, True)


def test_opcheck_compiled_op():
    require_backend("cpu")
    x = rand_images((2, 3, 8, 8))
    masks = M.band_masks(8, 8, 3, torch.tensor([1, 2]), "column")
    tokens = torch.tensor([[[0, 1, 4, 5], [1, 2, 5, 6]]])  # hand-made: any in-range tokens are valid input
    mean, std = torch.rand(3), torch.rand(3) + 0.5
    for normalize_fill in (True, False):
        args = (x, masks.rows, masks.cols, None, 1, 1, tokens, 2, 2, mean, std, normalize_fill)
        torch.library.opcheck(torch.ops.fastsmooth.ablate_tokens.default, args)
        out = torch.empty(4, 4, 12)
        torch.library.opcheck(torch.ops.fastsmooth.ablate_tokens_out.default, args + (out,))
