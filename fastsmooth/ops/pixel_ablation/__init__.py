"""l0 randomized ablation: random pixel subsets, sampled and encoded in one pass (semantics.md §2).

Every output sample keeps an independent, uniformly random set of exactly ``keep`` of the
d = H * W pixels (all channels of a kept pixel) and is NULL (0 in all 2C channels) elsewhere;
kept pixels hold ``[v, 1 - v]`` with ``v = x`` or ``(x - mean) / std`` (semantics.md §0).

Randomness is Philox, keyed by a 63-bit seed and the sample id, so every backend produces the
same batch bit for bit for the same seed (see csrc/ops/common/pixel_ablation.h).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastsmooth._validation import check_images, check_int, check_out, check_stats
from fastsmooth.ops._dispatch import OpTable, dispatch
from fastsmooth.ops._philox import seed_from
from fastsmooth.ops.pixel_ablation.native import ablate_pixels_native
from fastsmooth.ops.pixel_ablation.reference import ablate_pixels_reference

Stats = Sequence[float] | torch.Tensor | None

__all__ = ["ablate_pixels", "ablate_pixels_train"]


def _ablate_pixels_triton(*args: Any, **kwargs: Any) -> torch.Tensor:
    from fastsmooth.ops.pixel_ablation.triton_kernel import ablate_pixels_triton  # triton is optional

    return ablate_pixels_triton(*args, **kwargs)


_IMPLS = OpTable("pixel_ablation", {
    "reference": ablate_pixels_reference,
    "cpu": ablate_pixels_native,
    "cuda": ablate_pixels_native,
    "triton": _ablate_pixels_triton,
})


def _run(
    x: torch.Tensor, keep: int, n: int, shared: bool, mean: Stats, std: Stats,
    generator: torch.Generator | None, seed: int | None, out: torch.Tensor | None, backend: str,
) -> torch.Tensor:
    check_images(x)
    B, C, H, W = x.shape
    keep = check_int(keep, "keep", 0, H * W)
    n = check_int(n, "n", 0, 2**62 // max(1, B))
    if seed is not None:
        seed = check_int(seed, "seed", 0, 2**63 - 1)
    mean_t, std_t = check_stats(mean, std, x)
    check_out(out, (B * n, 2 * C, H, W), x)
    return dispatch(_IMPLS, backend, x, keep, n, seed_from(generator, seed), shared, mean_t, std_t, out=out)


def ablate_pixels(
    x: torch.Tensor,
    keep: int,
    n: int,
    generator: torch.Generator | None = None,
    mean: Stats = None,
    std: Stats = None,
    *,
    seed: int | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """n randomly ablated copies of every image: (B, C, H, W) -> (B * n, 2C, H, W), image-major.

    Sample ``b * n + j`` keeps a uniformly random set of exactly ``keep`` pixels of image b
    (0 <= keep <= H * W), drawn independently for every sample and image. The randomness comes
    from ``seed`` if given, else from a seed drawn from ``generator`` (or torch's global
    generator): the same seed gives the same batch on every backend.
    """
    return _run(x, keep, n, False, mean, std, generator, seed, out, backend)


def ablate_pixels_train(
    x: torch.Tensor,
    keep: int,
    per: str = "image",
    generator: torch.Generator | None = None,
    mean: Stats = None,
    std: Stats = None,
    *,
    seed: int | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Training-time ablation: one random ``keep``-subset per image, (B, C, H, W) -> (B, 2C, H, W).

    ``per="image"`` draws an independent subset for every image; ``per="batch"`` draws one
    subset for the whole minibatch, as the authors' training code does.
    """
    if per not in ("image", "batch"):
        raise ValueError(f"per must be 'image' or 'batch', got {per!r}")
    if per == "image":
        return _run(x, keep, 1, False, mean, std, generator, seed, out, backend)
    check_images(x)
    # Shared mode: output sample b * n + j uses sample id j, so with n = 1 every image uses id 0.
    return _run(x, keep, 1, True, mean, std, generator, seed, out, backend)
