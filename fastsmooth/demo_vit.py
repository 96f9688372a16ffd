"""A smoothed ViT trained on the demo digits: its recipe, its training and its cache.

The demo (:mod:`fastsmooth.demo`) trains the papers' MNIST CNN under column ablation; this
module trains ``mnist_vit`` (28 x 28, 4 x 4 patches, 49 tokens) for column smoothing with
token dropping on the same 4000 training digits, so the two can be certified side by side on
the same 1000 held-out digits (``benchmarks/test_vit_smoothing.py``). The checkpoint is cached
next to the demo's (``fastsmooth.demo.cache_dir()``) under a key of the recipe and is a
regular fastsmooth checkpoint: ``fastsmooth certify --checkpoint <file> --data demo``
certifies it.

Why the recipe looks as it does (the choices were made together, not measured one by one):

- ``normalize="before"`` with mean = std = 0.5: the image becomes 2x - 1 (background -1, ink
  +1) and ablated pixels are 0, a value no digit pixel takes after that map except mid-grey
  edges. With the default fill (ablated = 0 = the background of an MNIST digit) a token cannot
  tell which of its columns the band kept, and the CNN's ``[x, 1 - x]`` encoding is not
  available to a ViT on C channels (semantics.md §10).
- ``per="image"``: every image draws its own band (images keeping the same number of tokens
  share a forward), with ``copies`` bands per digit per step, as the demo CNN's training; one
  band per minibatch (the authors' ViT training, made for ImageNet-sized batches) gives 4000
  digits 32 different bands per epoch, and an earlier training of that kind stood at loss
  2.29 (chance: 2.30) after 3 epochs.
- AdamW with a linear warm-up and a cosine decay, label smoothing 0.1, many short epochs:
  the usual recipe for small ViTs trained from scratch; one epoch takes a few seconds here.
- One torch thread (:data:`TRAIN_THREADS`): the matrices of this ViT are too small for
  intra-op parallelism; with two threads on a busy 2-core machine the trainer spent its time
  in OpenMP barriers (43 epochs in 37 minutes, against about 6 s per epoch on one thread).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from fastsmooth import methods
from fastsmooth.data import demo_mnist
from fastsmooth.demo import Recipe, cache_dir
from fastsmooth.models import build, load_checkpoint
from fastsmooth.models.vit import TokenViT
from fastsmooth.training import TrainConfig, save_checkpoint, train

__all__ = ["ViTRecipe", "VIT_RECIPE", "trained_vit"]


@dataclasses.dataclass(frozen=True)
class ViTRecipe:
    """Everything that decides the trained ViT (and so its cache key)."""

    size: int = 2  # the band width s, as the demo CNN's
    arch: str = "mnist_vit"
    epochs: int = 100
    lr: float = 2e-3
    batch_size: int = 128
    copies: int = 4
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    warmup: float = 2.0
    label_smoothing: float = 0.1
    per: str = "image"
    normalize: str = "before"
    mean: float = 0.5
    std: float = 0.5
    drop_tokens: bool = True
    train_seed: int = 0
    split_seed: int = 0
    holdout: int = 1000

    key = Recipe.key  # a short hash of the recipe's fields, naming the cached file

    def hyperparameters(self) -> dict:
        """The column method's hyperparameters of the smoothed ViT (what the checkpoint records)."""
        return {"size": self.size, "normalize": self.normalize, "mean": [self.mean], "std": [self.std],
                "drop_tokens": self.drop_tokens}

    def path(self) -> Path:
        return cache_dir() / f"demo-vit-column-s{self.size}-{self.key()}.pt"


VIT_RECIPE = ViTRecipe()
#: torch threads while training (not part of the key, like the machine: they change float results in the last bits only).
TRAIN_THREADS = 1


def trained_vit(
    recipe: ViTRecipe = VIT_RECIPE, *, retrain: bool = False, progress: bool = True
) -> tuple[TokenViT, Path, dict]:
    """(the trained ViT in eval mode, its checkpoint, the column hyperparameters), from the cache
    unless it is absent or ``retrain``; training prints its time and final loss."""
    torch.manual_seed(recipe.train_seed)
    model = build(recipe.arch, in_channels=1, num_classes=10, drop_tokens=recipe.drop_tokens)
    method = methods.for_vit(methods.get("column"), model)
    hp = methods.resolve(method, recipe.hyperparameters(), (1, 28, 28))
    path = recipe.path()
    if path.is_file() and not retrain:
        load_checkpoint(model, path)
        return model.eval(), path, hp
    train_set, _ = demo_mnist(holdout=recipe.holdout, seed=recipe.split_seed)
    config = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, copies=recipe.copies,
                         optimizer=recipe.optimizer, weight_decay=recipe.weight_decay, warmup=recipe.warmup,
                         label_smoothing=recipe.label_smoothing, seed=recipe.train_seed)
    print(f"training {recipe.arch} (token dropping) with column ablation (s = {recipe.size}) on {len(train_set)} "
          f"digits, {recipe.epochs} epochs x {recipe.copies} random bands per digit ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    start = time.perf_counter()
    try:
        losses = train(model, train_set, method.noise(hp, recipe.per), config, progress=progress)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    save_checkpoint(path, model, method="column", hyperparameters=hp, arch=recipe.arch, in_channels=1,
                    num_classes=10, image_shape=(1, 28, 28),
                    training={**dataclasses.asdict(recipe), "losses": losses, "seconds": seconds,
                              "threads": TRAIN_THREADS, "data": "demo-train"})
    print(f"trained in {seconds:.0f} s (final loss {losses[-1]:.3f}); cached as {path}")
    return model.eval(), path, hp
