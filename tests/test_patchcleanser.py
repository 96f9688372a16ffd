"""PatchCleanser: certification and double-masking inference against a transcription of the
authors' logic (tests/patchcleanser_authors.py), on models trained on the demo digits and on
toy models built so that a chosen pair decides; early exit, forwards, errors, evaluate."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fastsmooth import methods
from fastsmooth.engine.double_masking import (
    FIRST_CHUNK, DoubleMasking, PairLog, disagreer_order, majority, pair_order, row_order,
)
from fastsmooth.evaluate import evaluate
from fastsmooth.smoothing.patchcleanser import PatchCleanser
from conftest import timm_or_skip
from patchcleanser_authors import authors_certification, double_masking, gen_mask_set
from patchcleanser_models import digit_cnn, digit_vit, held_out


def _authors(model, x, y, patch, k=-1, stride=-1):
    masks, _, _ = gen_mask_set(x.shape[2:], (patch, patch), num_mask=k, mask_stride=stride)
    return authors_certification(model, x, y.numpy(), masks), masks


def distinct_inputs(x, masks):
    """int [B]: distinct masked inputs among each image's pairs i <= j, found by comparing the
    authors' masked tensors (full-size boolean masks, torch.where) bit for bit."""
    zero = torch.tensor(0.0, dtype=x.dtype)
    M = len(masks)
    out = []
    for image in x:
        seen = {torch.where(masks[i] & masks[j], image, zero).numpy().tobytes()
                for i in range(M) for j in range(i, M)}
        out.append(len(seen))
    return torch.tensor(out)


def _check_parity(model, x, y, patch, k=None, stride=None, batch_size=64):
    (certified, predicted, maps), masks = _authors(model, x, y, patch, k or -1, stride or -1)
    M = len(masks)
    full = M + M * (M - 1) // 2
    for dedupe in (True, False):
        pc = PatchCleanser(model, 10, patch, num_mask=k, mask_stride=stride, batch_size=batch_size, dedupe=dedupe)
        result = pc.evaluate_batch(x)
        units = pc.last_units
        assert result.prediction.tolist() == predicted.tolist()
        # certified at the patch size iff every one- and two-mask prediction is the label
        ours = (result.prediction == y) & (result.certificate >= patch)
        assert ours.tolist() == certified.tolist()
        assert pc.certify(x, y).tolist() == certified.tolist()
        assert pc.predict(x).tolist() == predicted.tolist()
        # certified images ran every distinct input once (every pair without dedupe); the others
        # stopped early or needed the second round
        most = distinct_inputs(x, masks) if dedupe and pc.path == "pixels" else torch.full((len(x),), full)
        assert (units[torch.from_numpy(certified)] == most[torch.from_numpy(certified)]).all()
        assert (units <= most).all()
    one = np.einsum("bii->bi", maps)
    unanimous = (one == one[:, :1]).all(axis=1)
    majorities = np.array([majority(o) for o in one])
    stats = dict(
        certified=int(certified.sum()),
        second_round_disagreement=int((unanimous & ~(maps == one[:, :1, None]).all(axis=(1, 2))).sum()),
        case_two=int((~unanimous & (predicted != majorities)).sum()),
        case_three=int((~unanimous & (predicted == majorities)).sum()),
    )
    return stats, units


@pytest.fixture(scope="module")
def digits():
    return held_out(200)


@pytest.mark.parametrize("patch, k, stride", [(3, 4, None), (5, None, 6)])
def test_parity_with_the_authors_on_a_digit_cnn(digits, patch, k, stride):
    x, y = digits
    model = copy.deepcopy(digit_cnn()).double()  # float64: batch composition cannot flip a near tie
    stats, units = _check_parity(model, x.double(), y, patch, k, stride)
    # the set holds every outcome, including disagreements found only in the two-mask round
    assert all(v > 0 for v in stats.values()), stats
    # the online double masking of the authors (one call per pair, a row stops at a disagreement)
    masks, _, _ = gen_mask_set((28, 28), (patch, patch), num_mask=k or -1, mask_stride=stride or -1)
    pc = PatchCleanser(model, 10, patch, num_mask=k, mask_stride=stride, batch_size=64)
    assert pc.predict(x[:60].double()).tolist() == double_masking(x[:60].double(), masks, model).tolist()


