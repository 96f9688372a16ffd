"""Gaussian noise for randomized smoothing (Cohen et al., semantics.md §5): n noised copies per image, fused.

``gaussian_noise`` writes ``x[b] + sigma * z`` for every copy in one pass over the output, with
z drawn from a counter-based Philox stream (reference.py states the exact stream). Unlike
``x.repeat(n, 1, 1, 1) + sigma * torch.randn(...)`` it never materializes the repeated batch or
a separate noise tensor, and a seed reproduces the same noise on every backend and for every
way of splitting the samples into chunks (``start`` / ``count``).
"""
from __future__ import annotations

from typing import Any

import torch

from fastsmooth._validation import check_images, check_int, check_out, check_real
from fastsmooth.ops._dispatch import OpTable, dispatch
from fastsmooth.ops.gaussian.native import gaussian_noise_native
from fastsmooth.ops.gaussian.reference import gaussian_noise_reference

__all__ = ["gaussian_noise", "draw_seed"]

_MAX_COUNTER = 2**32 - 1  # image and copy indices are 32-bit Philox counter words
_MAX_SEED = 2**63 - 1


def _gaussian_noise_triton(*args: Any, **kwargs: Any) -> torch.Tensor:
    from fastsmooth.ops.gaussian.triton_kernel import gaussian_noise_triton  # triton is optional

    return gaussian_noise_triton(*args, **kwargs)


_IMPLS = OpTable("gaussian_noise", {
    "reference": gaussian_noise_reference,
    "cpu": gaussian_noise_native,
    "cuda": gaussian_noise_native,
    "triton": _gaussian_noise_triton,
})


def draw_seed(generator: torch.Generator | None = None, seed: int | None = None) -> int:
    """The kernels' 63-bit seed: ``seed`` if given, else one number drawn from ``generator``.

    With neither, the number comes from torch's global CPU generator, so ``torch.manual_seed``
    makes results reproducible just as it does for ``torch.randn``. A CUDA generator is drawn
    on its own device (one host sync).
    """
    if seed is not None:
        return check_int(seed, "seed", 0, _MAX_SEED)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, _MAX_SEED, (), dtype=torch.int64, generator=generator, device=device))


def _check_sigma(sigma: object) -> float:
    return check_real(sigma, "sigma", 0)


def gaussian_noise(
    x: torch.Tensor,
    sigma: float,
    n: int,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    start: int = 0,
    count: int | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """n Gaussian-noised copies of each image: (B, C, H, W) -> (B * n, C, H, W), image-major.

    Sample ``b * n + j`` is ``x[b] + sigma * z_bj`` with ``z_bj ~ N(0, I)``, computed in float32
    (float64 for float64 images) and rounded once to x's dtype, on x's device.

    Args:
        x: images, any floating dtype.
        sigma: noise standard deviation (>= 0), in x's units (pixel space for [0, 1] images).
        n: copies per image, 1 <= n < 2**32.
        generator: where the seed is drawn from when ``seed`` is None (default: torch's global RNG).
        seed: the Philox seed in [0, 2**63); the same seed gives the same noise on every backend.
        start, count: produce only the flat samples ``start .. start + count - 1`` of the
            B * n grid (default: all of them); chunks of one seed compose to the full result.
        out: optional contiguous output of shape (count, C, H, W), x's dtype and device.
        backend: "auto", "reference", "cpu", "triton" or "cuda".
    """
    check_images(x)
    B, C, H, W = x.shape
    sigma = _check_sigma(sigma)
    n = check_int(n, "n", 1, _MAX_COUNTER)
    check_int(B, "x.shape[0] (number of images)", 0, _MAX_COUNTER)
    total = B * n
    start = check_int(start, "start", 0, total)
    count = total - start if count is None else check_int(count, "count", 0, total - start)
    check_out(out, (count, C, H, W), x)
    s = draw_seed(generator, seed)
    return dispatch(_IMPLS, backend, x, sigma, n, s, start, count, out=out)
