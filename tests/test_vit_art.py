"""Smoothed ViTs side by side with ART 1.20.1's salman2021 path: ``fastsmooth.integrations.art``
builds the smoother from ART's estimator (its timm ViT, random initialization), and on the same
images its vote counts equal ART's for column, row and block ablation, with and without token
dropping, normalized or not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import timm_or_skip  # noqa: E402

timm = timm_or_skip()
pytest.importorskip("art")
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing  # noqa: E402

import fastsmooth  # noqa: E402
from fastsmooth.integrations import art as fs_art  # noqa: E402

ARCH = "vit_tiny_patch16_224"  # one of ART's supported names; shrunk below
SMALL = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)


def art_smoother(monkeypatch, size, ablation_type, image, patch, mean=None, std=None, drop_tokens=True):
    """ART's estimator on a small ViT: ART creates its ViT by timm name, so timm.create_model is
    wrapped to build it at the image size (ART then neither resizes nor replaces anything)."""
    create = timm.create_model

    def small_vit(name, **kwargs):
        kwargs.update(SMALL, img_size=image, patch_size=patch, num_classes=10,
                      pretrained_cfg_overlay=dict(input_size=(3, image, image), num_classes=10))
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", small_vit)
    preprocessing = (0.0, 1.0) if mean is None else (np.array(mean).reshape(3, 1, 1), np.array(std).reshape(3, 1, 1))
    torch.manual_seed(0)
    estimator = PyTorchDeRandomizedSmoothing(
        model=ARCH, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, image, image), nb_classes=10,
        ablation_size=size, algorithm="salman2021", ablation_type=ablation_type, replace_last_layer=False,
        drop_tokens=drop_tokens, load_pretrained=False, device_type="cpu", verbose=False, preprocessing=preprocessing,
    )
    monkeypatch.setattr(timm, "create_model", create)
    with torch.no_grad():  # timm's small initial weights give every ablation the same vote: spread them
        for weight in estimator.model.parameters():
            if weight.dim() > 1:
                weight.normal_(0, weight.shape[-1] ** -0.5)
    return estimator


def varied(counts: torch.Tensor) -> torch.Tensor:
    """counts, after checking that the votes are not trivial (several classes get votes)."""
    assert (counts > 0).sum(dim=1).max() > 1 and len({tuple(c) for c in counts.tolist()}) > 1
    return counts


def art_counts(estimator, x: torch.Tensor, patch_size: int) -> np.ndarray:
    """ART's vote counts from its own eval_and_certify (read where it hands them to its certifier)."""
    seen = []
    certify = estimator.ablator.certify

    def keep_counts(pred_counts, size_to_certify, label):
        seen.append(np.array(pred_counts))
        return certify(pred_counts, size_to_certify=size_to_certify, label=label)

    estimator.ablator.certify = keep_counts
    estimator.eval_and_certify(x.numpy(), np.zeros(len(x), dtype=np.int64), size_to_certify=patch_size,
                               batch_size=len(x), verbose=False)
    return np.concatenate(seen).astype(np.int64)


def images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


@pytest.mark.parametrize("kind,size,expected", [("column", 3, fastsmooth.ViTColumnSmoothing),
                                                ("row", 5, fastsmooth.ViTRowSmoothing)])
def test_band_counts_equal_art(monkeypatch, kind, size, expected):
    image, patch = 16, 4
    estimator = art_smoother(monkeypatch, size, kind, image, patch)
    smoother = fs_art.smoother(estimator, batch_size=256)  # the estimator's own ViT, shared
    assert type(smoother) is expected and smoother.size == size and smoother.threshold is None
    assert smoother.drop_tokens and smoother.normalize == "before" and smoother.model.vit is estimator.model
    x = images(20, image, seed=1)
    assert np.array_equal(varied(smoother.counts(x)).numpy(), art_counts(estimator, x, 2))


def test_normalized_column_counts_equal_art(monkeypatch):
    """ART normalizes before ablating (its preprocessing), so ablated pixels are 0: normalize="before"."""
    image, patch = 16, 4
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    estimator = art_smoother(monkeypatch, 6, "column", image, patch, mean, std)
    smoother = fs_art.smoother(estimator)
    x = images(8, image, seed=2)
    ours = varied(smoother.counts(x))
    assert np.array_equal(ours.numpy(), art_counts(estimator, x, 2))
    other = fastsmooth.ViTColumnSmoothing(smoother.model, 10, 6, mean=mean, std=std, normalize="after").counts(x)
    assert not np.array_equal(other.numpy(), ours.numpy())  # the fill value matters to the model


@pytest.mark.parametrize("drop", [True, False])
def test_block_counts_equal_art(monkeypatch, drop):
    image, patch = 12, 4
    estimator = art_smoother(monkeypatch, 3, "block", image, patch, drop_tokens=drop)
    smoother = fs_art.smoother(estimator, batch_size=500)
    assert type(smoother) is fastsmooth.ViTBlockSmoothing and smoother.drop_tokens is drop
    x = images(20 if drop else 4, image, seed=3)
    assert np.array_equal(varied(smoother.counts(x)).numpy(), art_counts(estimator, x, 1))


def test_column_without_dropping_equals_art(monkeypatch):
    """drop_tokens=False: every token, ablated pixels 0; the counts differ from dropping's."""
    image, patch = 16, 4
    estimator = art_smoother(monkeypatch, 3, "column", image, patch, drop_tokens=False)
    smoother = fs_art.smoother(estimator)
    assert not smoother.drop_tokens and not smoother.model.drop_tokens
    x = images(6, image, seed=4)
    ours = varied(smoother.counts(x))
    assert np.array_equal(ours.numpy(), art_counts(estimator, x, 2))
    dropping = fastsmooth.ViTColumnSmoothing(smoother.model, 10, 3, normalize="before", drop_tokens=True).counts(x)
    assert not np.array_equal(dropping.numpy(), ours.numpy())


def test_eval_and_certify_equals_art_on_a_vit(monkeypatch):
    """Clean accuracy equals ART's; the certified accuracy is ART's up to the tie rule (only images
    whose gap is exactly 2 Delta can differ)."""
    image, patch, size, m = 16, 4, 3, 2
    estimator = art_smoother(monkeypatch, size, "column", image, patch)
    x = images(10, image, seed=5)
    counts = fs_art.smoother(estimator).counts(x)
    y = counts.argmax(1).numpy().copy()
    y[::2] = (y[::2] + 1) % 10  # half of the labels wrong
    acc, cert = fs_art.eval_and_certify(estimator, x.numpy(), y, size_to_certify=m, batch_size=4, verbose=False)
    theirs_acc, theirs_cert = estimator.eval_and_certify(x.numpy(), y, size_to_certify=m, batch_size=4, verbose=False)
    assert float(acc) == pytest.approx(float(theirs_acc)) == 0.5
    top2 = counts.topk(2, dim=1).values
    exact = int(((top2[:, 0] - top2[:, 1]) == 2 * (m + size - 1)).sum())
    assert abs(float(cert) - float(theirs_cert)) * len(x) <= exact


def test_unsupported_salman2021_estimators_are_refused(monkeypatch):
    estimator = art_smoother(monkeypatch, 3, "column", 16, 4)
    estimator.to_reshape = True  # what ART sets when input_shape differs from the ViT's input size
    with pytest.raises(ValueError, match="resize"):
        fs_art.smoother(estimator)
    estimator.to_reshape, estimator.mode = False, "CNN"  # salman2021 on a CNN: image + ones channel
    with pytest.raises(ValueError, match="salman2021.*CNN"):
        fs_art.smoother(estimator)