@pytest.mark.parametrize("patch, k", [(4, 3), (6, 4)])
def test_parity_with_the_authors_on_a_digit_vit(digits, patch, k):
    timm_or_skip()
    x, y = digits
    model = copy.deepcopy(digit_vit()).double()
    stats, _ = _check_parity(model, x.double(), y, patch, k)
    assert stats["certified"] > 0 and stats["case_two"] + stats["case_three"] > 0, stats


# -- toy models: a chosen pair decides ---------------------------------------------------------------

class ZeroedPixels(nn.Module):
    """Class 1 when every pixel of ``watch`` is 0 (masked), else class 0; ones images in."""

    def __init__(self, watch: list[tuple[int, int]]) -> None:
        super().__init__()
        self.watch = watch

    def forward(self, x):
        hit = torch.stack([x[:, 0, h, w] == 0 for h, w in self.watch]).all(dim=0)
        return torch.stack([(~hit).double(), hit.double()], dim=1)


def _only_in(rects, index, H, W):
    """A pixel covered by mask ``index`` and no other."""
    for h in range(H):
        for w in range(W):
            inside = (rects[:, 0] <= h) & (h < rects[:, 2]) & (rects[:, 1] <= w) & (w < rects[:, 3])
            if inside.sum() == 1 and inside[index]:
                return h, w
    raise AssertionError("no such pixel")


