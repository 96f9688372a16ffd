"""Per-image randomness for seeded runs of the randomized smoothers.

A randomized smoother (one with ``randomized = True``: Gaussian, l0 ablation, SSN, uniform,
randomized band) draws its noise from one generator in the order its batches come, so the
noise an image gets would depend on the images certified before it and beside it in its
batch, and so on how a run is batched, split over workers or sharded. A seeded run instead
certifies each image on its own with the generator :func:`image_generator` (seed, index)
passed to ``evaluate_batch``: an image's answer depends only on the seed, its index and its
pixels, wherever and with whatever neighbours it is certified.

Certifying images one by one costs batching across images, which matters only when an
image's samples do not fill a forward pass (n below ``batch_size``); the papers' sample sizes
(n = 10,000 to 100,000) fill many forward passes per image.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from fastsmooth.smoothing.base import Certified

__all__ = ["image_generator", "is_randomized", "certify_seeded"]


def is_randomized(smoother: Any) -> bool:
    """Whether the smoother samples (its class says so with ``randomized = True``)."""
    return bool(getattr(smoother, "randomized", False))


def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator a seeded run certifies image ``index`` with: a function of (seed, index)
    only, so rows do not depend on which images share a batch, on resuming, or on workers."""
    digest = hashlib.sha256(f"fastsmooth-image:{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def certify_seeded(smoother: Any, x: torch.Tensor, indices: Sequence[int], seed: int) -> Certified:
    """``evaluate_batch`` image by image, image ``indices[j]`` with ``image_generator(seed, indices[j])``."""
    if len(indices) != x.shape[0]:
        raise ValueError(f"indices has {len(indices)} entries for a batch of {x.shape[0]} images")
    parts = [smoother.evaluate_batch(x[j : j + 1], generator=image_generator(seed, index))
             for j, index in enumerate(indices)]
    if not parts:
        return Certified(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64))
    return Certified(torch.cat([p.prediction.cpu() for p in parts]), torch.cat([p.certificate.cpu() for p in parts]))
