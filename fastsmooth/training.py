"""A small generic trainer for base networks under their method's noise, and the checkpoint
format that records how the network was trained.

A fastsmooth checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "fastsmooth", "version": 1, "method": "column",
     "hyperparameters": {"size": 2, "threshold": 0.3, ...},   # the DSSN seed included
     "arch": "mnist_cnn", "in_channels": 2, "num_classes": 10, "image_shape": [1, 28, 28],
     "training": {"epochs": ..., "lr": ..., ...}, "state_dict": {...}}

``fastsmooth.models.load_checkpoint`` reads its ``state_dict`` like any of the authors' files.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fastsmooth._validation import check_int, check_real

__all__ = ["TrainConfig", "Forwards", "train", "save_checkpoint", "checkpoint_metadata", "FORMAT", "OPTIMIZERS"]

FORMAT = "fastsmooth"
OPTIMIZERS = ("adam", "sgd", "adamw")
Noise = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.

    copies: noisy copies of every image in a minibatch, each with its own noise draw (more
    ablations seen per step: it speeds up learning when each ablation shows little of the
    image). The optimizer is SGD with momentum (``optimizer="sgd"``, the papers'), Adam, or
    AdamW (decoupled weight decay, what ViTs are usually trained with); the learning rate
    rises linearly over the first ``warmup`` epochs (a fraction allowed; 0: no warm-up), then
    follows a cosine schedule over the remaining steps (``schedule="cosine"``) or stays
    constant. ``label_smoothing``: the cross-entropy's (0: none).
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    copies: int = 1
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    warmup: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "copies"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, 1))  # a frozen dataclass
        object.__setattr__(self, "lr", check_real(self.lr, "lr", 0, low_open=True))
        object.__setattr__(self, "warmup", check_real(self.warmup, "warmup", 0, self.epochs))
        object.__setattr__(self, "label_smoothing", check_real(self.label_smoothing, "label_smoothing", 0, 1))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    adam = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
              steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning rate of each step: linear warm-up, then cosine (or constant); None: constant."""
    steps = config.epochs * steps_per_epoch
    warm = min(steps, round(config.warmup * steps_per_epoch))
    cosine = config.schedule == "cosine"
    if not warm:  # torch's own schedule, as before warm-up existed (same learning rates to the last bit)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if cosine else None

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if not cosine:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclasses.dataclass(frozen=True)
class Forwards:
    """Training input that takes several forward passes: ``parts[i] = (rows, args)`` runs
    ``model(*args)`` on the minibatch rows ``rows`` (an index tensor). A noise function returns
    it when its inputs cannot stack into one batch (smoothed ViTs that keep different numbers
    of tokens per image); the loss is the mean over every row, as for one forward."""

    parts: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]

    def logits(self, model: nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of every row, the labels in the same order)."""
        rows = torch.cat([r for r, _ in self.parts])
        if rows.numel() != labels.numel() or not torch.equal(rows.sort().values.cpu(), torch.arange(labels.numel())):
            raise ValueError(f"the noise's Forwards must cover each of the {labels.numel()} rows once")
        return torch.cat([model(*args) for _, args in self.parts]), labels[rows.to(labels.device)]


def train(
    model: nn.Module,
    data: Dataset,
    noise: Noise,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
    *,
    num_classes: int | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``noise(images)`` with cross-entropy; returns the mean loss per epoch.

    Before the first step every item of ``data`` is checked against the input contract
    (finite images in [0, 1] of one shape, ``image_shape`` if given; labels in
    [0, num_classes) when ``num_classes`` is given), so bad data fails at once, not as a
    diverged loss.

    The noise positions are drawn from a CPU generator seeded with ``config.seed``, and so is the
    shuffling: the same config on the same data trains the same way (up to the kernels' float
    nondeterminism).
    """
    from fastsmooth.data import check_dataset

    device = torch.device(device)
    check_dataset(data, num_classes, image_shape, "the training data")
    torch.manual_seed(config.seed)  # weight initialization happened before; this covers dropout etc.
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=False)
    model.to(device).train()
    optimizer = _optimizer(model, config)
    scheduler = _schedule(optimizer, config, len(loader))
    losses: list[float] = []
    bar = tqdm(total=config.epochs * len(loader), disable=not progress, desc="train", unit="step")
    try:
        for epoch in range(config.epochs):
            total, count = 0.0, 0
            for x, y in loader:
                if config.copies > 1:
                    x, y = x.repeat_interleave(config.copies, 0), y.repeat_interleave(config.copies, 0)
                inputs, y = noise(x.to(device), generator), y.to(device)
                if isinstance(inputs, Forwards):
                    logits, y = inputs.logits(model, y)
                else:  # a tuple is several model arguments (a token ViT's kept-token pixels and their indices)
                    logits = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
                loss = nn.functional.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total += loss.item() * len(y)
                count += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.3f}")
            losses.append(total / count)
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {losses[-1]}); lower --lr")
    finally:
        bar.close()
    model.eval()
    return losses


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    method: str,
    hyperparameters: dict[str, Any],
    arch: str,
    in_channels: int,
    num_classes: int,
    image_shape: tuple[int, int, int],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a fastsmooth checkpoint (see the module docstring); the file is replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": 1,
        "method": method,
        # lists, not tuples, so that the safe loader (weights_only=True) reads them back
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hyperparameters.items()},
        "arch": arch,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "training": dict(training or {}, saved=time.strftime("%Y-%m-%dT%H:%M:%S")),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)  # a crash mid-save never leaves a truncated checkpoint behind
    except (OSError, RuntimeError) as err:  # disk full: torch's writer raises RuntimeError
        tmp.unlink(missing_ok=True)
        raise OSError(getattr(err, "errno", None), f"writing the checkpoint {path} failed: {err}") from err
    return path


def checkpoint_metadata(obj: Any) -> dict[str, Any] | None:
    """The metadata of a loaded fastsmooth checkpoint (everything but the weights), else None."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return {k: v for k, v in obj.items() if k != "state_dict"}
    return None
