"""PatchCleanser runs each distinct masked input of an image once (``dedupe``): the keys are
checked by brute force against the written inputs, and the answers against the authors' rule
and the plain enumeration, on images built to repeat many inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastsmooth.ops.mask_pairs import mask_pairs, mask_set, pair_rects
from fastsmooth.ops.mask_pairs.repeats import blank_pixels, input_keys, pair_keys
from fastsmooth.smoothing.patchcleanser import PatchCleanser
from patchcleanser_authors import authors_certification, gen_mask_set


def _images_with_blanks(g, B, C, H, W, dtype=torch.float64):
    """Random images with random rectangles of zeros (blank under fill 0), a zero image, and a
    -0.0 pixel (its bits differ from the fill's)."""
    x = torch.rand(B, C, H, W, generator=g, dtype=torch.float64) * 0.9 + 0.1
    for b in range(B):
        for _ in range(int(torch.randint(0, 4, (1,), generator=g))):
            top, left = (int(v) for v in torch.randint(0, min(H, W) - 1, (2,), generator=g))
            h, w = (int(v) for v in torch.randint(1, max(H, W), (2,), generator=g))
            x[b, :, top : top + h, left : left + w] = 0.0
    x[0] = 0.0
    x[1, 0, 0, 0] = -0.0
    return x.to(dtype)


def _brute_keys(x, ms, fill, mean, std):
    """[B, M, M]: index of the distinct written input of each pair, by comparing every pair's
    input bit for bit (the reference op writes them)."""
    B, M = x.shape[0], ms.count
    out = np.zeros((B, M, M), dtype=np.int64)
    pairs = torch.tensor([(i, j) for i in range(M) for j in range(M)])
    for b in range(B):
        written = mask_pairs(x, torch.full((M * M,), b), pair_rects(ms, pairs), fill, mean, std, backend="reference")
        seen: dict[bytes, int] = {}
        for r, row in enumerate(written):
            out[b, r // M, r % M] = seen.setdefault(row.numpy().tobytes(), len(seen))
    return out


def _same_partition(a, b):
    """Keys a and b group every image's pairs alike."""
    for ka, kb in zip(a, b):
        fa, fb = ka.reshape(-1), kb.reshape(-1)
        if not ((fa[:, None] == fa[None, :]) == (fb[:, None] == fb[None, :])).all():
            return False
    return True


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape, patch, k, stats", [
    ((1, 10, 10), (3, 3), (3, 3), None),
    ((3, 9, 12), (2, 4), (3, 2), ([0.5, 0.0, 0.25], [0.5, 1.0, 2.0])),
    ((2, 8, 8), (3, 3), (2, 4), None),
])
def test_keys_equal_exactly_when_the_written_inputs_do(seed, shape, patch, k, stats):
    g = torch.Generator().manual_seed(seed)
    C, H, W = shape
    x = _images_with_blanks(g, 5, C, H, W)
    mean, std = (None, None) if stats is None else (torch.tensor(stats[0], dtype=x.dtype),
                                                    torch.tensor(stats[1], dtype=x.dtype))
    if stats is not None:  # pixels equal to the mean normalize to exactly the fill 0
        x[2, :, : H // 2] = mean.view(C, 1, 1)
        x[0] = mean.view(C, 1, 1)
    ms = mask_set(H, W, patch, k)
    M = ms.count
    rects = torch.zeros(len(x), 2, 4, dtype=torch.int64)
    written = mask_pairs(x, torch.arange(len(x)), rects, 0.0, mean, std, backend="reference")
    blank = blank_pixels(written, torch.zeros((), dtype=x.dtype))
    keys = input_keys(blank, ms)
    assert (keys == keys.transpose(0, 2, 1)).all()
    assert _same_partition(keys, _brute_keys(x, ms, 0.0, mean, std))
    assert not blank[1, 0, 0]  # -0.0 is not the fill's bits
    assert len(np.unique(keys[0])) == 1  # a blank image writes one input for every pair
    assert (keys[3:4] == pair_keys(M)).all() or blank[3].any()


def test_keys_survive_hash_collisions(monkeypatch):
    """The hash only groups candidates: with every hash equal, the keys must still be exact."""
    from fastsmooth.ops.mask_pairs import repeats

    g = torch.Generator().manual_seed(7)
    x = _images_with_blanks(g, 4, 1, 10, 10)
    ms = mask_set(10, 10, 3, 3)
    blank = blank_pixels(x, torch.zeros((), dtype=x.dtype))
    exact = input_keys(blank, ms)
    monkeypatch.setattr(repeats, "_MULTIPLIERS", np.zeros_like(repeats._MULTIPLIERS))
    collided = input_keys(blank, ms)
    assert _same_partition(collided, _brute_keys(x, ms, 0.0, None, None))
    assert _same_partition(collided, exact) and collided.max() < ms.count ** 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_blank_pixels_in_every_float_width(dtype):
    written = torch.tensor([[[[0.0, 1.0], [-0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]], dtype=dtype)
    assert blank_pixels(written, torch.zeros((), dtype=dtype)).tolist() == [[[True, False], [False, False]]]


@pytest.mark.parametrize("seed", range(10))
def test_answers_equal_the_authors_and_the_plain_enumeration(seed):
    """Random 3-class linear models on images with blank rectangles (many pairs repeat an input,
    and Case II rows meet inputs the one-mask round already ran): every answer equals the
    authors' rule and the plain enumeration's, with fewer forwards."""
    g = torch.Generator().manual_seed(100 + seed)
    H, W = 9, 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(H * W, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = _images_with_blanks(g, 16, 1, H, W)
    y = torch.randint(0, 3, (16,), generator=g)
    masks, _, _ = gen_mask_set((H, W), (2, 3), num_mask=3)
    certified, predicted, _ = authors_certification(model, x, y.numpy(), masks)
    runs = {}
    for dedupe in (True, False):
        pc = PatchCleanser(model, 3, (2, 3), num_mask=3, batch_size=7, dedupe=dedupe)
        result = pc.evaluate_batch(x)
        assert result.prediction.tolist() == predicted.tolist()
        assert ((result.prediction == y) & (result.certificate > 0)).tolist() == certified.tolist()
        units = pc.last_units.clone()
        assert pc.certify(x, y).tolist() == certified.tolist()
        assert pc.predict(x).tolist() == predicted.tolist()
        runs[dedupe] = units
    assert (runs[True] <= runs[False]).all() and runs[True].sum() < runs[False].sum()
    assert runs[True][0] == 1  # the zero image: one forward answers every pair


def test_only_the_last_distinct_input_decides():
    """Images where mask 0 covers only blank pixels (so its pairs repeat other inputs) and the
    model disagrees only on the last pair the decider schedules: every distinct input must run,
    and the answer is the full enumeration's."""
    H = W = 16
    pc = PatchCleanser(nn.Identity(), 2, 3, num_mask=3, batch_size=5)
    ms = pc.masks(H, W)
    M = ms.count
    x = torch.ones(2, 1, H, W, dtype=torch.float64)
    top, left, bottom, right = ms.rects[0].tolist()
    x[:, :, top:bottom, left:right] = 0.0  # mask 0 changes nothing
    written = mask_pairs(x, torch.arange(2), torch.zeros(2, 2, 4, dtype=torch.int64))
    keys = input_keys(blank_pixels(written, torch.zeros((), dtype=x.dtype)), ms)
    distinct = len(np.unique(keys[0]))
    assert distinct == M * (M - 1) // 2 + 1  # (0, j) repeats (j, j); (0, 0) is the clean image

    class Recorder(nn.Module):  # class 0 everywhere, margin 1; keeps the inputs in the order they ran
        def __init__(self):
            super().__init__()
            self.rows = []

        def forward(self, batch):
            self.rows += list(batch.clone())
            return torch.stack([torch.ones(len(batch)), torch.zeros(len(batch))], dim=1).double()

    pc.model = Recorder()
    assert pc.evaluate_batch(x).certificate.tolist() == [3.0, 3.0]  # every input: class 0
    assert pc.last_units.tolist() == [distinct] * 2
    last = pc.model.rows[-1]  # the two images are equal: the input either ran last

    class LastOnly(nn.Module):  # class 1 on that input only, margins as the recorder's elsewhere
        def forward(self, batch):
            hit = (batch == last).flatten(1).all(dim=1)
            return torch.stack([(~hit).double(), hit.double()], dim=1)

    pc.model = LastOnly()
    result = pc.evaluate_batch(x)
    assert result.prediction.tolist() == [0, 0] and result.certificate.tolist() == [0.0, 0.0]
    assert pc.last_units.tolist() == [distinct] * 2
    assert pc.certify(x, [0, 0]).tolist() == [False, False]
    masks, _, _ = gen_mask_set((H, W), (3, 3), num_mask=3)
    certified, predicted, maps = authors_certification(pc.model, x, np.zeros(2, dtype=int), masks)
    assert (maps == 1).any() and not certified.any() and predicted.tolist() == [0, 0]


def test_bad_dedupe():
    with pytest.raises(TypeError, match="dedupe must be True"):
        PatchCleanser(nn.Identity(), 3, 2, dedupe="yes")


@pytest.mark.parametrize("keys, why", [(np.zeros((1, 3, 2), dtype=np.int64), r"got \(1, 3, 2\)"),
                                       (np.full((1, 3, 3), 9, dtype=np.int64), r"in \[9, 9\]"),
                                       (np.full((1, 3, 3), -1, dtype=np.int64), r"in \[-1, -1\]")])
def test_bad_keys(keys, why):
    from fastsmooth.engine.double_masking import DoubleMasking, PairLog

    with pytest.raises(ValueError, match=r"keys must be int \[slots, M, M\] = \[1, 3, 3\] in \[0, 9\).*" + why):
        DoubleMasking(3, 1, PairLog(1, 6, torch.device("cpu")), keys=keys)
