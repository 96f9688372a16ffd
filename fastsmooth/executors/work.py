"""The unit of work an executor runs: a batch of images, certified by one smoother.

A :class:`WorkBatch` travels from the driver (which reads the data set) to whichever process
certifies it, and a :class:`BatchResult` travels back; both are small, picklable records. The
function :func:`certify_work` is the one place where a batch meets the smoother, in the
driver's process or on a worker, so a batch gives the same answers wherever it runs.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

import torch

from fastsmooth.executors.seeding import is_randomized, per_image_seeded
from fastsmooth.smoothing.base import Certified, Decided

__all__ = ["Evaluable", "WorkBatch", "BatchResult", "certify_work"]


class Evaluable(Protocol):
    """What ``evaluate`` and the executors need of a smoother."""

    certificate_name: str

    def evaluate_batch(self, x: torch.Tensor) -> Certified: ...


@dataclasses.dataclass(frozen=True)
class WorkBatch:
    """Images to certify: ``images[j]`` is image ``indices[j]`` of the data set, labelled ``labels[j]``.

    ``sequence`` numbers the batches of one run from 0, so that results that come back out of
    order (from several workers) can be put back in data order. ``levels``: level mode, decide
    only these levels (``smoother.decide_batch``) instead of certifying.
    """

    sequence: int
    indices: tuple[int, ...]
    labels: tuple[int, ...]
    images: torch.Tensor  # [B, C, H, W]
    levels: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.indices)


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """The answers for one :class:`WorkBatch`, image by image, and the seconds it took per image.

    ``extra``: level mode's further columns per image (forwards used, then 0 / 1 per level);
    empty otherwise."""

    sequence: int
    prediction: tuple[int, ...]
    certificate: tuple[float, ...]
    seconds_per_image: float
    extra: tuple[tuple[str, ...], ...] = ()


def certify_work(smoother: Evaluable, batch: WorkBatch, device: torch.device | str | None,
                 seed: int | None = None) -> BatchResult:
    """Certify ``batch`` with ``smoother`` on ``device``.

    With a ``seed``, a randomized smoother certifies each image on its own with a generator
    derived from (seed, image index) (see :mod:`fastsmooth.executors.seeding`), so an image's
    answer does not depend on which other images share its batch, worker or shard.
    """
    x = batch.images if device is None else batch.images.to(device)
    start = time.perf_counter()
    if batch.levels is not None:
        return _decide_work(smoother, batch, x, seed, start)
    if seed is not None and is_randomized(smoother):
        result = per_image_seeded(smoother.evaluate_batch, x, batch.indices, seed)
    else:
        result = smoother.evaluate_batch(x)
    prediction = result.prediction.tolist()  # reading back also waits for the device
    certificate = result.certificate.tolist()
    seconds = (time.perf_counter() - start) / max(1, len(batch))
    if len(prediction) != len(batch) or len(certificate) != len(batch):
        raise ValueError(f"{type(smoother).__name__}.evaluate_batch returned {len(prediction)} predictions and "
                         f"{len(certificate)} certificates for a batch of {len(batch)} images")
    return BatchResult(batch.sequence, tuple(int(p) for p in prediction), tuple(float(c) for c in certificate), seconds)


def _decide_work(smoother: Any, batch: WorkBatch, x: torch.Tensor, seed: int | None, start: float) -> BatchResult:
    """Level mode: ``decide_batch`` at ``batch.levels``. The certificate column holds the largest
    level certified (0 for a patch size, -1 for a radius, where none is)."""
    levels = batch.levels

    def decide(images: torch.Tensor, **generator: Any) -> Decided:
        return smoother.decide_batch(images, levels, **generator)

    if seed is not None and is_randomized(smoother):
        result = per_image_seeded(decide, x, batch.indices, seed)
    else:
        result = decide(x)
    prediction = result.prediction.tolist()
    certified = result.certified.tolist()
    forwards = result.forwards.tolist()
    seconds = (time.perf_counter() - start) / max(1, len(batch))
    if len(prediction) != len(batch):
        raise ValueError(f"{type(smoother).__name__}.decide_batch returned {len(prediction)} predictions for a batch of "
                         f"{len(batch)} images")
    none = 0.0 if getattr(smoother, "certificate_name", "") == "patch_size" else -1.0
    certificate, extra = [], []
    for pred, flags, used in zip(prediction, certified, forwards, strict=True):
        flags = [bool(f) and pred != -1 for f in flags]
        certificate.append(max([t for t, f in zip(levels, flags) if f], default=none))
        extra.append((str(int(used)), *(str(int(f)) for f in flags)))
    return BatchResult(batch.sequence, tuple(int(p) for p in prediction), tuple(float(c) for c in certificate), seconds,
                       tuple(extra))


def move_smoother(smoother: Any, device: torch.device) -> Any:
    """Put the smoother's base model on ``device`` (in place; a worker does this once)."""
    model = getattr(smoother, "model", None)
    if isinstance(model, torch.nn.Module):
        model.to(device)
    return smoother
