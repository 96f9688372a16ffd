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
- networks alone (no smoother around them): the demo CNN on 1000 ablated digits, and
  ``cifar_vit`` on 128 whole 32 x 32 images (65 tokens; the model-level measurement behind the
  ViT's 2x goal), in inference mode, through ``engine.compiled.forward`` (what ``compile=True``
  runs), the ViT also with bf16 autocast (``autocast=torch.bfloat16``, opt-in reduced
  precision). ``extra_info`` holds the largest logit difference to eager of each role.
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
    run(benchmark, eager_fn, group=group, role="eager", rounds=7, primary=True, warmup=False,
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


def _cifar_vit() -> torch.nn.Module:
    """``cifar_vit`` with seed-0 weights (skips without timm)."""
    try:
        from fastsmooth.models.vit import cifar_vit, import_timm

        import_timm()
    except ImportError as err:
        pytest.skip(f"timm unavailable: {err}")
    torch.manual_seed(0)
    return cifar_vit().eval()


def test_small_vit(benchmark):
    vit = _cifar_vit()
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


def _network_alone(benchmark, group: str, model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> None:
    """``model(x)`` eager against ``engine.compiled.forward`` (what ``compile=True`` runs), and
    with bf16 autocast when ``bf16``, in inference mode, interleaved; the largest logit
    difference to eager of each role goes to extra_info."""
    from fastsmooth.engine.compiled import forward

    def eager():
        with torch.inference_mode():
            return model(x)

    def compiled(autocast=None):
        with torch.inference_mode():
            return forward(model, (x,), None, True, autocast=autocast)

    before = len(compile_records())
    want = eager()
    roles = {"compiled": compiled}
    if bf16:
        roles["compiled bf16"] = lambda: compiled(torch.bfloat16)
    diffs = {name: float((fn().float() - want).abs().max()) for name, fn in roles.items()}
    seconds = compile_seconds(before)
    run(benchmark, eager, group=group, role="eager", rounds=7, primary=True, interleaved=roles,
        compile_seconds=seconds, max_logit_difference=diffs)
    print(f"\n{group}: compile {seconds:.1f} s, max logit differences {diffs}, "
          f"eager median {benchmark.stats.stats.median * 1e3:.1f} ms, others {benchmark.extra_info['interleaved']}")


def test_column_network_alone(benchmark):
    """The demo CNN alone on 1000 ablated digits (2 channels, the layout the smoother feeds it)."""
    model = _column_network()
    _, test_set = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    from fastsmooth.ops.ablation import ablate_bands

    x = ablate_bands(test_set.tensors[0][:36], RECIPE.size)  # every column band of 36 digits: [1008, 2, 28, 28]
    x = x[:1000].contiguous(memory_format=torch.channels_last)
    _network_alone(benchmark, "compiled: demo CNN network alone, 1000 ablations", model, x, bf16=False)


def test_small_vit_network_alone(benchmark):
    _network_alone(benchmark, "compiled: cifar_vit network alone, 128 images (65 tokens)", _cifar_vit(),
                   torch.rand(128, 3, 32, 32), bf16=True)
