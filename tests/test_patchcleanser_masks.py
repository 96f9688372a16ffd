"""The PatchCleanser mask set: hand-computed sets, the authors' gen_mask_set, the covering property."""
import itertools

import pytest
import torch

from fastsmooth.ops.mask_pairs import mask_set
from patchcleanser_authors import gen_mask_set


def _axes(ms):
    return sorted(set(ms.rects[:, 0].tolist())), sorted(set(ms.rects[:, 1].tolist()))


def test_imagenet_224_patch_32_six_masks():
    ms = mask_set(224, 224, 32, 6)
    assert ms.stride == (33, 33) and ms.mask_size == (64, 64) and ms.count == 36
    rows, cols = _axes(ms)
    assert rows == cols == [0, 33, 66, 99, 132, 160]  # 165 > 224 - 64: the last one is N - m
    assert (ms.rects[:, 2] - ms.rects[:, 0] == 64).all() and (ms.rects[:, 3] - ms.rects[:, 1] == 64).all()


@pytest.mark.parametrize("patch, stride, size, positions", [
    (2, 6, 7, [0, 6, 12, 18, 24, 25]),   # s = ceil(31 / 6) = 6, m = 7, 32 - 7 = 25 missed
    (5, 5, 9, [0, 5, 10, 15, 20, 23]),   # s = ceil(28 / 6) = 5, m = 9, 23 missed
    (8, 5, 12, [0, 5, 10, 15, 20]),      # s = ceil(25 / 6) = 5, m = 12, 20 = 32 - 12 hit: no extra
])
def test_cifar_32(patch, stride, size, positions):
    ms = mask_set(32, 32, patch, 6)
    assert ms.stride == (stride, stride) and ms.mask_size == (size, size)
    assert _axes(ms) == (positions, positions)
    assert ms.count == len(positions) ** 2


def test_rectangular_image_and_patch():
    ms = mask_set(28, 40, (3, 7), 4)
    # rows: s = ceil(26 / 4) = 7, m = 9, 0 7 14 + 19; columns: s = ceil(34 / 4) = 9, m = 15, 0 9 18 + 25
    assert ms.stride == (7, 9) and ms.mask_size == (9, 15)
    assert _axes(ms) == ([0, 7, 14, 19], [0, 9, 18, 25])
    # row-major over (row position, column position), as the authors' double loop
    assert ms.rects[:5].tolist() == [[0, 0, 9, 15], [0, 9, 9, 24], [0, 18, 9, 33], [0, 25, 9, 40], [7, 0, 16, 15]]


def test_given_stride():
    ms = mask_set(28, 28, 5, num_mask=None, stride=4)
    assert ms.mask_size == (8, 8) and _axes(ms)[0] == [0, 4, 8, 12, 16, 20]


@pytest.mark.parametrize("H, W, patch, k, stride", [
    (224, 224, (32, 32), 6, -1), (28, 28, (5, 5), 6, -1), (28, 28, (3, 3), 4, -1), (32, 40, (3, 9), 5, -1),
    (28, 28, (5, 5), -1, 4), (30, 17, (4, 2), -1, 3), (10, 10, (10, 10), 3, -1), (9, 13, (1, 1), 2, -1),
])
def test_equals_the_authors_gen_mask_set(H, W, patch, k, stride):
    want, size, step = gen_mask_set((H, W), patch, num_mask=k, mask_stride=stride)
    ms = mask_set(H, W, patch, k if k > 0 else None, stride if stride > 0 else None)
    assert ms.mask_size == tuple(size) and ms.stride == tuple(step)
    assert torch.equal(ms.keep(), torch.cat([m[0] for m in want]))


@pytest.mark.parametrize("H, W, patch, k", [(12, 12, (3, 3), 3), (11, 14, (2, 4), 2), (9, 9, (4, 4), 4)])
def test_every_patch_is_covered_by_a_mask(H, W, patch, k):
    """R-covering, by brute force: every patch position lies entirely inside some mask."""
    ms = mask_set(H, W, patch, k)
    ph, pw = patch
    for top, left in itertools.product(range(H - ph + 1), range(W - pw + 1)):
        r = ms.rects
        inside = (r[:, 0] <= top) & (r[:, 1] <= left) & (r[:, 2] >= top + ph) & (r[:, 3] >= left + pw)
        assert inside.any(), (top, left)


@pytest.mark.parametrize("kwargs, words", [
    (dict(patch=29), ["patch=29", "28 x 28"]),
    (dict(patch=(3, 40)), ["patch=(3, 40)"]),
    (dict(patch=3, num_mask=1), ["num_mask=1", ">= 2"]),
    (dict(patch=3, num_mask=None, stride=0), ["stride=0", ">= 1"]),
    (dict(patch=3, num_mask=6, stride=2), ["exactly one of num_mask and stride"]),
    (dict(patch=2.5), ["patch"]),
])
def test_bad_input_is_one_line_naming_the_argument(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as err:
        mask_set(28, 28, **kwargs)
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text