def test_only_the_last_pair_decides():
    """The model disagrees on exactly one two-mask pair, the last one the decider schedules: the
    answers must still be those of the full enumeration, and it must have run every pair."""
    H = W = 16  # masks [0, 7), [5, 12), [9, 16) per axis: each has pixels no other mask covers
    pc = PatchCleanser(nn.Identity(), 2, 3, num_mask=3, batch_size=5)  # the model is set below, from the masks
    ms = pc.masks(H, W)
    M = ms.count
    last = DoubleMasking(M, 1, PairLog(1, M + M * (M - 1) // 2, torch.device("cpu"))).two_mask[-1]
    watch = [_only_in(ms.rects, last[0], H, W), _only_in(ms.rects, last[1], H, W)]
    pc.model = ZeroedPixels(watch)
    x = torch.ones(3, 1, H, W, dtype=torch.float64)
    result = pc.evaluate_batch(x)
    assert result.prediction.tolist() == [0, 0, 0] and result.certificate.tolist() == [0.0] * 3
    assert pc.last_units.tolist() == [M + M * (M - 1) // 2] * 3
    masks, _, _ = gen_mask_set((H, W), (3, 3), num_mask=3)
    certified, predicted, maps = authors_certification(pc.model, x, np.zeros(3, dtype=int), masks)
    assert (maps == 1).sum() == 3 * 2  # exactly one pair (both orders) disagrees
    assert not certified.any() and predicted.tolist() == [0, 0, 0]
    assert pc.certify(x, [0, 0, 0]).tolist() == [False] * 3


@pytest.mark.parametrize("seed", range(12))
def test_random_linear_models_match_the_authors(seed):
    """Brute force on small inputs: random 3-class linear models on random images (many Case II /
    III images), every answer equal to the authors' rule."""
    g = torch.Generator().manual_seed(seed)
    H, W = 9, 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(H * W, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.rand(16, 1, H, W, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    masks, _, _ = gen_mask_set((H, W), (2, 3), num_mask=3)
    certified, predicted, _ = authors_certification(model, x, y.numpy(), masks)
    pc = PatchCleanser(model, 3, (2, 3), num_mask=3, batch_size=7)
    result = pc.evaluate_batch(x)
    assert result.prediction.tolist() == predicted.tolist()
    assert ((result.prediction == y) & (result.certificate > 0)).tolist() == certified.tolist()
    assert pc.certify(x, y).tolist() == certified.tolist()
    decided = pc.decide_batch(x, [0, 1, 2, 3])
    assert decided.prediction.tolist() == predicted.tolist()
    assert decided.certified[:, 3].sum() == 0  # 3 > min(2, 3): never certified
    assert decided.certified[:, 1].tolist() == (result.certificate > 0).tolist()


def test_certify_stops_at_the_first_wrong_look():
    """A wrong label: the image stops after the first chunk (the two-mask round never runs)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2)).double()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([100.0, 0.0]))  # always class 0
    pc = PatchCleanser(model, 2, 2, num_mask=4, batch_size=8)
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    assert pc.certify(x, [1, 1, 0, 0]).tolist() == [False, False, True, True]
    M = pc.masks(6, 6).count
    assert M == 9 and pc.last_units.tolist()[:2] == [FIRST_CHUNK] * 2  # the first chunk of one-mask pairs
    assert pc.last_units.tolist()[2:] == [M + M * (M - 1) // 2] * 2


class MarginModel(nn.Module):
    """Two classes on ones images. Class 0 with logit margin ``base[k]`` summed over the masks k
    whose watched pixel is 0 (masked; 1 when none is), except class 1 when every pixel of
    ``flip`` is 0: masks get distinct one-mask margins, so the decider's margin order differs
    from the spread order."""

    def __init__(self, watch: list[tuple[int, int]], base: list[float], flip: list[tuple[int, int]]) -> None:
        super().__init__()
        self.watch, self.base, self.flip = watch, torch.tensor(base, dtype=torch.float64), flip

    def forward(self, x):
        masked = torch.stack([x[:, 0, h, w] == 0 for h, w in self.watch], dim=1).double()  # [B, M]
        margin = 1.0 + masked @ self.base
        hit = torch.stack([x[:, 0, h, w] == 0 for h, w in self.flip]).all(dim=0)
        return torch.stack([torch.where(hit, 0.0, margin), torch.where(hit, 1.0, 0.0)], dim=1)


def test_margin_order_and_only_its_last_pair_decides():
    """Pairs run by the sum of their masks' one-mask margins, least first: the model flips on the
    one pair of the two largest margins, which the margin order runs last (but the spread order
    would not). Every pair must have run and the answers must be the full enumeration's."""
    H = W = 16
    pc = PatchCleanser(nn.Identity(), 2, 3, num_mask=3, batch_size=5)
    ms = pc.masks(H, W)
    M = ms.count
    watch = [_only_in(ms.rects, k, H, W) for k in range(M)]
    base = [float((5 * k) % M) for k in range(M)]  # distinct margins, not in mask or spread order
    decider = DoubleMasking(M, 1, PairLog(1, M + M * (M - 1) // 2, torch.device("cpu")))
    order = decider.two_mask_order(np.asarray(base, dtype=np.float32) + 1.0)
    sums = [base[i] + base[j] for i, j in order]
    assert sums == sorted(sums) and order[-1] != decider.two_mask[-1]
    pc.model = MarginModel(watch, base, [watch[order[-1][0]], watch[order[-1][1]]])
    x = torch.ones(3, 1, H, W, dtype=torch.float64)
    result = pc.evaluate_batch(x)
    assert result.prediction.tolist() == [0, 0, 0] and result.certificate.tolist() == [0.0] * 3
    assert pc.last_units.tolist() == [M + M * (M - 1) // 2] * 3
    assert pc.certify(x, [0, 0, 0]).tolist() == [False] * 3
    assert pc.last_units.tolist() == [M + M * (M - 1) // 2] * 3
    masks, _, _ = gen_mask_set((H, W), (3, 3), num_mask=3)
    certified, predicted, maps = authors_certification(pc.model, x, np.zeros(3, dtype=int), masks)
    assert (maps == 1).sum() == 3 * 2 and not certified.any() and predicted.tolist() == [0, 0, 0]
    # and its first pair (the two least margins) decides after one chunk
    pc.model = MarginModel(watch, base, [watch[order[0][0]], watch[order[0][1]]])
    assert pc.evaluate_batch(x).certificate.tolist() == [0.0] * 3
    assert pc.last_units.tolist() == [M + FIRST_CHUNK] * 3


def test_order_helpers():
    one = np.array([0, 1, 0, 2, 1])
    margins = np.array([0.5, 3.0, 0.1, 2.0, 1.0], dtype=np.float32)
    assert row_order(0, one, margins) == [4, 3, 1, 2]  # other classes first (by margin), then class 0
    assert disagreer_order([1, 3, 4], margins) == [1, 3, 4]
    assert disagreer_order([4, 3], margins) == [3, 4]
    pairs = np.array([[0, 1], [2, 3], [0, 2], [1, 4]])
    assert pair_order(pairs, margins).tolist() == [2, 1, 0, 3]  # sums 3.5, 2.1, 0.6, 4.0


# -- input contract ------------------------------------------------------------------------------------

def test_empty_batch():
    pc = PatchCleanser(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 3, 2, num_mask=3)
    x = torch.rand(0, 1, 8, 8)
    assert pc.predict(x).shape == (0,) and pc.certify(x, []).shape == (0,)
    r = pc.evaluate_batch(x)
    assert r.prediction.shape == (0,) and r.certificate.shape == (0,) and pc.last_units.shape == (0,)
    d = pc.decide_batch(x, [1, 2])
    assert d.certified.shape == (0, 2)


@pytest.mark.parametrize("kwargs, words", [
    (dict(patch_size=0), ["patch_size", "0"]),
    (dict(patch_size=3, num_mask=1), ["num_mask=1", ">= 2"]),
    (dict(patch_size=3, num_mask=6, mask_stride=2), ["num_mask", "mask_stride"]),
    (dict(patch_size=3, fill=float("inf")), ["fill"]),
    (dict(patch_size=3, mean=[0.5]), ["mean and std"]),
])
def test_bad_construction(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as err:
        PatchCleanser(nn.Identity(), 3, **kwargs)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_bad_calls():
    pc = PatchCleanser(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 3, 9)
    with pytest.raises(ValueError, match=r"patch_size=\(9, 9\) does not fit 8 x 8 images"):
        pc.predict(torch.rand(2, 1, 8, 8))
    pc = PatchCleanser(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 3, 2)
    with pytest.raises(ValueError, match="labels must hold one integer class per image"):
        pc.certify(torch.rand(2, 1, 8, 8), [0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        pc.certify(torch.rand(2, 1, 8, 8), [0, 3])


# -- evaluate and the method registry ------------------------------------------------------------------

def test_evaluate_and_level_mode(tmp_path, digits):
    x, y = digits
    model = digit_cnn()
    method = methods.get("patchcleanser")
    hp = methods.resolve(method, {"patch_size": 3, "num_mask": 4}, (1, 28, 28))
    pc = method.build(model, 10, hp, 64)
    data = torch.utils.data.TensorDataset(x[:40], y[:40])
    full = evaluate(pc, data, levels=[1, 3, 4], output=tmp_path / "pc.tsv", progress=False)
    certified, predicted, _ = _authors(model, x[:40], y[:40], 3, 4)[0]
    assert full.certified_accuracy[3] == certified.mean() and full.certified_accuracy[4] == 0
    assert full.clean_accuracy == (predicted == y[:40].numpy()).mean()
    decided = evaluate(pc, data, levels=[3], output=tmp_path / "pcd.tsv", progress=False, decide=True)
    assert decided.certified_accuracy[3] == full.certified_accuracy[3]
    M = pc.masks(28, 28).count
    assert 0 < decided.forwards_per_image <= M + M * (M - 1) // 2


def test_method_rejects_a_patch_larger_than_the_image():
    method = methods.get("patchcleanser")
    with pytest.raises(ValueError, match="patch_size=30"):
        methods.resolve(method, {"patch_size": 30}, (1, 28, 28))
