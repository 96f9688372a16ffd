"""What the subcommands share: the user-error type, argument types, the hyperparameter flags of
:mod:`fastsmooth.methods`, and the checks every command makes before any work (output path,
data, device, the model's input size)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from fastsmooth import methods as _methods


class CliError(Exception):
    """A user error: printed as one message, exit status 2."""


def warn(message: str) -> None:
    # printed, not warnings.warn: Python shows a given warning once per location, and this one
    # must show every time a run certifies a model other than the one the checkpoint records
    print(f"fastsmooth: WARNING: {message}", file=sys.stderr)


# -- argument types ---------------------------------------------------------------------------------
def threshold(text: str) -> float | str:
    """--threshold: a float theta, or 'top1' for top-1 votes."""
    if text in ("top1", "none"):
        return "top1"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'top1', got {text!r}") from None


def batch_size(text: str) -> int | str:
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


def num_classes(text: str) -> int:
    """--num-classes: an integer >= 2 (a classifier needs two classes)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (the classes of the base model), got {text!r}")
    return value


def shard(text: str) -> Any:
    """--shard K/N, checked when the command line is read."""
    from fastsmooth.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: hyperparameter name -> (flags, argparse keywords); names as in fastsmooth.methods
HYPER_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "size": (("--size", "-s"), {"type": int, "help": "s: band width / block side (patch methods)"}),
    "stride": (("--stride",), {"type": int, "nargs": "+", "metavar": "S",
               "help": "column / row / block: certify with the bands (blocks) at 0, S, 2S, .. only (Salman et al.; "
                       "blocks: S or S_ROWS S_COLS; default 1, every position)"}),
    "threshold": (("--threshold", "--theta"), {"type": threshold,
                  "help": "theta: vote for every class with softmax >= theta, or 'top1' (default 0.3)"}),
    "keep": (("--keep", "--kappa", "-k"), {"type": int,
             "help": "kappa: bands / tiles kept (multi-band, multi-block); k: pixels kept (ablation)"}),
    "sigma": (("--sigma",), {"type": float, "help": "noise level (dssn, ssn, uniform, gaussian)"}),
    "seed": (("--seed",), {"type": int, "help": "DSSN: seed of the offset vector, part of the model (default 0); "
                           "randomized methods: seed of the sampling (default 0; image i always gets the same "
                           "noise, whatever the batch)"}),
    "n0": (("--n0",), {"type": int, "help": "samples that choose the class (randomized methods; with --decide at "
                                          "most this many: selection stops at 16, 32, 64, ... once a sign test "
                                          "shows the leader ahead)"}),
    "n": (("--n",), {"type": int, "help": "samples that bound its probability (randomized methods)"}),
    "alpha": (("--alpha",), {"type": float, "help": "failure probability of randomized certificates"}),
    "sided": (("--sided",), {"choices": ("one", "two"), "help": "ssn / uniform: alpha as a one- or two-sided level"}),
    "axis": (("--axis",), {"choices": ("column", "row"), "help": "multi-band / randomized-band: band direction"}),
    "transposed": (("--transposed",), {"action": "store_const", "const": True,
                   "help": "row: the model was trained on transposed images (the authors' MNIST row models)"}),
    "mean": (("--mean",), {"type": float, "nargs": "+", "help": "ablation methods: per-channel normalization"}),
    "std": (("--std",), {"type": float, "nargs": "+", "help": "ablation methods: per-channel normalization"}),
    "patch_size": (("--patch-size",), {"type": int, "help": "patchcleanser: the patch certified against (pixels)"}),
    "num_mask": (("--num-mask",), {"type": int, "help": "patchcleanser: masks per axis, k x k masks (default 6)"}),
    "mask_stride": (("--mask-stride",), {"type": int, "help": "patchcleanser: the mask stride (instead of --num-mask)"}),
    "fill": (("--fill",), {"type": float, "help": "patchcleanser: the value of masked pixels (default 0)"}),
    "normalize": (("--normalize",), {"choices": ("after", "before"),
                  "help": "ViT methods: normalize after ablation (the authors' code, default) or before (ART)"}),
}


