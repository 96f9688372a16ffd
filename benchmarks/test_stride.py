"""Strided ablation (Salman et al. 2022): stride 1 against stride 10, and what a stride costs in
certified accuracy.

- ``test_stride_forwards_and_time``: column smoothing (band 2) on held-out demo digits, counts
  of every retained band, stride 1 (28 forwards per digit) against stride 10 (3 per digit),
  timed in the same interleaved rounds, on the demo-size CNN (the demo's trained network) and
  on a small ViT (``mnist_vit``, 4 x 4 patches, token dropping; random weights: timing does not
  depend on them). Forwards per image in ``extra_info``.
- ``test_stride_certified_accuracy``: MNIST CNNs trained once with ordinary band ablation (every
  position, as smoothed-vit's training: its ``--certify-stride`` applies to certification only),
  bands of 2 (the demo's network) and of 7, certified on the 1000 held-out digits at strides 1,
  2, 4, 7 and 10: clean and certified accuracy against m x m patches, and forwards per digit,
  in ``extra_info``.
"""
from __future__ import annotations

import pytest
import torch

import fastsmooth
from conftest import quick, run
from fastsmooth.certificates import certify_counts
from fastsmooth.data import demo_mnist
from fastsmooth.demo import RECIPE, THRESHOLD
from test_adaptive import _column_model, _trained  # the demo CNN (cached, else a short training of its recipe)

IMAGES = 200 if quick() else 1000
PATCHES = (1, 2, 3, 4, 5)


def _digits(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, held_out = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    x, y = held_out.tensors
    return x[:count], y[:count]


def _mnist_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return fastsmooth.models.build("mnist_vit", num_classes=10).eval()


@pytest.mark.parametrize("model", ["demo CNN", "mnist_vit"])
def test_stride_forwards_and_time(benchmark, model):
    x, _ = _digits(IMAGES)
    if model == "demo CNN":
        net = _column_model()

        def make(stride):
            return fastsmooth.ColumnSmoothing(net, 10, RECIPE.size, threshold=THRESHOLD, batch_size=1000, stride=stride)
    else:
        net = _mnist_vit()

        def make(stride):
            return fastsmooth.ViTColumnSmoothing(net, 10, RECIPE.size, batch_size=1000, stride=stride)

    one, ten = make(1), make(10)
    forwards = {s: sm.masks(28, 28, torch.device("cpu")).count for s, sm in ((1, one), (10, ten))}
    run(benchmark, lambda: one.counts(x), group=f"stride, {model}, column band 2, {IMAGES} digits",
        role="stride 1", primary=True, rounds=3, interleaved={"stride 10": lambda: ten.counts(x)}, images=len(x),
        forwards_per_image=forwards)
    print(model, "forwards per image", forwards, benchmark.extra_info.get("interleaved"))


@pytest.mark.parametrize("band", [RECIPE.size, 7])
def test_stride_certified_accuracy(benchmark, band):
    """Band 2: the demo's network; band 7 (a quarter of the width, nearer the paper's ImageNet
    ratio 19 / 224 at stride 10): the MNIST CNN trained the same way with bands of 7 (cached)."""
    x, y = _digits(1000)
    net = _column_model() if band == RECIPE.size else _trained("column", {"size": band, "threshold": THRESHOLD},
                                                               f"column-s{band}", in_channels=2, copies=4)
    results = {}

    def certify_all():
        for stride in (1, 2, 4, 7, 10):
            smoother = fastsmooth.ColumnSmoothing(net, 10, band, threshold=THRESHOLD, batch_size=1000,
                                                  stride=stride)
            counts = smoother.counts(x)
            prediction = counts.argmax(1)
            row = {"forwards_per_image": smoother.masks(28, 28, torch.device("cpu")).count,
                   "clean": float((prediction == y).float().mean())}
            for m in PATCHES:
                predicted, certified = certify_counts(counts, smoother.delta(m, 28, 28))
                row[f"{m}x{m}"] = float(((predicted == y) & certified).float().mean())
            results[stride] = row

    run(benchmark, certify_all, group=f"stride, MNIST CNN band {band} certified accuracy, 1000 digits",
        role="strides 1 2 4 7 10",
        primary=True, rounds=1, warmup=False)
    benchmark.extra_info["results"] = results
    for stride, row in results.items():
        print("band", band, "stride", stride, {k: round(v, 3) for k, v in row.items()})
