"""``fastsmooth certify``: certify a data set with a trained base model, in this process, on Ray
workers, or as one shard of a job array."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from fastsmooth import methods as _methods
from fastsmooth.cli._args import (
    DTYPES,
    CliError,
    batch_size,
    build_model,
    check_output,
    data_args,
    device,
    first_shape,
    format_summary,
    given_hyper,
    hyper_args,
    load_data,
    method_help,
    probe,
    sampling_seed,
    shard,
    warn,
)

#: the value of a bare ``--ray``: start a local Ray instance
LOCAL_RAY = "local"


def add_parser(sub: Any) -> None:
    certify = sub.add_parser("certify", help="certify a data set with a trained base model")
    certify.add_argument("--method", "-m", help=method_help() + " (default: recorded in the checkpoint)")
    certify.add_argument("--checkpoint", "-c", required=True,
                         help="fastsmooth checkpoint, or the authors' formats (state dict, {'net': ...}, {'state_dict': ...})")
    certify.add_argument("--arch", help="base network (default: recorded in the checkpoint)")
    certify.add_argument("--allow-pickle", action="store_true", help="load a trusted checkpoint that needs full unpickling")
    certify.add_argument("--override", action="store_true", help="certify with flags that contradict the checkpoint")
    hyper_args(certify)
    data_args(certify)
    certify.add_argument("--skip", type=int, default=1, help="certify every skip-th image (default 1)")
    certify.add_argument("--max", type=int, help="certify images with index < max")
    certify.add_argument("--output", "-o", help="per-image TSV (idx label predict certificate correct time)")
    certify.add_argument("--no-resume", action="store_true", help="overwrite --output instead of resuming it")
    certify.add_argument("--batch-size", type=batch_size, default="auto",
                         help="most samples per forward pass, or 'auto' (default): the fastest per sample among "
                              "a few sizes up to 1024, timed on the first images (smoothed ViTs: 1000)")
    certify.add_argument("--batch-images", type=int, default=64, help="images per certification batch (default 64)")
    certify.add_argument("--dtype", choices=list(DTYPES), default="float32",
                         help="base model precision; bfloat16 / float16 run it under autocast")
    certify.add_argument("--levels", type=float, nargs="+", help="certificate levels of the summary table")
    certify.add_argument("--decide", action="store_true",
                         help="level mode: decide only certified-or-not at each --levels and the prediction, with as "
                              "few forwards as each image needs (TSV: per-level answers and forwards used)")
    scale = certify.add_argument_group("scaling out (see the docs: a multi-GPU machine, a Ray cluster, a job array)")
    scale.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                       help="certify on Ray workers: alone, a local Ray instance on this machine's devices; 'auto' "
                            "joins the cluster `ray start` runs here; ray://HOST:10001 a remote one (needs the ray "
                            "extra: pip install 'fastsmooth[ray]')")
    scale.add_argument("--workers", type=int, help="Ray workers (default: one per GPU of the cluster, else one per CPU)")
    scale.add_argument("--gpus-per-worker", type=float,
                       help="GPUs per Ray worker (default 1 on a cluster with GPUs; 0: CPU workers)")
    scale.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (torch threads) per Ray worker (default 1)")
    scale.add_argument("--shard", metavar="K/N", type=shard,
                       help="certify only part K of N of the selected images (job arrays); join the parts' files "
                            "with `fastsmooth merge`")
    certify.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastsmooth import evaluate, models
    from fastsmooth.data import CastImages
    from fastsmooth.results import sha256_file
    from fastsmooth.training import checkpoint_metadata

    executor = _executor(args)  # first: a missing ray package is reported before anything is loaded
    check_output(args.output, "--output")
    dataset = load_data(args.data, args.image_size)
    shape = first_shape(dataset, args.data)
    obj = _read_checkpoint(args.checkpoint, args.allow_pickle)
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
        warn(message)
    method = _methods.get(name)
    arch = args.arch or (meta or {}).get("arch")
    if arch is None:
        raise CliError(f"--arch is required: {args.checkpoint} does not record one (choose from {', '.join(models.available())})")
    vit = models.is_vit(arch)
    in_channels = shape[0] if vit else method.in_channels(shape[0])
    if meta is not None and meta.get("in_channels") not in (None, in_channels):
        raise CliError(f"the checkpoint's model takes {meta['in_channels']} input channels, but method {name!r} on "
                       f"{shape[0]}-channel images gives it {in_channels}")
    num_classes = args.num_classes or (meta or {}).get("num_classes") or models.classes_in(obj) or 10
    drop = (meta or {}).get("hyperparameters", {}).get("drop_tokens")
    model = build_model(arch, in_channels, num_classes, shape, drop)
    models.load_checkpoint(model, obj)
    _check_finite_weights(model, args.checkpoint)
    probe(model, in_channels, shape, arch, num_classes)
    if vit:
        method = _methods.for_vit(method, model)
    hp = _methods.resolve(method, merge_recorded(method, given_hyper(args, method), meta, args.override), shape)

    where_to = torch.device("cpu") if executor is not None else device(args.device)  # Ray: the workers pick theirs
    dtype = DTYPES[args.dtype]
    model = model.to(where_to, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    smoother = method.build(model, num_classes, hp, args.batch_size)
    if dtype in (torch.bfloat16, torch.float16):
        smoother.autocast = dtype  # the base model runs under autocast; certificates are then of that model
    data = CastImages(dataset, torch.float64) if dtype == torch.float64 else dataset

    seed = sampling_seed(args, method)
    shown = {k: v for k, v in hp.items() if v is not None}
    seeded = f", sampling seed {seed}" if seed is not None else ""
    where = where_to if executor is None else executor.describe()
    part = f", shard {args.shard}" if args.shard else ""
    print(f"certifying with {name} {shown}, {arch} ({in_channels} input channels, {num_classes} classes) on "
          f"{where}{seeded}{part}", file=sys.stderr)
    data_path = args.data if args.data in ("demo", "demo-train") else str(Path(args.data).resolve())
    fingerprint = {"method": name, "method_hyperparameters": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in hp.items()},
                   "arch": arch, "checkpoint_sha256": sha256_file(args.checkpoint), "data": data_path,
                   "image_size": args.image_size, "dtype": args.dtype, "num_classes": num_classes}
    summary = evaluate(smoother, data, levels=list(args.levels) if args.levels else list(method.levels),
                       output=args.output, resume=not args.no_resume, skip=args.skip, max=args.max, device=where_to,
                       batch_images=args.batch_images, progress=not args.no_progress, seed=seed,
                       fingerprint=fingerprint, executor=executor, shard=args.shard, decide=args.decide)
    if summary.count == 0:  # only a shard can select no image (a whole run that does is an error)
        where = f"; its part {args.output} holds the header only and merges" if args.output else ""
        print(f"shard {args.shard} holds no images of the selection (fewer selected images than shards){where}")
        return 0
    print(format_summary(summary, smoother.certificate_name))
    if args.output:
        print(f"\nper-image results: {args.output}")
    return 0


def _check_finite_weights(model: torch.nn.Module, path: str) -> None:
    """A checkpoint with NaN / Inf weights gives a model whose logits are no votes: refused
    before any work (the engine would refuse its logits anyway)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CliError(f"--checkpoint {path}: {name} holds {bad} NaN / Inf values (of {tensor.numel()}): the "
                               "model's outputs are not votes; use a checkpoint saved before training diverged")


