"""Smoothed vision transformers: token dropping against the same ViT on every token and against
ART 1.20.1's salman2021 path, and a ViT trained on the demo digits beside the demo's CNN.

Roles of the timing rows, interleaved round by round on the same weights and images:
1. ``fastsmooth drop``: ``ViTColumnSmoothing`` / ``ViTBlockSmoothing`` counts, kept tokens only,
   built from ART's estimator by ``fastsmooth.integrations.art.smoother`` (its own ViT weights);
2. ``floor all tokens``: the same smoother and ViT without dropping (every token of every
   ablation: the forward cost a non-dropping engine cannot go below);
3. ``ART salman2021``: ``PyTorchDeRandomizedSmoothing(algorithm="salman2021", drop_tokens=True)
   .eval_and_certify`` (one position at a time over the batch of images, as ART runs).
Every role computes the same votes (tests/test_vit_art.py checks that the counts are equal).
``test_cifar_vit_multi_block`` has the first two roles only (ART has no multi-block ViT path).
Base networks have random weights (timing does not depend on them).

``test_mnist_vit_beside_demo_cnn``: trained networks on real digits, the ViT of
``fastsmooth.demo_vit`` and the demo's CNN, column smoothing s = 2, timed on the same held-out
digits (interleaved), with their clean and certified accuracies.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

try:
    from fastsmooth.models.vit import import_timm

    timm = import_timm()
except ImportError as err:
    pytest.skip(f"timm unavailable: {err}", allow_module_level=True)
pytest.importorskip("art")

import fastsmooth  # noqa: E402
from conftest import run  # noqa: E402
from fastsmooth import methods  # noqa: E402
from fastsmooth.certificates import certify_counts  # noqa: E402
from fastsmooth.data import demo_mnist  # noqa: E402
from fastsmooth.demo import RECIPE, THRESHOLD  # noqa: E402
from fastsmooth.demo_vit import trained_vit  # noqa: E402


def _art(monkeypatch, arch, size, kind, image, patch, **shrink):
    """ART's estimator on ``arch`` built at ``image`` x ``image`` (see tests/test_vit_art.py)."""
    from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing

    create = timm.create_model

    def sized(name, **kwargs):
        kwargs.update(shrink, img_size=image, patch_size=patch, num_classes=10,
                      pretrained_cfg_overlay=dict(input_size=(3, image, image), num_classes=10))
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", sized)
    try:
        return PyTorchDeRandomizedSmoothing(
            model=arch, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, image, image), nb_classes=10,
            ablation_size=size, algorithm="salman2021", ablation_type=kind, replace_last_layer=False,
            drop_tokens=True, load_pretrained=False, device_type="cpu", verbose=False,
        )
    finally:
        monkeypatch.setattr(timm, "create_model", create)


def _roles(monkeypatch, arch, kind, size, image, patch, batch, **shrink):
    """The three roles on one ART estimator: fastsmooth's smoother through the ART adapter (the
    estimator's own ViT, token dropping), the same smoother on every token, and ART itself."""
    from fastsmooth.integrations import art as fs_art

    estimator = _art(monkeypatch, arch, size, kind, image, patch, **shrink)
    drop = fs_art.smoother(estimator, batch_size=batch)
    assert isinstance(drop, fastsmooth.ViTColumnSmoothing if kind == "column" else fastsmooth.ViTBlockSmoothing)
    every = type(drop)(drop.model, 10, size, batch_size=batch, normalize="before", drop_tokens=False)

    def art(x):
        return estimator.eval_and_certify(x.numpy(), np.zeros(len(x), dtype=np.int64), size_to_certify=1,
                                          batch_size=len(x), verbose=False)

    return drop, every, art


VITS = os.environ.get("FASTSMOOTH_BENCH_VIT_S", "1") == "1"


@pytest.mark.parametrize("images", [1, 16])
def test_vit_s16_column(benchmark, monkeypatch, images):
    """ViT-S/16 at 224 x 224, column smoothing s = 19 (224 ablations per image, 28 or 42 tokens kept)."""
    if not VITS:
        pytest.skip("FASTSMOOTH_BENCH_VIT_S=0")
    drop, every, art = _roles(monkeypatch, "vit_small_patch16_224", "column", 19, 224, 16, batch=224)
    x = torch.rand(images, 3, 224, 224)
    others = {"ART salman2021": lambda: art(x)}
    if images == 1:  # the floor at 16 images would take minutes per round on a CPU
        others["floor all tokens"] = lambda: every.counts(x)
    run(benchmark, lambda: drop.counts(x), group=f"ViT-S/16 column s=19, 224x224, {images} image(s)",
        role="fastsmooth drop", primary=True, rounds=3 if images == 1 else 1, warmup=images == 1,
        interleaved=others, images=images)


