"""PatchCleanser's token path: a token-dropping TokenViT whose masks lie on its patch grid runs on
the tokens outside both masks of each pair. Answers equal those of a plain loop that runs the
ViT on exactly those tokens (one call per pair, here), early exit included; masks off the grid,
models that keep every token and ``tokens=False`` fall back to masking pixels."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fastsmooth.engine.double_masking import DoubleMasking, PairLog, majority
from fastsmooth.smoothing.patchcleanser import PatchCleanser
from conftest import timm_or_skip
from patchcleanser_authors import authors_certification, certify_precomputed, double_masking_precomputed, gen_mask_set
from patchcleanser_models import digit_vit, held_out


@torch.inference_mode()
def token_maps(vit, x, mask_list):
    """int [B, M, M]: the top-1 class of every image under every pair, the ViT run on the tokens
    whose pixels both masks keep (each token must be wholly kept or wholly masked), one call
    per pair i <= j on the whole batch, made symmetric."""
    ph, pw = vit.patch
    B, C, H, W = x.shape
    # every token's pixels, (c, dy, dx) per row: unfold's layout
    patches = nn.functional.unfold(x, (ph, pw), stride=(ph, pw)).transpose(1, 2)  # [B, G, C * ph * pw]
    M = len(mask_list)
    maps = np.zeros((B, M, M), dtype=int)
    for i in range(M):
        for j in range(i, M):
            keep = (mask_list[i] & mask_list[j])[0, 0].reshape(H // ph, ph, W // pw, pw).permute(0, 2, 1, 3)
            keep = keep.reshape(-1, ph * pw)
            assert (keep.all(1) | ~keep.any(1)).all(), "a token is partly masked"
            kept = keep.all(1).nonzero()[:, 0]
            pred = vit.forward_tokens(patches[:, kept], kept).argmax(1).numpy()
            maps[:, i, j] = maps[:, j, i] = pred
    return maps


@pytest.fixture(scope="module")
def vit_and_digits():
    timm_or_skip()
    x, y = held_out(200)
    return copy.deepcopy(digit_vit()).double(), x.double(), y  # float64: batch composition cannot flip a near tie


# 28 x 28 digits, 7 x 7 tokens: masks of 14 at 0, 7, 14 (M = 9) and masks of 7 at 0, 7, 14, 21 (M = 16)
ALIGNED = [dict(patch_size=8, num_mask=3), dict(patch_size=1, num_mask=None, mask_stride=7)]


@pytest.mark.parametrize("kw", ALIGNED)
def test_tokens_equal_a_plain_token_loop(vit_and_digits, kw):
    vit, x, y = vit_and_digits
    pc = PatchCleanser(vit, 10, batch_size=64, **kw)
    assert pc.path == "tokens" and pc.path_for(28, 28) == "tokens" and pc.token_obstacle(28, 28) is None
    masks, _, _ = gen_mask_set((28, 28), (kw["patch_size"],) * 2, num_mask=kw["num_mask"] or -1,
                               mask_stride=kw.get("mask_stride") or -1)
    maps = token_maps(vit, x, masks)
    certified = np.array([certify_precomputed(m, int(t)) for m, t in zip(maps, y)])
    predicted = np.array([double_masking_precomputed(m) for m in maps])
    M = len(masks)
    full = M + M * (M - 1) // 2
    result = pc.evaluate_batch(x)
    units = pc.last_units.clone()
    assert result.prediction.tolist() == predicted.tolist()
    assert ((result.prediction == y) & (result.certificate > 0)).tolist() == certified.tolist()
    # early exit equals the full evaluation; certified images ran every pair, the others no more
    unanimous_all = (maps == np.einsum("bii->bi", maps)[:, :1, None]).all(axis=(1, 2))
    assert (result.certificate > 0).tolist() == unanimous_all.tolist()
    assert (units[torch.from_numpy(unanimous_all)] == full).all() and (units <= full).all()
    assert pc.certify(x, y).tolist() == certified.tolist()
    assert (pc.last_units[torch.from_numpy(certified)] == full).all()
    assert pc.predict(x).tolist() == predicted.tolist()
    decided = pc.decide_batch(x, [0, kw["patch_size"]])
    assert decided.prediction.tolist() == predicted.tolist() and decided.certified[:, 1].tolist() == unanimous_all.tolist()
    # the set holds certified images, disagreements found only among two-mask pairs, and Case II / III
    one = np.einsum("bii->bi", maps)
    unanimous = (one == one[:, :1]).all(axis=1)
    majorities = np.array([majority(o) for o in one])
    stats = dict(certified=int(certified.sum()), second_round=int((unanimous & ~unanimous_all).sum()),
                 case_two=int((~unanimous & (predicted != majorities)).sum()),
                 case_three=int((~unanimous & (predicted == majorities)).sum()))
    assert stats["certified"] > 0 and stats["second_round"] > 0 and stats["case_two"] + stats["case_three"] > 0, stats
    # and a forced pixel path is a different base classifier input: the authors' pixel rule
    pixels = PatchCleanser(vit, 10, batch_size=64, tokens=False, **kw)
    assert pixels.path == "pixels"
    pix_certified, pix_predicted, _ = authors_certification(vit, x[:40], y[:40].numpy(), masks)
    assert pixels.predict(x[:40]).tolist() == pix_predicted.tolist()
    assert pixels.certify(x[:40], y[:40]).tolist() == pix_certified.tolist()


def test_auto_batch_size_on_tokens(vit_and_digits):
    vit, x, y = vit_and_digits
    fixed = PatchCleanser(vit, 10, 8, num_mask=3, batch_size=16).evaluate_batch(x[:20])
    auto = PatchCleanser(vit, 10, 8, num_mask=3, batch_size="auto").evaluate_batch(x[:20])
    assert auto.prediction.tolist() == fixed.prediction.tolist()
    assert auto.certificate.tolist() == fixed.certificate.tolist()


@pytest.mark.parametrize("kw", [dict(patch_size=4, num_mask=3), dict(patch_size=6, num_mask=4)])
def test_misaligned_masks_fall_back_to_pixels(vit_and_digits, kw):
    vit, x, y = vit_and_digits
    pc = PatchCleanser(vit, 10, batch_size=64, **kw)
    assert pc.path == "pixels" and "cut 7 x 7 patches" in pc.token_obstacle(28, 28)
    forced = PatchCleanser(vit, 10, batch_size=64, tokens=False, **kw)
    masks, _, _ = gen_mask_set((28, 28), (kw["patch_size"],) * 2, num_mask=kw["num_mask"])
    certified, predicted, _ = authors_certification(vit, x[:60], y[:60].numpy(), masks)
    for smoother in (pc, forced):
        result = smoother.evaluate_batch(x[:60])
        assert result.prediction.tolist() == predicted.tolist()
        assert smoother.certify(x[:60], y[:60]).tolist() == certified.tolist()


def test_a_vit_that_keeps_every_token_masks_pixels(vit_and_digits):
    vit, x, _ = vit_and_digits
    keeps = copy.deepcopy(vit)
    keeps.drop_tokens = False
    pc = PatchCleanser(keeps, 10, 8, num_mask=3, batch_size=64)
    assert pc.path == "pixels" and "drop_tokens=False" in pc.token_obstacle(28, 28)
    masks, _, _ = gen_mask_set((28, 28), (8, 8), num_mask=3)
    _, predicted, _ = authors_certification(keeps, x[:30], np.zeros(30, dtype=int), masks)
    assert pc.predict(x[:30]).tolist() == predicted.tolist()


def _watching_vit(watch: tuple[int, int]):
    """A TokenViT whose forward_tokens says class 1 iff both tokens of ``watch`` are dropped."""
    from fastsmooth.models.vit import mnist_vit

    vit = mnist_vit(patch_size=4, embed_dim=16, depth=1, num_heads=1).double().eval()

    def forward_tokens(pixels, index):
        gone = ~((index == watch[0]).any(1) | (index == watch[1]).any(1))
        return torch.stack([(~gone).double(), gone.double()], dim=1)

    vit.forward_tokens = forward_tokens
    return vit


def test_only_the_last_pair_decides_on_tokens():
    """One two-mask pair (the decider's last) drops two watched tokens no other pair drops: the
    answers must be the full enumeration's, after every pair has run."""
    timm_or_skip()
    pc = PatchCleanser(nn.Identity(), 2, 1, num_mask=None, mask_stride=8, batch_size=7)  # masks of 8 at 0, 8, 16, 20: M = 16
    ms = pc.masks(28, 28)
    M = ms.count
    last = DoubleMasking(M, 1, PairLog(1, M + M * (M - 1) // 2, torch.device("cpu"))).two_mask[-1]
    from fastsmooth.ops.mask_pairs.geometry import covered_tokens

    covered = covered_tokens(ms, (4, 4))
    only = [int(((covered[k]) & (covered.sum(0) == 1)).nonzero()[0, 0]) for k in last]  # a token only mask k covers
    pc = PatchCleanser(_watching_vit((only[0], only[1])), 2, 1, num_mask=None, mask_stride=8, batch_size=7)
    assert pc.path == "tokens"
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    result = pc.evaluate_batch(x)
    assert result.prediction.tolist() == [0, 0, 0] and result.certificate.tolist() == [0.0] * 3
    assert pc.last_units.tolist() == [M + M * (M - 1) // 2] * 3
    assert pc.certify(x, [0, 0, 0]).tolist() == [False] * 3


def test_token_path_errors(vit_and_digits):
    vit, _, _ = vit_and_digits
    with pytest.raises(ValueError, match=r"tokens=True but the masks cannot drop tokens: mask rows .* cut 7 x 7"):
        PatchCleanser(vit, 10, 4, num_mask=3, tokens=True)
    with pytest.raises(ValueError, match="tokens=True needs a fastsmooth.models.vit.TokenViT"):
        PatchCleanser(nn.Flatten(), 10, 4, num_mask=3, tokens=True)
    with pytest.raises(TypeError, match="tokens must be None"):
        PatchCleanser(vit, 10, 4, num_mask=3, tokens="yes")
    assert PatchCleanser(vit, 10, 8, num_mask=3, tokens=True).path == "tokens"
    assert PatchCleanser(nn.Flatten(), 10, 4, num_mask=3).path == "pixels"


@pytest.mark.parametrize("per", ["batch", "image"])
def test_training_noise_drops_the_tokens_certification_drops(per):
    """for_vit's PatchCleanser noise for a token-dropping ViT with aligned masks: the kept tokens
    of one random pair, the pixels of exactly those tokens; misaligned masks: pixel Cutout."""
    timm_or_skip()
    from fastsmooth import methods
    from fastsmooth.models.vit import mnist_vit
    from fastsmooth.training import Forwards

    vit = mnist_vit(patch_size=7, embed_dim=16, depth=1, num_heads=1)
    method = methods.for_vit(methods.get("patchcleanser"), vit)
    x = torch.rand(6, 1, 28, 28)
    hp = methods.resolve(method, {"patch_size": 8, "num_mask": 3}, (1, 28, 28))
    out = method.noise(hp, per)(x, torch.Generator().manual_seed(0))
    parts = [(torch.arange(6), out)] if per == "batch" else out.parts
    if per == "image":
        assert isinstance(out, Forwards) and sorted(torch.cat([r for r, _ in parts]).tolist()) == list(range(6))
    patches = nn.functional.unfold(x, (7, 7), stride=(7, 7)).transpose(1, 2)
    masks = PatchCleanser(vit, 10, 8, num_mask=3).masks(28, 28)
    for rows, (pixels, index) in parts:
        assert index.shape[-1] < 16 and torch.equal(pixels, patches[rows[:, None], index])
        # the dropped tokens are those of two masks of the set
        dropped = set(range(16)) - set(index.reshape(-1, index.shape[-1])[0].tolist())
        from fastsmooth.ops.mask_pairs.geometry import covered_tokens
        cov = covered_tokens(masks, (7, 7))
        assert any(set((cov[i] | cov[j]).nonzero()[:, 0].tolist()) == dropped for i in range(9) for j in range(9))
    assert vit(*parts[0][1]).shape == (parts[0][0].numel(), 10)
    misaligned = methods.resolve(method, {"patch_size": 4, "num_mask": 3}, (1, 28, 28))
    pixels = method.noise(misaligned, per)(x, torch.Generator().manual_seed(0))
    assert isinstance(pixels, torch.Tensor) and pixels.shape == x.shape
