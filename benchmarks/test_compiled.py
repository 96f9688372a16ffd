"""Compiled forwards against eager, end to end (``compile=True``; docs/compiled.md).

Each row times the same smoother call eagerly and compiled, interleaved round by round (shared
cores drift), after one untimed call of each: the compiled role's first call compiles its
graph(s), and that time is recorded apart (``extra_info["compile_seconds"]``), not in the rounds.
The counts of both roles are compared (``extra_info["counts_equal"]``).

- column MNIST: ``ColumnSmoothing(s = 2, theta = 0.3)`` counts of held-out demo digits on the
  demo's CNN (the cached demo / benchmark network if there is one, else one trained briefly
  on the demo digits), batch 1000: 28 ablations per digit, the last forward padded.
- small ViT: ``ViTColumnSmoothing(s = 4)`` on ``cifar_vit`` (32 x 32, 4 x 4 patches, width 96,
  depth 4; random weights: timing does not depend on them) with token dropping, batch 128: one
  graph per kept-token count.
- CIFAR ResNet: ``Smooth(sigma = 0.25)`` sample counts of a CIFAR ResNet-18 (random weights),
  batch 128.
"""
from __future__ import annotations

import pytest
import torch

import fastsmooth
from conftest import quick, run
from fastsmooth.data import demo_mnist
from fastsmooth.demo import RECIPE, THRESHOLD
from fastsmooth.engine.compiled import compile_records, compile_seconds


def _column_network() -> torch.nn.Module:
    from test_adaptive import _column_model  # the demo's network, cached (trains 4 epochs once)

    return _column_model()


def _row(benchmark, group: str, eager_fn, compiled_fn, **info) -> None:
    before = len(compile_records())
    compiled_counts = compiled_fn()  # compiles
    seconds = compile_seconds(before)
    eager_counts = eager_fn()
    equal = bool(torch.equal(eager_counts, compiled_counts))
    run(benchmark, eager_fn, group=group, role="eager", rounds=3, primary=True, warmup=False,
        interleaved={"compiled": compiled_fn})
    benchmark.extra_info.update(compile_seconds=seconds, graphs=len(compile_records()) - before,
                                counts_equal=equal, **info)
    print(f"\n{group}: compile {seconds:.1f} s ({len(compile_records()) - before} graphs), counts equal {equal}, "
          f"eager median {benchmark.stats.stats.median:.3f} s, compiled {benchmark.extra_info['interleaved']}")


def test_column_mnist_demo_cnn(benchmark):
    model = _column_network()
    _, test_set = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    x = test_set.tensors[0][: 200 if quick() else 1000]
    eager = fastsmooth.ColumnSmoothing(model, 10, RECIPE.size, threshold=THRESHOLD, batch_size=1000)
    fast = fastsmooth.ColumnSmoothing(model, 10, RECIPE.size, threshold=THRESHOLD, batch_size=1000, compile=True)
    _row(benchmark, "compiled: column MNIST, demo CNN, batch 1000", lambda: eager.counts(x), lambda: fast.counts(x),
         images=len(x))


def test_small_vit(benchmark):
    try:
        from fastsmooth.models.vit import cifar_vit, import_timm

        import_timm()
    except ImportError as err:
        pytest.skip(f"timm unavailable: {err}")
    torch.manual_seed(0)
    vit = cifar_vit().eval()
    x = torch.rand(100 if quick() else 500, 3, 32, 32)  # enough rows that the padded tails stay small
    eager = fastsmooth.ViTColumnSmoothing(vit, 10, 4, batch_size=128)
    fast = fastsmooth.ViTColumnSmoothing(vit, 10, 4, batch_size=128, compile=True)
    _row(benchmark, "compiled: ViT column s=4, cifar_vit, batch 128", lambda: eager.counts(x), lambda: fast.counts(x),
         images=len(x))


def test_cifar_resnet(benchmark):
    from fastsmooth.models import build

    torch.manual_seed(0)
    model = build("cifar_resnet18", in_channels=3, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    n = 500 if quick() else 10_000
    eager = fastsmooth.Smooth(model, 10, 0.25, batch_size=128)
    fast = fastsmooth.Smooth(model, 10, 0.25, batch_size=128, compile=True)
    _row(benchmark, "compiled: Gaussian CIFAR ResNet-18, batch 128",
         lambda: eager.sample_counts(x, n, seed=0), lambda: fast.sample_counts(x, n, seed=0), samples=n)
