"""Roofline of a certification on an H200: what the engine's kernels must cost at best, beside
what the base network must cost, per benchmark row at the papers' sizes. Computed, not measured.

    python benchmarks/roofline.py            # prints the Markdown table (the README's)
    python benchmarks/roofline.py --measure  # on a GPU: adds measured figures (gpu_check)

Per image of each row:

- ``created bytes``: bytes the batch-creation kernels write (float32 outputs: every ablated,
  split or noised input of the image), and their time at HBM bandwidth (4.8 TB/s, H200). These
  kernels read each input element once per chunk and write every output once, so writes are
  their traffic; a kernel at the roofline takes this time.
- ``multiply-adds``: the base network's multiply-adds per image (all forwards of the image),
  counted with forward hooks on the real model definitions in fastsmooth.models (Conv2d and
  Linear; BatchNorm, activations and pooling are left out), and their time at
  ``MATMUL_FRACTION`` of the H200's dense bf16 peak.
- ``engine share``: creation time / (creation + network time), the part of a certification's
  GPU time the engine's kernels would take if both ran at these rates.
- the papers' GPU-seconds per image on a 2080 Ti (Levine & Feizi, Table 9; DSSN paper, Figure 6
  and its appendix; Cohen et al.) for comparison.

``gpu_check(device)`` measures, on a GPU, each row's creation kernels per image and the
network's forward time per image at the row's batch (bf16 autocast), and returns rows with
both the computed and the measured figures (``make gpu-check`` prints them).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable

import torch
from torch import nn

HBM_BYTES_PER_S = 4.8e12  # H200 HBM3e
BF16_DENSE_FLOPS = 989e12  # H200 (= H100 SXM) dense bf16 tensor-core peak
MATMUL_FRACTION = 0.4  # the fraction of that peak assumed for these small-image networks
OUTPUT_BYTES = 4  # float32 batches, as the papers' code builds them


@dataclasses.dataclass(frozen=True)
class RooflineRow:
    name: str
    model: str  # fastsmooth.models registry name
    model_kwargs: dict
    input_shape: tuple[int, int, int]  # one base-network input (C, H, W)
    forwards: int  # base-network inputs per image
    batch: int  # forward batch size (for gpu_check)
    create: Callable[[torch.Tensor, int], torch.Tensor]  # (image [1, c, H, W], count) -> batch of `count` inputs
    image_shape: tuple[int, int, int]  # the image before encoding
    paper_s: float | None  # papers' GPU-seconds per image (2080 Ti)
    paper_note: str = ""  # where paper_s comes from, when not a direct per-image figure


def _patch(kind: str, size: int):
    from fastsmooth import ops

    def create(x: torch.Tensor, count: int) -> torch.Tensor:
        if kind == "column":
            return ops.ablate_bands(x, size, positions=range(count))
        return ops.ablate_blocks(x, size, positions=range(count))

    return create


def _dssn(sigma: float):
    from fastsmooth import ops

    def create(x: torch.Tensor, count: int) -> torch.Tensor:
        return ops.dssn_split(x, sigma=sigma, offsets=range(count))

    return create


def _l0(keep: int):
    from fastsmooth import ops

    return lambda x, count: ops.ablate_pixels(x, keep=keep, n=count, seed=0)


def _gaussian(sigma: float):
    from fastsmooth import ops

    return lambda x, count: ops.gaussian_noise(x, sigma, count, seed=0)


def _uniform(sigma: float):
    from fastsmooth import ops

    return lambda x, count: ops.uniform_noise(x, lam=sigma * math.sqrt(3), n=count, seed=0)


def _levels(sigma: float) -> int:
    return int(2 * sigma * math.sqrt(3) * 255)


def rows() -> list[RooflineRow]:
    """The benchmark rows at the papers' sizes (benchmarks/test_paper_tables.py with
    FASTSMOOTH_BENCH_PAPER=1, and the papers' DSSN sigmas)."""
    six = dict(in_channels=6)
    out = [
        RooflineRow("column, MNIST (s=2)", "mnist_cnn", {}, (2, 28, 28), 28, 100, _patch("column", 2), (1, 28, 28), 0.00132),
        RooflineRow("block, MNIST (s=10)", "mnist_cnn", {}, (2, 28, 28), 784, 784, _patch("block", 10), (1, 28, 28), 0.00962),
        RooflineRow("column, CIFAR-10 (s=4)", "cifar_resnet18", {}, (6, 32, 32), 32, 100, _patch("column", 4), (3, 32, 32), 0.00616),
        RooflineRow("block, CIFAR-10 (s=12)", "cifar_resnet18", {}, (6, 32, 32), 1024, 1024, _patch("block", 12), (3, 32, 32), 0.170),
        RooflineRow("column, ImageNet (s=25)", "imagenet_resnet50_6ch", six, (6, 299, 299), 299, 100, _patch("column", 25),
                    (3, 299, 299), 2.49),
    ]
    for sigma, paper in ((0.15, 0.022), (0.5, 0.060), (1.0, 0.118), (2.0, 0.235), (3.5, 0.41)):
        L = _levels(sigma)
        out.append(RooflineRow(f"DSSN, CIFAR-10 (sigma={sigma}, L={L})", "wrn40_2", {}, (3, 32, 32), L, min(L, 1024),
                               _dssn(sigma), (3, 32, 32), paper))
    out += [
        RooflineRow("l0, MNIST (k=45, n0=1000, n=10000)", "mnist_cnn", {}, (2, 28, 28), 11000, 1000, _l0(45), (1, 28, 28), None),
        RooflineRow("l0, CIFAR-10 (k=75, n0=1000, n=10000)", "cifar_resnet18", {}, (6, 32, 32), 11000, 1000, _l0(75),
                    (3, 32, 32), None),
        RooflineRow("Gaussian, CIFAR-10 ResNet-110 (n0=100, n=100000)", "cohen_cifar_resnet110", {}, (3, 32, 32), 100100, 1000,
                    _gaussian(0.25), (3, 32, 32), None),
        RooflineRow("Gaussian, ImageNet ResNet-50 (n0=100, n=100000)", "cohen_imagenet_resnet50", {}, (3, 224, 224), 100100, 400,
                    _gaussian(0.25), (3, 224, 224), 150.0,
                    "Cohen et al. report 15 s for PREDICT with n = 10,000 on ImageNet (hardware unnamed); x10 for n = 100,000"),
        RooflineRow("uniform / SSN, CIFAR-10 WRN-40-2 (n0=64, n=100000)", "wrn40_2", {}, (3, 32, 32), 100064, 1000,
                    _uniform(0.5), (3, 32, 32), 13.44, "Yang et al.'s uniform noise at sigma = 3.5 (DSSN paper, 2080 Ti)"),
    ]
    return out