# -- argument groups --------------------------------------------------------------------------------
def hyper_args(parser: argparse.ArgumentParser) -> None:
    """The hyperparameter flags (every method's; only those of the chosen method apply)."""
    group = parser.add_argument_group("hyperparameters (the papers' names; only those of the chosen method apply)")
    for name, (flags, kwargs) in HYPER_FLAGS.items():
        group.add_argument(*flags, dest=name, default=None, **kwargs)


def data_args(parser: argparse.ArgumentParser) -> None:
    """--data and what goes with it (certify, train)."""
    parser.add_argument("--data", required=True,
                        help="a folder in ImageFolder layout, an .npz / .pt of tensors, 'demo' (1000 held-out MNIST "
                             "digits) or 'demo-train' (the other 4000)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize ImageFolder images")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--num-classes", type=num_classes, help="default: recorded in the checkpoint / found in the data")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def method_help() -> str:
    return "smoothing method: " + ", ".join(_methods.names())


# -- reading the arguments --------------------------------------------------------------------------
def given_hyper(args: argparse.Namespace, method: _methods.Method | None = None) -> dict[str, Any]:
    """The hyperparameter flags given; ``--seed`` counts only for methods whose model it
    defines (DSSN's offset vector); for the others it seeds the sampling (:func:`sampling_seed`)."""
    given = {name: getattr(args, name) for name in HYPER_FLAGS if getattr(args, name) is not None}
    if isinstance(given.get("stride"), list) and len(given["stride"]) == 1:
        given["stride"] = given["stride"][0]  # --stride S: one stride (bands; both axes of blocks)
    if method is not None and "seed" not in method.defaults:
        given.pop("seed", None)
    return given


def randomized(method: _methods.Method) -> bool:
    """Whether the method draws samples (n0 selection + n estimation samples) when certifying."""
    return "n0" in method.defaults


def sampling_seed(args: argparse.Namespace, method: _methods.Method) -> int | None:
    """The seed of a randomized method's sampling (default 0, so that every run is reproducible
    and a resumed run gives the rows of an uninterrupted one); None for the deterministic ones,
    which draw nothing (DSSN's --seed defines its model; elsewhere a --seed is ignored, with a
    warning, and recorded nowhere)."""
    if not randomized(method):
        if args.seed is not None and "seed" not in method.defaults:
            warn(f"--seed {args.seed}: method {method.name!r} draws no samples; the seed is ignored")
        return None
    return 0 if args.seed is None else args.seed


def device(name: str | None) -> torch.device:
    """--device: 'auto' / None picks CUDA when there is one."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise CliError(f"--device {name}: not a device torch knows; use cpu, cuda or cuda:N") from None
    if chosen.type not in ("cpu", "cuda"):
        raise CliError(f"--device {name}: fastsmooth runs on cpu or cuda (cuda:N), not {chosen.type}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return chosen


def load_data(spec: str, image_size: list[int] | None = None) -> torch.utils.data.Dataset:
    """--data (see :func:`fastsmooth.data.load_dataset`), with its errors as one-line CLI errors."""
    from fastsmooth import data

    if image_size is not None and not Path(spec).is_dir():
        raise CliError(f"--image-size resizes the images of an image folder; --data {spec} is not one (its images keep "
                       "their size): drop --image-size, or resize the tensors yourself")
    try:
        dataset = data.load_dataset(spec, image_size)
    except (ValueError, OSError) as err:
        raise CliError(f"--data {spec}: {err}") from err
    if getattr(dataset, "scaled_from_uint8", False):
        print(f"fastsmooth: --data {spec}: 8-bit images, scaled by 1/255 to [0, 1]", file=sys.stderr)
    return dataset


def first_shape(dataset: Any, spec: str) -> tuple[int, ...]:
    """The [C, H, W] shape of the first image of --data."""
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


def build_model(arch: str, in_channels: int, num_classes: int, shape: tuple[int, ...] | None = None,
                drop_tokens: bool | None = None) -> torch.nn.Module:
    """--arch (see :func:`fastsmooth.models.build_base`), with its errors naming the flag."""
    from fastsmooth import models

    try:
        return models.build_base(arch, in_channels, num_classes, shape, drop_tokens)
    except ValueError as err:
        raise CliError(f"--arch {arch}: {err}") from err


def probe(model: torch.nn.Module, in_channels: int, shape: tuple[int, ...], arch: str, num_classes: int) -> None:
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


def check_output(path: str | None, flag: str) -> None:
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
