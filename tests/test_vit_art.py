"""Smoothed ViTs side by side with ART 1.20.1's salman2021 path: on the same timm weights (random
initialization) and images, fastsmooth's vote counts equal ART's for column, row and block ablation,
with token dropping, normalized or not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import timm_or_skip  # noqa: E402

timm = timm_or_skip()
pytest.importorskip("art")
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing  # noqa: E402

import fastsmooth  # noqa: E402
from fastsmooth.models.vit import build_vit  # noqa: E402

ARCH = "vit_tiny_patch16_224"  # one of ART's supported names; shrunk below
SMALL = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)


def art_smoother(monkeypatch, size, ablation_type, image, patch, mean=None, std=None):
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
        drop_tokens=True, load_pretrained=False, device_type="cpu", verbose=False, preprocessing=preprocessing,
    )
    monkeypatch.setattr(timm, "create_model", create)
    return estimator


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


def same_weights(estimator, image, patch):
    mine = build_vit(ARCH, num_classes=10, img_size=image, patch_size=patch, drop_tokens=True, **SMALL)
    mine.vit.load_state_dict(estimator.model.state_dict())
    return mine.eval()


def images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


@pytest.mark.parametrize("kind,size", [("column", 3), ("row", 5)])
def test_band_counts_equal_art(monkeypatch, kind, size):
    image, patch = 16, 4
    estimator = art_smoother(monkeypatch, size, kind, image, patch)
    model = same_weights(estimator, image, patch)
    x = images(20, image, seed=1)
    cls = fastsmooth.ViTColumnSmoothing if kind == "column" else fastsmooth.ViTRowSmoothing
    ours = cls(model, 10, size, batch_size=256, normalize="before").counts(x)
    assert np.array_equal(ours.numpy(), art_counts(estimator, x, 2))


def test_normalized_column_counts_equal_art(monkeypatch):
    """ART normalizes before ablating (its preprocessing), so ablated pixels are 0: normalize="before"."""
    image, patch = 16, 4
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    estimator = art_smoother(monkeypatch, 6, "column", image, patch, mean, std)
    model = same_weights(estimator, image, patch)
    x = images(8, image, seed=2)
    ours = fastsmooth.ViTColumnSmoothing(model, 10, 6, mean=mean, std=std, normalize="before").counts(x)
    assert np.array_equal(ours.numpy(), art_counts(estimator, x, 2))
    other = fastsmooth.ViTColumnSmoothing(model, 10, 6, mean=mean, std=std, normalize="after").counts(x)
    assert not np.array_equal(other.numpy(), ours.numpy())  # the fill value matters to the model


def test_block_counts_equal_art(monkeypatch):
    image, patch = 12, 4
    estimator = art_smoother(monkeypatch, 3, "block", image, patch)
    model = same_weights(estimator, image, patch)
    x = images(20, image, seed=3)
    ours = fastsmooth.ViTBlockSmoothing(model, 10, 3, batch_size=500, normalize="before").counts(x)
    assert np.array_equal(ours.numpy(), art_counts(estimator, x, 1))
