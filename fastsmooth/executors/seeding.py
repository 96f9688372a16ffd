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
from collections.abc import Callable, Sequence
from typing import Any

import torch


__all__ = ["image_generator", "is_randomized", "per_image_seeded"]


def is_randomized(smoother: Any) -> bool:
    """Whether the smoother samples (its class says so with ``randomized = True``)."""
    return bool(getattr(smoother, "randomized", False))


def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator a seeded run certifies image ``index`` with: a function of (seed, index)
    only, so rows do not depend on which images share a batch, on resuming, or on workers."""
    digest = hashlib.sha256(f"fastsmooth-image:{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def per_image_seeded(certify: Callable[..., Any], x: torch.Tensor, indices: Sequence[int], seed: int) -> Any:
    """``certify(x)`` image by image, image ``indices[j]`` with ``generator=image_generator(seed,
    indices[j])``; the per-image results (a NamedTuple of tensors: ``Certified``, ``Decided``)
    are joined along the batch axis."""
    if len(indices) != x.shape[0]:
        raise ValueError(f"indices has {len(indices)} entries for a batch of {x.shape[0]} images")
    if not indices:  # an empty batch: the smoother's own empty result
        return certify(x)
    parts = [certify(x[j : j + 1], generator=image_generator(seed, index)) for j, index in enumerate(indices)]
    return type(parts[0])(*(torch.cat([getattr(p, name).cpu() for p in parts]) for name in parts[0]._fields))