def _read_checkpoint(path: str, allow_pickle: bool) -> Any:
    """--checkpoint read, with a plain message for a file that is not a torch checkpoint."""
    from fastsmooth import models

    if not Path(path).is_file():
        raise CliError(f"--checkpoint {path}: no such file")
    if not models.looks_like_torch_file(path):
        raise CliError(f"--checkpoint {path}: not a readable torch checkpoint (neither torch.save's "
                       "zip format nor a legacy pickle)")
    try:
        return models.read_checkpoint(path, allow_pickle=allow_pickle, pickle_hint="--allow-pickle")
    except models.CheckpointError:
        raise
    except Exception as err:  # torch.load's errors for a file that is not a checkpoint at all
        raise CliError(f"--checkpoint {path}: not a readable torch checkpoint, or a corrupted one "
                       f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err


def merge_recorded(method: _methods.Method, given: dict[str, Any], meta: dict[str, Any] | None,
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
            warn(message + "; certifying with the flag's value")
    return {**recorded, **given}


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
    from fastsmooth.executors.ray_pool import check_client, import_ray

    address = None if args.ray == LOCAL_RAY else args.ray
    try:
        import_ray()
        check_client(address)
    except RayNotInstalled as err:
        raise CliError(f"--ray: {err}") from None
    try:
        return RayExecutor(address=address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           cpus_per_worker=args.cpus_per_worker)
    except ValueError as err:
        raise CliError(f"--ray: {err}") from None