def multiply_adds(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward of one input: forward hooks on every Conv2d and Linear."""
    total = 0

    def conv(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return total


def computed(row: RooflineRow, macs_per_forward: int) -> dict:
    created = row.forwards * math.prod(row.input_shape) * OUTPUT_BYTES
    t_create = created / HBM_BYTES_PER_S
    macs = row.forwards * macs_per_forward
    t_model = 2 * macs / (BF16_DENSE_FLOPS * MATMUL_FRACTION)
    return dict(
        row=row.name, forwards=row.forwards, created_bytes=created, create_s=t_create, macs=macs, model_s=t_model,
        engine_share=t_create / (t_create + t_model), paper_s=row.paper_s, paper_note=row.paper_note,
    )


def table(only: list[str] | None = None) -> list[dict]:
    """The computed figures of every row (or of the rows whose names contain one of ``only``)."""
    from fastsmooth.models import build

    out, macs_cache = [], {}
    for row in rows():
        if only and not any(o in row.name for o in only):
            continue
        key = (row.model, row.input_shape)
        if key not in macs_cache:
            macs_cache[key] = multiply_adds(build(row.model, **row.model_kwargs), row.input_shape)
        out.append(computed(row, macs_cache[key]))
    return out


def _si(v: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _seconds(v: float | None) -> str:
    if v is None:
        return "-"
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us")):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v / 1e-9:.3g} ns"


def markdown(figures: list[dict]) -> str:
    measured = any("measured_create_s" in f for f in figures)
    head = ["benchmark row (per image)", "forwards", "created bytes", "at 4.8 TB/s", "multiply-adds",
            f"at {MATMUL_FRACTION:.0%} of bf16 peak", "engine share", "paper, 2080 Ti"]
    if measured:
        head += ["measured creation", "measured network (bf16)", "measured share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for f in figures:
        paper = _seconds(f["paper_s"])
        if f["paper_note"]:
            notes.append(f["paper_note"])
            paper += f" ({chr(ord('a') + len(notes) - 1)})"
        cells = [f["row"], str(f["forwards"]), _si(f["created_bytes"], "B"), _seconds(f["create_s"]),
                 _si(f["macs"], ""), _seconds(f["model_s"]), f"{f['engine_share']:.1%}", paper]
        if measured:
            mc, mm = f.get("measured_create_s"), f.get("measured_model_s")
            cells += [_seconds(mc), _seconds(mm), f"{mc / (mc + mm):.1%}" if mc and mm else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"({chr(ord('a') + i)}) {note}" for i, note in enumerate(notes)] if notes else []
    return "\n".join(lines)


def _time_per_image(fn: Callable[[], object], total: int, per_call: int, device: torch.device, reps: int = 3) -> float:
    """Median over ``reps`` of the time of ``ceil(total / per_call)`` calls, scaled to ``total``
    items: the time per image of work done in calls of ``per_call`` items."""
    calls = max(1, min(math.ceil(total / per_call), 50))  # time at most 50 calls, then scale
    fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * total / (calls * per_call))
    return sorted(times)[len(times) // 2]


def gpu_check(device: str | torch.device = "cuda", only: list[str] | None = None) -> list[dict]:
    """Computed figures with measured ones beside them, on a GPU: per row, the creation kernels'
    time per image (calls of ``row.batch`` inputs, float32) and the base network's forward time
    per image at ``row.batch`` under bf16 autocast (random weights and inputs)."""
    from fastsmooth.models import build

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"gpu_check needs a CUDA device, got {device} (torch.cuda.is_available()="
                           f"{torch.cuda.is_available()})")
    figures = table(only)
    by_name = {r.name: r for r in rows()}
    for f in figures:
        row = by_name[f["row"]]
        x = torch.rand(1, *row.image_shape, device=device)
        per_call = min(row.batch, row.forwards)
        f["measured_create_s"] = _time_per_image(lambda: row.create(x, per_call), row.forwards, per_call, device)
        model = build(row.model, **row.model_kwargs).to(device).eval()
        inputs = torch.rand(per_call, *row.input_shape, device=device)

        def forward():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(inputs)

        f["measured_model_s"] = _time_per_image(forward, row.forwards, per_call, device)
        del model, inputs
        torch.cuda.empty_cache()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="add measured figures (needs a CUDA GPU)")
    parser.add_argument("--only", nargs="*", help="rows whose names contain one of these")
    args = parser.parse_args(argv)
    figures = gpu_check("cuda", args.only) if args.measure else table(args.only)
    print(markdown(figures))


if __name__ == "__main__":
    main()
