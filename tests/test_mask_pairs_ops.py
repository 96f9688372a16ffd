"""The fused double-masking op: every backend against the reference bit for bit (fresh random
inputs, edge cases, dtypes, channels-last output), the reference against the authors' boolean
masks, argument errors, and opcheck / fake kernels of the compiled op."""
from __future__ import annotations

import pytest
import torch

from conftest import device_of, require_backend
from fastsmooth.ops.mask_pairs import mask_pairs, mask_set, pair_rects

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def rand_case(seed, N=3, C=2, H=7, W=9, R=11):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, C, H, W, generator=g, dtype=torch.float64)
    images = torch.randint(0, N, (R,), generator=g)
    corner = torch.randint(-3, max(H, W) + 2, (R, 2, 2), generator=g)  # rectangles may reach past the image
    rects = torch.cat([corner, corner + torch.randint(0, 6, (R, 2, 2), generator=g)], dim=2)
    return x, images, rects


def test_reference_equals_the_authors_boolean_masks():
    """x * (m_i AND m_j) with full-size boolean masks (torch.where(mask, x, 0), as the authors)."""
    ms = mask_set(28, 28, 5, 6)
    keep = ms.keep()
    x = torch.rand(2, 1, 28, 28)
    pairs = torch.tensor([[0, 0], [3, 17], [35, 2], [7, 7], [20, 21]])
    images = torch.tensor([0, 1, 1, 0, 1])
    got = mask_pairs(x, images, pair_rects(ms, pairs), backend="reference")
    for r, (i, j) in enumerate(pairs.tolist()):
        want = torch.where(keep[i] & keep[j], x[images[r]], torch.tensor(0.0))
        assert torch.equal(got[r], want)


@pytest.mark.parametrize("backend", ["cpu", "triton", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_matches_reference(backend, dtype):
    device = device_of(backend)
    require_backend(backend, device.type)
    for seed in range(3):
        x, images, rects = rand_case(1000 * DTYPES.index(dtype) + seed)
        x = x.to(dtype=dtype, device=device)
        for fill, stats in ((0.0, {}), (0.25, {"mean": [0.4, 0.6], "std": [0.2, 0.3]})):
            want = mask_pairs(x, images, rects, fill, backend="reference", **stats)
            got = mask_pairs(x, images, rects, fill, backend=backend, **stats)
            assert got.dtype == dtype and got.device == x.device
            assert torch.equal(got, want), (seed, fill)


@pytest.mark.parametrize("backend", ["cpu", "triton", "cuda"])
def test_channels_last_out_and_edge_cases(backend):
    device = device_of(backend)
    require_backend(backend, device.type)
    x, images, rects = rand_case(7, N=2, C=3, H=5, W=4, R=6)
    x = x.float().to(device)
    rects[0] = torch.tensor([[0, 0, 5, 4], [0, 0, 0, 0]])  # the whole image masked
    rects[1] = torch.tensor([[2, 2, 2, 2], [9, 9, 12, 12]])  # empty and outside: nothing masked
    rects[2] = torch.tensor([[1, 1, 3, 3], [1, 1, 3, 3]])  # the same mask twice (a one-mask input)
    # the CPU kernel's line spans: the second mask left of the first, adjacent, and nested
    rects[3] = torch.tensor([[1, 3, 4, 4], [0, 0, 5, 2]])
    rects[4] = torch.tensor([[0, 1, 5, 2], [2, 2, 5, 3]])
    rects[5] = torch.tensor([[0, 0, 5, 4], [1, 1, 2, 2]])
    want = mask_pairs(x, images, rects, -1.5, backend="reference")
    assert (want[0] == -1.5).all() and torch.equal(want[1], x[images[1]])
    out = torch.empty(6, 3, 5, 4, device=device).contiguous(memory_format=torch.channels_last)
    got = mask_pairs(x, images, rects, -1.5, out=out, backend=backend)
    assert got is out and torch.equal(got, want)
    empty = mask_pairs(x, images[:0], rects[:0], backend=backend)
    assert empty.shape == (0, 3, 5, 4)


@pytest.mark.parametrize("kwargs, words", [
    (dict(images=torch.tensor([0, 2])), ["images", "0 .. 1"]),
    (dict(images=torch.tensor([0.0, 1.0])), ["images", "int64"]),
    (dict(rects=torch.zeros(2, 4, dtype=torch.int64)), ["rects", "[R = 2, 2, 4]"]),
    (dict(fill=float("nan")), ["fill"]),
])
def test_bad_arguments(kwargs, words):
    args = dict(x=torch.rand(2, 1, 4, 4), images=torch.tensor([0, 1]), rects=torch.zeros(2, 2, 4, dtype=torch.int64))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError)) as err:
        mask_pairs(**args, backend="reference")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_opcheck_compiled_op():
    require_backend("cpu")
    x, images, rects = rand_case(3)
    x = x.float()
    mean, std = torch.rand(2), torch.rand(2) + 0.5
    for stats in ((None, None), (mean, std)):
        args = (x, images, rects, 0.5, *stats)
        torch.library.opcheck(torch.ops.fastsmooth.mask_pairs.default, args)
        torch.library.opcheck(torch.ops.fastsmooth.mask_pairs_out.default, args + (torch.empty(11, 2, 7, 9),))
