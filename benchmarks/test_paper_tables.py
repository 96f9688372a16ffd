"""The evaluation-time tables of the papers, one benchmark group per row.

Every row measures, in the same run, at the same forward batch size and interleaved round by
round:
1. ``fastsmooth``: the smoother's certify of a batch of images (end to end);
2. ``naive``: the same certification written like the papers' code (benchmarks/naive_*.py);
3. ``floor``: the base network's forward pass alone over the same number of pre-built inputs,
   in the memory layout fastsmooth feeds it (channels-last on the CPU: see
   fastsmooth.smoothing.base.auto_memory_format), so that the floor is the network's own cost
   in that layout and the ratio is what the engine adds;
4. on the short patch rows, ``fastsmooth, batch auto``: fastsmooth with its default batch size
   (its one-off timing runs before the timed rounds), and on the MNIST column row also
   ``fastsmooth, batch 1000``, the earlier default.

The patch smoothing rows run their roles in lockstep on the CPU, taking turns at every forward
pass (benchmarks/lockstep.py): on a shared VM, whole-call rounds move by 5% (calls of a second)
to 30% (block smoothing on CIFAR-10: 1024 forwards at batch 1, 15-20 s per call), more than
the engine's share. The other rows interleave whole calls: their engines do more work between
forwards (noise or subsets for batches of 100), which lockstep would run on one thread.

Defaults are sized for a small CPU (a few images, reduced sample counts, the DSSN / uniform
rows on WRN-16-2 instead of WRN-40-2); FASTSMOOTH_BENCH_PAPER=1 selects the papers' sizes and
networks for a GPU machine. The ImageNet column row (ResNet-50 at 299 x 299, 299 forwards
per image) takes minutes on a CPU: it runs by default only on a GPU, or with
FASTSMOOTH_BENCH_IMAGENET=1. Base networks have random weights (timing does not depend on them).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest
import torch

import fastsmooth
from conftest import quick, run, sync
from lockstep import Lockstep
from naive_patch import naive_block_certify, naive_column_certify
from naive_randomized import naive_dssn_certify, naive_l0_certify, naive_uniform_certify
from cohen_naive import NaiveSmooth
from fastsmooth.engine import autobatch
from fastsmooth.models import WideResNet, build
from fastsmooth.smoothing.base import auto_memory_format

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PAPER = not quick()
IMAGENET = DEVICE.type == "cuda" or os.environ.get("FASTSMOOTH_BENCH_IMAGENET") == "1"
THETA = 0.3


@dataclasses.dataclass(frozen=True)
class Row:
    method: str
    data: str
    net: Callable[[], torch.nn.Module]
    net_name: str
    shape: tuple[int, int, int]  # of one image
    images: int
    batch: int  # forward batch size, the same for all three roles
    forwards_per_image: int  # number of base-model inputs per image
    in_channels: int
    fastsmooth: Callable  # (model, x) -> result
    naive: Callable  # (model, x) -> result
    rounds: int = 3
    warmup: bool = True  # one untimed call of each role first (off for rows of minutes)
    # On the CPU, roles take turns at every forward pass (benchmarks/lockstep.py): for rows
    # whose whole-call rounds cannot resolve a few percent on this machine.
    lockstep: bool = False
    # more fastsmooth roles: fastsmooth(batch_size)(model, x) for each of these batch sizes
    # ("auto": the default, chosen by timing the network once, before the timed rounds)
    batches: tuple = ()
    other_batch: Callable | None = None


def _wrn() -> torch.nn.Module:
    return build("wrn40_2") if PAPER else WideResNet(depth=16, widen_factor=2)


WRN = "WRN-40-2" if PAPER else "WRN-16-2"
L0_N0, L0_N = (1000, 10000) if PAPER else (100, 1000)
RS_N0, RS_N = (100, 100000) if PAPER else (100, 1000)
UNI_N0, UNI_N = (64, 100000) if PAPER else (64, 1000)


def _patch_row(method, data, net, net_name, shape, images, batch, size, m, rounds=3, warmup=True, lockstep=True,
               batches=("auto",)):
    H, W = shape[1], shape[2]
    column = method == "column"
    smoother_cls = fastsmooth.ColumnSmoothing if column else fastsmooth.BlockSmoothing
    naive = naive_column_certify if column else naive_block_certify
    classes = 10 if data != "ImageNet" else 1000

    def certify(batch_size):
        return lambda model, x: smoother_cls(model, classes, size, threshold=THETA, batch_size=batch_size).certify(x, m)

    return Row(
        f"{method} smoothing (s={size}, {m}x{m} patch)", data, net, net_name, shape, images, batch,
        W if column else H * W, 2 * shape[0],
        certify(batch),
        lambda model, x: naive(model, x, size, m, classes, THETA),
        rounds,
        warmup,
        lockstep,
        batches,
        certify,
    )


def _dssn_row(sigma, batch):
    levels = fastsmooth.ops.dssn_levels(sigma=sigma)[1]

    def quantized(x):
        return (x * 255).round() / 255

    return Row(
        f"DSSN (sigma={sigma}, L={levels})", "CIFAR-10", _wrn, WRN, (3, 32, 32), 1, batch, levels, 3,
        lambda model, x: fastsmooth.DSSN(model, 10, sigma=sigma, batch_size=batch).certify(quantized(x)),
        lambda model, x: naive_dssn_certify(model, quantized(x), sigma, 10, batch),
        rounds=1 if sigma > 1 else 3,
    )


ROWS = [
    # the MNIST column row also runs the earlier default, batch_size=1000 (1.5x slower than 100 there)
    _patch_row("column", "MNIST", lambda: build("mnist_cnn"), "MNIST CNN", (1, 28, 28), 56, 56, 2, 5, rounds=8,
               batches=("auto", 1000)),
    _patch_row("block", "MNIST", lambda: build("mnist_cnn"), "MNIST CNN", (1, 28, 28), 16 if not PAPER else 100, 16 if not PAPER else 100, 10, 5, rounds=4),
    _patch_row("column", "CIFAR-10", lambda: build("cifar_resnet18"), "ResNet-18", (3, 32, 32), 4 if not PAPER else 100, 4 if not PAPER else 100, 4, 5, rounds=6),
    # (no "auto" role on the rows of minutes: timing the sizes up to 1024 would take minutes there)
    _patch_row("block", "CIFAR-10", lambda: build("cifar_resnet18"), "ResNet-18", (3, 32, 32), 1 if not PAPER else 16, 1 if not PAPER else 16, 12, 5, rounds=4, warmup=False, batches=()),
    _patch_row("column", "ImageNet", lambda: build("imagenet_resnet50_6ch"), "ResNet-50", (3, 299, 299), 1, 1, 25, 42, rounds=1, batches=()),
    _dssn_row(0.25, 110),
    _dssn_row(1.0, 128),
    _dssn_row(3.5, 128),
    Row(f"l0 ablation (k=45, n0={L0_N0}, n={L0_N})", "MNIST", lambda: build("mnist_cnn"), "MNIST CNN", (1, 28, 28), 1,
        100, L0_N0 + L0_N, 2,
        lambda model, x: fastsmooth.RandomizedAblation(model, 10, 45, batch_size=100).certify(x, L0_N0, L0_N, 0.05),
        lambda model, x: naive_l0_certify(model, x, 45, L0_N0, L0_N, 0.05, 100, 10)),
    Row(f"l0 ablation (k=75, n0={L0_N0}, n={L0_N})", "CIFAR-10", lambda: build("cifar_resnet18"), "ResNet-18", (3, 32, 32), 1,
        100, L0_N0 + L0_N, 6,
        lambda model, x: fastsmooth.RandomizedAblation(model, 10, 75, batch_size=100).certify(x, L0_N0, L0_N, 0.05),
        lambda model, x: naive_l0_certify(model, x, 75, L0_N0, L0_N, 0.05, 100, 10), rounds=3),
    Row(f"Gaussian (sigma=0.25, n0={RS_N0}, n={RS_N})", "CIFAR-10", lambda: build("cohen_cifar_resnet110"), "ResNet-110",
        (3, 32, 32), 1, 100, RS_N0 + RS_N, 3,
        lambda model, x: fastsmooth.Smooth(model, 10, 0.25).certify(x[0], RS_N0, RS_N, 0.001, 100),
        lambda model, x: NaiveSmooth(model, 10, 0.25).certify(x[0], RS_N0, RS_N, 0.001, 100), rounds=1),
    Row(f"uniform (sigma=0.5, n0={UNI_N0}, n={UNI_N})", "CIFAR-10", _wrn, WRN, (3, 32, 32), 1, 100, UNI_N0 + UNI_N, 3,
        lambda model, x: fastsmooth.UniformSmoothing(model, 10, sigma=0.5, batch_size=100).certify(x, UNI_N0, UNI_N, 0.001),
        lambda model, x: naive_uniform_certify(model, x, 0.5, UNI_N0, UNI_N, 0.001, 100, 10), rounds=1),
]



def floor(model: torch.nn.Module, inputs: torch.Tensor, total: int) -> None:
    """The base network alone: ``total`` forwards in batches of len(inputs), pre-built inputs."""
    with torch.inference_mode():
        for start in range(0, total, len(inputs)):
            model(inputs[: min(len(inputs), total - start)])
    sync()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method}, {r.data}")
def test_paper_row(benchmark, row: Row):
    if row.data == "ImageNet" and not IMAGENET:
        pytest.skip("ImageNet at 299 x 299 takes minutes per role on a CPU: set FASTSMOOTH_BENCH_IMAGENET=1")
    torch.manual_seed(0)
    network = row.net().to(DEVICE).eval()
    stepper = Lockstep(network, sync) if row.lockstep and DEVICE.type == "cpu" else None
    model = stepper.model if stepper else network  # what every role calls
    x = torch.rand(row.images, *row.shape, device=DEVICE)
    inputs = torch.rand(row.batch, row.in_channels, *row.shape[1:], device=DEVICE)
    # (the probe of "auto" runs here, outside the timed rounds)
    inputs = inputs.contiguous(memory_format=auto_memory_format(model, DEVICE, inputs.shape[1:], inputs.dtype))
    info = dict(images=row.images, batch=row.batch, forwards=row.images * row.forwards_per_image, device=str(DEVICE),
                layout="channels-last" if not inputs.is_contiguous() else "NCHW")
    # The three roles run in turn within every round, in palindromic order (naive, floor,
    # fastsmooth | fastsmooth, floor, naive | ...), so a drift of the machine's speed affects
    # them alike; in lockstep rows they take turns at every forward pass instead.
    others = {
        "naive": lambda: (row.naive(model, x), sync()),
        "floor": lambda: floor(model, inputs, row.images * row.forwards_per_image),
    }
    for batch in row.batches:
        certify = row.other_batch(batch)
        if batch == "auto":  # the timing of "auto" runs here, once, outside the timed rounds
            certify(model, x)
            info["auto_per_row_ms"] = {n: t * 1e3 for timings in autobatch._chosen[model].values()
                                       for n, t in sorted(timings.per_row.items())}
            print(row.method, row.data, "batch_size='auto' timings (ms per row):", info["auto_per_row_ms"])
        others[f"fastsmooth, batch {batch}"] = lambda certify=certify: (certify(model, x), sync())
    run(benchmark, lambda: (row.fastsmooth(model, x), sync()), group=f"{row.method}, {row.data}, {row.net_name}",
        role="fastsmooth", rounds=row.rounds, primary=True, warmup=row.warmup and row.rounds > 1,
        interleaved=others, lockstep=stepper, **info)
