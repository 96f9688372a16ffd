"""Smoothed ViTs: the token-dropping forward against the same ViT with an attention mask over the
dropped tokens, model building and checkpoints, and the ViT smoothers against a plain loop."""
from __future__ import annotations

import pytest
import torch

from conftest import timm_or_skip  # noqa: E402

timm = timm_or_skip()

import fastsmooth  # noqa: E402
from fastsmooth import models, ops  # noqa: E402
from fastsmooth.models.vit import TokenViT, build_vit  # noqa: E402
from fastsmooth.certificates.patch import certify_counts  # noqa: E402
from fastsmooth.ops.ablation import masks as M  # noqa: E402

CPU = torch.device("cpu")
SMALL = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)


def small_vit(image=16, patch=4, drop_tokens=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_vit("vit_tiny_patch16_224", num_classes=10, img_size=image, patch_size=patch,
                     drop_tokens=drop_tokens, **{**SMALL, **kwargs}).eval()


def pixel_tokens(keep: torch.Tensor, patch: int) -> torch.Tensor:
    """bool [G]: tokens whose patch holds a retained pixel, by the definition (scan the mask)."""
    H, W = keep.shape
    return keep.reshape(H // patch, patch, W // patch, patch).any(dim=3).any(dim=1).reshape(-1)


def ablated_image(x, keep, mean=None, std=None):
    """The full ablated image the ViT would see without dropping (normalize after ablation)."""
    v = torch.where(keep, x, torch.zeros(()))
    if mean is not None:
        v = (v - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return v


def masked_logits(model: TokenViT, image: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The same ViT on every token, the dropped ones masked out of attention as keys."""
    keys = torch.cat([torch.ones(1, dtype=torch.bool), kept])
    with torch.no_grad():
        return model.vit(image, attn_mask=keys.view(1, 1, 1, -1))


def dropped_logits(model, x, masks, tokens, patch):
    pixels = ops.ablate_tokens(x, masks, tokens[None], patch)
    with torch.no_grad():
        return model.forward_tokens(pixels, tokens)


def test_all_tokens_forward_equals_timm():
    model = small_vit()
    x = torch.rand(3, 3, 16, 16)
    every = torch.arange(16)[None]
    pixels = ops.ablate_tokens(x, M.cached_masks("all", 16, 16, 0, 0, "column", torch.device("cpu")), every, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(pixels, every[0]), model(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,start", [("column", 2), ("column", 14), ("block", 13 * 16 + 15)])
def test_token_dropping_equals_attention_mask(kind, start):
    """Kept tokens from the geometry; attention mask from the pixel definition. Keeping one
    dropped token more, or dropping one kept token, moves the logits far beyond the tolerance."""
    model = small_vit()
    x = torch.rand(2, 3, 16, 16)
    if kind == "column":
        masks = M.band_masks(16, 16, 3, torch.tensor([start]), "column")
        tokens = ops.band_tokens(16, 16, 3, torch.tensor([start]), (4, 4)).index[0]
    else:
        masks = M.block_masks(16, 16, 3, torch.tensor([start]))
        tokens = ops.block_tokens(16, 16, 3, torch.tensor([start]), (4, 4)).index[0]
    keep = masks.pixel_keep()[0, 0]
    kept = pixel_tokens(keep, 4)
    want = masked_logits(model, ablated_image(x, keep), kept)
    got = dropped_logits(model, x, masks, tokens, (4, 4))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)

    dropped = (~kept).nonzero()[:, 0]
    one_more = torch.cat([tokens, dropped[:1]]).sort().values
    one_less = tokens[1:]
    for wrong in (one_more, one_less):
        off = dropped_logits(model, x, masks, wrong, (4, 4))
        assert (off - want).abs().max() > 1e-3, "a wrong token set went unnoticed"


def test_block_straddling_corner_keeps_four_tokens():
    sets = ops.block_tokens(16, 16, 3, torch.tensor([3 * 16 + 3, 15 * 16 + 15]), (4, 4))
    assert sets.index[0].tolist() == [0, 1, 4, 5]  # rows / cols 3..5 touch patches 0 and 1
    assert sets.index[1].tolist() == [0, 3, 12, 15]  # wraps in both directions


# ---------------------------------------------------------------- models


def test_registry_builds_vits():
    mnist = models.build("mnist_vit")
    assert isinstance(mnist, TokenViT) and mnist.image_size == (28, 28) and mnist.patch == (4, 4)
    assert mnist.in_chans == 1 and mnist.num_tokens == 49 and mnist.drop_tokens
    tiny = models.build("vit_tiny_patch16_224", num_classes=7, img_size=32, patch_size=8, depth=1, drop_tokens=False)
    assert tiny.num_classes == 7 and tiny.grid == (4, 4) and not tiny.drop_tokens
    assert models.is_vit("deit_small_patch16_224") and models.is_vit("cifar_vit") and not models.is_vit("mnist_cnn")
    with pytest.raises(ValueError, match=r"unknown timm model 'vit_nonexistent'"):
        models.build("vit_nonexistent")


@pytest.mark.parametrize("kwargs,match", [
    (dict(global_pool="avg"), r"class-token pooling"),
    (dict(reg_tokens=2), r"exactly one prefix token"),
    (dict(class_token=False, global_pool="avg"), r"exactly one prefix token"),
])
def test_unsupported_vits_are_refused_with_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_vit(**kwargs)


@pytest.mark.parametrize("fmt", ["torch", "safetensors", "tokenvit"])
def test_pretrained_loads_local_files(tmp_path, fmt):
    source = small_vit(seed=1)
    if fmt == "safetensors":
        st = pytest.importorskip("safetensors.torch")
        path = tmp_path / "w.safetensors"
        st.save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        torch.save(source.state_dict() if fmt == "tokenvit" else source.vit.state_dict(), path)
    loaded = build_vit("vit_tiny_patch16_224", num_classes=10, img_size=16, patch_size=4, pretrained=path, **SMALL)
    for (k, a), b in zip(source.vit.state_dict().items(), loaded.vit.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match=r"nothing is downloaded"):
        build_vit("vit_tiny_patch16_224", pretrained=tmp_path / "missing.pth")


# ---------------------------------------------------------------- smoothers


def loop_counts(model, x, masks, drop, mean=None, std=None):
    """Top-1 counts by a plain loop: one ablation of ``masks`` at a time, the full image, the
    attention mask over the tokens the pixel definition drops."""
    keeps = masks.pixel_keep()[0]
    counts = torch.zeros(x.shape[0], 10, dtype=torch.int64)
    for keep in keeps:
        kept = pixel_tokens(keep, model.patch[0]) if drop else torch.ones(model.num_tokens, dtype=torch.bool)
        logits = masked_logits(model, ablated_image(x, keep, mean, std), kept)
        counts += torch.nn.functional.one_hot(logits.argmax(1), 10)
    return counts


@pytest.mark.parametrize("drop", [True, False])
def test_column_smoother_counts_equal_loop(drop):
    model = small_vit(drop_tokens=drop)
    x = torch.rand(3, 3, 16, 16)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    smoother = fastsmooth.ViTColumnSmoothing(model, 10, 3, mean=mean, std=std, batch_size=7)
    assert smoother.drop_tokens is drop
    counts = smoother.counts(x)
    assert torch.equal(counts, loop_counts(model, x, M.cached_masks("band", 16, 16, 3, 0, "column", CPU), drop, mean, std))
    assert torch.equal(counts.sum(1), torch.full((3,), 16))


def test_block_smoother_counts_equal_loop_and_certify():
    model = small_vit(image=8, patch=4)
    x = torch.rand(2, 3, 8, 8)
    smoother = fastsmooth.ViTBlockSmoothing(model, 10, 3, batch_size=1000)
    counts = smoother.counts(x)
    assert torch.equal(counts, loop_counts(model, x, M.cached_masks("block", 8, 8, 3, 0, "column", CPU), True))
    prediction, certified = smoother.certify(x, 1)
    assert torch.equal(prediction, counts.argmax(1))
    assert torch.equal(certified, certify_counts(counts, (1 + 3 - 1) ** 2)[1])  # semantics.md §1, Delta = 9


@pytest.mark.parametrize("kind,size,keep,axis,drop", [
    ("multi_band", 3, 2, "column", True),  # 3-column bands straddle the 4-pixel patches; one partial band
    ("multi_band", 5, 2, "row", True),
    ("multi_band", 3, 2, "column", False),
    ("multi_block", 3, 2, "column", True),  # 25 pairs of 3 x 3 tiles on a 16 x 16 image (a partial tile row)
    ("multi_block", 6, 3, "column", False),
])
def test_multi_band_and_multi_block_counts_equal_loop_and_certify(kind, size, keep, axis, drop):
    model = small_vit(drop_tokens=drop)
    x = torch.rand(2, 3, 16, 16)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    if kind == "multi_band":
        smoother = fastsmooth.ViTMultiBandSmoothing(model, 10, size, keep, mean=mean, std=std, batch_size=7, axis=axis)
        plain = fastsmooth.MultiBandSmoothing(torch.nn.Identity(), 10, size, keep, axis=axis)
    else:
        smoother = fastsmooth.ViTMultiBlockSmoothing(model, 10, size, keep, mean=mean, std=std, batch_size=7)
        plain = fastsmooth.MultiBlockSmoothing(torch.nn.Identity(), 10, size, keep)
    masks = M.cached_masks(kind, 16, 16, size, keep, axis, CPU)
    counts = smoother.counts(x)
    assert torch.equal(counts, loop_counts(model, x, masks, drop, mean, std))
    assert torch.equal(counts.sum(1), torch.full((2,), masks.count))
    for m in (1, 3):  # the certificate is the CNN smoother's: same Delta, same tie rule
        prediction, certified = smoother.certify(x, m)
        assert torch.equal(prediction, counts.argmax(1))
        assert torch.equal(certified, certify_counts(counts, plain.delta(m, 16, 16))[1])
    decided = smoother.decide_batch(x, [1, 3])  # the engine's exact early exit answers as the full counts
    for j, m in enumerate((1, 3)):
        prediction, certified = certify_counts(counts, plain.delta(m, 16, 16))
        assert torch.equal(decided.prediction, prediction)
        assert torch.equal(decided.certified[:, j], certified & (prediction >= 0))


def test_smoother_refuses_wrong_inputs():
    model = small_vit()
    with pytest.raises(TypeError, match=r"model must be a fastsmooth.models.vit.TokenViT"):
        fastsmooth.ViTColumnSmoothing(torch.nn.Linear(2, 2), 10, 3)
    with pytest.raises(ValueError, match=r"normalize must be one of"):
        fastsmooth.ViTColumnSmoothing(model, 10, 3, normalize="never")
    with pytest.raises(ValueError, match=r"the ViT takes 16 x 16 images, got 8 x 8"):
        fastsmooth.ViTColumnSmoothing(model, 10, 3).counts(torch.rand(1, 3, 8, 8))


def test_early_exit_decisions_equal_full_counts():
    """decide_batch (the engine's exact early exit) answers as the full enumeration does."""
    model = small_vit()
    x = torch.rand(3, 3, 16, 16)
    smoother = fastsmooth.ViTColumnSmoothing(model, 10, 3, batch_size=8)
    decided = smoother.decide_batch(x, [1, 2, 4])
    counts = smoother.counts(x)
    for j, m in enumerate((1, 2, 4)):
        prediction, certified = certify_counts(counts, m + 3 - 1)
        assert torch.equal(decided.prediction, prediction)
        assert torch.equal(decided.certified[:, j], certified & (prediction >= 0))


@pytest.mark.parametrize("kind,size,drop", [("band", 3, True), ("block", 3, True), ("band", 5, False)])
def test_per_image_training_noise_is_each_images_own_ablation(kind, size, drop):
    """per="image": each image under its own band / block, as certification writes it; rows that
    keep the same number of tokens share a forward, and every row is in exactly one."""
    from fastsmooth.smoothing.vit import token_training_noise
    from fastsmooth.training import Forwards

    model = small_vit(drop_tokens=drop)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    noise = token_training_noise(model, kind, size, mean=mean, std=std, normalize="before", per="image")
    x = torch.rand(12, 3, 16, 16)
    out = noise(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, one image at a time
    starts = torch.randint(16 if kind == "band" else 256, (12,), generator=g)
    if not drop:  # one forward of every token
        pixels, index = out
        assert torch.equal(index, torch.arange(16))
        for b in range(12):
            masks = M.band_masks(16, 16, size, starts[b : b + 1], "column")
            want = ops.ablate_tokens(x[b : b + 1], masks, index[None], 4, mean, std, normalize="before")
            assert torch.equal(pixels[b : b + 1], want)
        return
    assert isinstance(out, Forwards) and len(out.parts) > 1  # several token counts among 12 draws
    rows = torch.cat([r for r, _ in out.parts])
    assert torch.equal(rows.sort().values, torch.arange(12))
    for members, (pixels, tokens) in out.parts:
        assert pixels.shape[:2] == tokens.shape and tokens.shape[0] == len(members)
        for row, b in enumerate(members.tolist()):
            start = starts[b : b + 1]
            if kind == "band":
                masks, want_tokens = M.band_masks(16, 16, size, start, "column"), ops.band_tokens(16, 16, size, start, (4, 4))
            else:
                masks, want_tokens = M.block_masks(16, 16, size, start), ops.block_tokens(16, 16, size, start, (4, 4))
            assert torch.equal(tokens[row], want_tokens.index[0])
            want = ops.ablate_tokens(x[b : b + 1], masks, tokens[row][None], 4, mean, std, normalize="before")
            assert torch.equal(pixels[row : row + 1], want)
    logits, labels = out.logits(model, torch.arange(12))
    assert logits.shape == (12, 10) and torch.equal(labels, rows)


@pytest.mark.parametrize("kind,size,keep", [("multi_band", 3, 2), ("multi_block", 5, 2)])
def test_multi_band_and_multi_block_training_noise_is_each_images_own_ablation(kind, size, keep):
    """per="image" with multi-band / multi-block draws: each image keeps its own random choice
    of bands / tiles, its tokens from that choice's geometry, its pixels as certification writes them."""
    from fastsmooth.smoothing.vit import token_training_noise

    model = small_vit()
    noise = token_training_noise(model, kind, size, keep=keep, per="image")
    x = torch.rand(12, 3, 16, 16)
    out = noise(x, torch.Generator().manual_seed(5))
    n = 16 // size if kind == "multi_band" else (16 // size) ** 2
    combos = M.random_subsets(12, n, keep, torch.Generator().manual_seed(5))  # the same draws
    assert len(out.parts) > 1  # choices keep different numbers of tokens
    assert torch.equal(torch.cat([r for r, _ in out.parts]).sort().values, torch.arange(12))
    for members, (pixels, tokens) in out.parts:
        for row, b in enumerate(members.tolist()):
            c = combos[b : b + 1]
            if kind == "multi_band":
                masks, sets = M.multi_band_masks(16, 16, size, c, "column"), ops.multi_band_tokens(16, 16, size, c, (4, 4))
            else:
                masks, sets = M.multi_block_masks(16, 16, size, c), ops.multi_block_tokens(16, 16, size, c, (4, 4))
            assert torch.equal(tokens[row], sets.index[0])
            assert torch.equal(pixels[row : row + 1], ops.ablate_tokens(x[b : b + 1], masks, tokens[row][None], 4))
    with pytest.raises(ValueError, match=r"needs keep, the number of bands / tiles kept"):
        token_training_noise(model, kind, size)
