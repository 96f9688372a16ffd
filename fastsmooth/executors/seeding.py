"""Per-image randomness for seeded runs of the randomized smoothers.

The randomized smoothers draw their noise from one generator (theirs, or torch's global one)
in the order their batches come: the noise an image gets depends on the images certified
before it and beside it in its batch. A run split over workers or shards batches images
differently, so a seeded run instead gives every image its own stream: image ``i`` is
certified alone, after seeding the smoother's generator (and torch's global CPU generator,
which ``Smooth`` and ``RandomizedBandSmoothing`` draw from) with :func:`image_seed` of
(seed, i). The answer of an image then depends only on the seed, its index and its pixels.

Certifying images one by one costs batching across images, which matters only when an
image's samples do not fill a forward pass (n below ``batch_size``); the papers' sample sizes
(n = 10,000 to 100,000) fill many forward passes per image.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fastsmooth.smoothing import SSN, RandomizedAblation, RandomizedBandSmoothing, Smooth, UniformSmoothing
from fastsmooth.smoothing.base import Certified

__all__ = ["RANDOMIZED", "image_seed", "is_randomized", "certify_seeded"]

#: smoothers whose certificates depend on random draws (the others enumerate every ablation or split)
RANDOMIZED: tuple[type, ...] = (Smooth, RandomizedAblation, SSN, UniformSmoothing, RandomizedBandSmoothing)
_MAX_SEED = 2**63 - 1


def is_randomized(smoother: Any) -> bool:
    """Whether the smoother samples. A class can say so itself with a ``randomized`` attribute."""
    flag = getattr(smoother, "randomized", None)
    return bool(flag) if flag is not None else isinstance(smoother, RANDOMIZED)


def image_seed(seed: int, index: int) -> int:
    """The 63-bit seed of image ``index`` in a run seeded with ``seed`` (numpy's SeedSequence
    mixes the pair, so neighbouring indices and seeds give unrelated streams)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    word = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return int(word) & _MAX_SEED


@contextlib.contextmanager
def _seeded(smoother: Any, seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator and the smoother's own generator, restoring both after."""
    saved_state = torch.random.get_rng_state()
    had_generator = hasattr(smoother, "generator")
    saved_generator = getattr(smoother, "generator", None)
    torch.random.default_generator.manual_seed(seed)
    if had_generator:
        smoother.generator = torch.Generator().manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(saved_state)
        if had_generator:
            smoother.generator = saved_generator


def certify_seeded(smoother: Any, x: torch.Tensor, indices: Sequence[int], seed: int) -> Certified:
    """``smoother.evaluate_batch`` image by image, image ``indices[j]`` seeded with ``image_seed(seed, indices[j])``."""
    if len(indices) != x.shape[0]:
        raise ValueError(f"indices has {len(indices)} entries for a batch of {x.shape[0]} images")
    predictions, certificates = [], []
    for j, index in enumerate(indices):
        with _seeded(smoother, image_seed(seed, index)):
            result = smoother.evaluate_batch(x[j : j + 1])
        predictions.append(result.prediction.reshape(-1).cpu())
        certificates.append(result.certificate.reshape(-1).cpu())
    if not predictions:
        return Certified(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64))
    return Certified(torch.cat(predictions), torch.cat(certificates))