def test_cifar_vit_block(benchmark, monkeypatch):
    """Block smoothing s = 4 on 32 x 32 with 4 x 4 patches (1024 ablations per image, 1-4 tokens kept)."""
    shrink = dict(embed_dim=192, depth=12, num_heads=3)  # ViT-Ti's width and depth, CIFAR geometry
    drop, every, art = _roles(monkeypatch, "vit_tiny_patch16_224", "block", 4, 32, 4, batch=1024, **shrink)
    x = torch.rand(2, 3, 32, 32)
    run(benchmark, lambda: drop.counts(x), group="ViT-Ti/4 block s=4, 32x32, 2 images", role="fastsmooth drop",
        primary=True, rounds=3, interleaved={"floor all tokens": lambda: every.counts(x), "ART salman2021": lambda: art(x)})


def test_cifar_vit_multi_block(benchmark):
    """Multi-block smoothing (fastsmooth's extension; no ART counterpart): every pair of the 16
    aligned 8 x 8 tiles of a 32 x 32 image, 4 x 4 patches (120 ablations keeping 8 of 64 tokens),
    token dropping against the same ViT on every token."""
    from fastsmooth.models.vit import build_vit

    torch.manual_seed(0)
    vit = build_vit("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, drop_tokens=True).eval()
    drop = fastsmooth.ViTMultiBlockSmoothing(vit, 10, 8, 2, batch_size=120)
    every = fastsmooth.ViTMultiBlockSmoothing(vit, 10, 8, 2, batch_size=120, drop_tokens=False)
    x = torch.rand(4, 3, 32, 32)
    run(benchmark, lambda: drop.counts(x), group="ViT-Ti/4 multi-block s=8 keep 2, 32x32, 4 images",
        role="fastsmooth drop", primary=True, rounds=3, interleaved={"floor all tokens": lambda: every.counts(x)})


PATCHES = tuple(range(1, 8))


def _accuracy(smoother, counts: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Clean accuracy and certified accuracy against m x m patches, m = 1 .. 7, from the counts."""
    prediction = counts.argmax(1)  # smallest index on ties (semantics.md §1)
    out = {"clean": float((prediction == labels).float().mean())}
    for m in PATCHES:
        predicted, certified = certify_counts(counts, smoother.delta(m, 28, 28))
        out[f"{m}x{m}"] = float(((predicted == labels) & certified).float().mean())
    return out


def test_mnist_vit_beside_demo_cnn(benchmark):
    """The ViT trained on the demo digits (``fastsmooth.demo_vit``, trained here and cached when
    absent: minutes) beside the demo's CNN (``fastsmooth demo``'s cached network, else a shorter
    training of its recipe), column smoothing s = 2 on the same 1000 held-out digits: the time
    to count every band of every digit, and clean / certified accuracy in ``extra_info``."""
    from test_adaptive import _column_model  # the demo CNN, loaded as the adaptive rows load it

    vit, path, hp = trained_vit(progress=False)
    vit_smoother = methods.for_vit(methods.get("column"), vit).build(vit, 10, hp, 1000)
    cnn_smoother = fastsmooth.ColumnSmoothing(_column_model(), 10, RECIPE.size, threshold=THRESHOLD, batch_size=1000)
    _, held_out = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    x, y = held_out.tensors
    counts = {}

    def role(name, smoother):
        def count():
            counts[name] = smoother.counts(x)
        return count

    run(benchmark, role("vit", vit_smoother), group="demo digits, column s=2, 1000 held-out digits",
        role="mnist_vit, token dropping (top-1)", primary=True, rounds=3,
        interleaved={"demo CNN (theta 0.3)": role("cnn", cnn_smoother)}, images=len(x))
    results = {"mnist_vit": _accuracy(vit_smoother, counts["vit"], y), "demo CNN": _accuracy(cnn_smoother, counts["cnn"], y)}
    training = torch.load(path, map_location="cpu", weights_only=True)["training"]
    benchmark.extra_info.update(results=results, vit_training_seconds=training["seconds"],
                                vit_final_loss=training["losses"][-1], vit_checkpoint=str(path))
    print(results, f"ViT trained in {training['seconds']:.0f} s")
