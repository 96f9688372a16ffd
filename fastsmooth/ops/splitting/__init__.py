"""l1 splitting noise: DSSN's deterministic splits, and the SSN and uniform-noise baselines (semantics.md §3-4).

- :func:`dssn_split`: the L (or chosen) deterministic DSSN evaluations of every image, fused.
- :func:`dssn_split_random`: the training noise, one random evaluation k per image.
- :func:`ssn_noise`, :func:`uniform_noise`: n randomly noised copies of every image.
- :func:`dssn_template`, :func:`dssn_levels`: the offset vector v and (lambda, L).

Outputs are image-major (sample ``b * K + j`` is image b at its j-th evaluation) and have
x's dtype; the arithmetic is float32 and identical, bit for bit, on every backend.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastsmooth._validation import check_images, check_index_tensor, check_int, check_real
from fastsmooth.ops._dispatch import OpTable, dispatch
from fastsmooth.ops._philox import seed_from
from fastsmooth.ops.splitting.native import dssn_split_native, ssn_noise_native, uniform_noise_native
from fastsmooth.ops.splitting.reference import dssn_split_reference, ssn_noise_reference, uniform_noise_reference

__all__ = ["dssn_levels", "dssn_template", "dssn_split", "dssn_split_random", "ssn_noise", "uniform_noise"]

MAX_LEVELS = 1 << 15  # offsets are stored as int16


def _triton(name: str):
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        from fastsmooth.ops.splitting import triton_kernel  # triton is optional

        return getattr(triton_kernel, name)(*args, **kwargs)

    return run


_SPLIT = OpTable("dssn_split", {"reference": dssn_split_reference, "cpu": dssn_split_native,
                                "cuda": dssn_split_native, "triton": _triton("dssn_split_triton")})
_SSN = OpTable("ssn_noise", {"reference": ssn_noise_reference, "cpu": ssn_noise_native, "cuda": ssn_noise_native,
                             "triton": _triton("ssn_noise_triton")})
_UNIFORM = OpTable("uniform_noise", {"reference": uniform_noise_reference, "cpu": uniform_noise_native,
                                     "cuda": uniform_noise_native, "triton": _triton("uniform_noise_triton")})


def _positive(value: object, name: str) -> float:
    return check_real(value, name, 0, low_open=True)


def dssn_levels(sigma: float | None = None, lam: float | None = None, q: int = 255) -> tuple[float, int]:
    """(lambda, L): lambda = sigma / 3 ** -0.5 (or ``lam``), L = int(2 * lambda * q) evaluations.

    Give exactly one of sigma and lam. lambda is computed in float64 exactly as the authors'
    code writes it, ``sigma / 3 ** -0.5``: ``sigma * sqrt(3)`` differs from it in the last bit
    for most sigma, which changes L where ``2 * lambda * q`` lands next to an integer (sigma =
    0.4528237405408829: L = 400 their way, 399 the other). The branch of the split formula is
    chosen by ``lambda >= 0.5`` on this float lambda (equivalently L >= q).
    """
    q = check_int(q, "q", 1, 1 << 24)
    if (sigma is None) == (lam is None):
        raise ValueError(f"give exactly one of sigma and lam, got sigma={sigma!r}, lam={lam!r}")
    lam = _positive(lam, "lam") if lam is not None else _positive(sigma, "sigma") / 3**-0.5
    levels = int(2 * lam * q)
    if not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"L = int(2 * lambda * q) = {levels} (lambda={lam!r}, q={q}) must be in [1, {MAX_LEVELS}]")
    return lam, levels


@functools.lru_cache(maxsize=64)
def _template_cpu(seed: int, levels: int, shape: tuple[int, ...]) -> torch.Tensor:
    v = np.random.RandomState(seed).randint(levels, size=int(np.prod(shape)))
    return torch.from_numpy(v.astype(np.int16)).reshape(shape)


_DEVICE_TEMPLATES: dict[tuple[int, int, tuple[int, ...], str], torch.Tensor] = {}


def dssn_template(seed: int, levels: int, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """The DSSN offset vector v as an int16 tensor of ``shape`` (one image, e.g. (C, H, W)).

    Exactly ``numpy.random.RandomState(seed).randint(levels, size=prod(shape))`` in NCHW
    flatten order. Cached per (seed, levels, shape) and device; do not modify the result.
    """
    seed = check_int(seed, "seed", 0, 2**32 - 1)
    levels = check_int(levels, "levels", 1, MAX_LEVELS)
    shape = tuple(check_int(s, "shape entry", 1, 1 << 40) for s in shape)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        return _template_cpu(seed, levels, shape)
    key = (seed, levels, shape, str(dev))
    if key not in _DEVICE_TEMPLATES:
        _DEVICE_TEMPLATES[key] = _template_cpu(seed, levels, shape).to(dev)
    return _DEVICE_TEMPLATES[key]


def _resolve_template(template: torch.Tensor | None, seed: int, levels: int, x: torch.Tensor) -> torch.Tensor:
    d = x.shape[1] * x.shape[2] * x.shape[3]
    if template is None:
        return dssn_template(seed, levels, tuple(x.shape[1:]), x.device).reshape(-1)
    t = check_index_tensor(template, "template", levels, torch.device("cpu"))
    if t.numel() != d:
        raise ValueError(f"template must hold C * H * W = {d} offsets, got shape {tuple(t.shape)}")
    return t.reshape(-1).to(torch.int16).to(x.device)


def _split(x: torch.Tensor, offsets: torch.Tensor, sigma, lam, seed, template, q, backend) -> torch.Tensor:
    lam, levels = dssn_levels(sigma, lam, q)
    v = _resolve_template(template, seed, levels, x)
    general = not lam >= 0.5
    return dispatch(_SPLIT, backend, x, offsets.to(x.device).contiguous(), v, levels, q, general)


def dssn_split(
    x: torch.Tensor,
    sigma: float | None = None,
    lam: float | None = None,
    offsets: Sequence[int] | torch.Tensor | range | None = None,
    seed: int = 0,
    template: torch.Tensor | None = None,
    q: int = 255,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """DSSN evaluations: (B, C, H, W) -> (B * K, C, H, W), image-major.

    Sample ``b * K + j`` is image b split at evaluation k = offsets[j]: with
    s_i = (((k + v_i) mod L) + 0.5) / q, ``((x > s) + min(s, 1)) / 2`` for lambda >= 0.5, else
    ``t = ceil(q (x - s) / L) L / q + s; (min(t, 1) + max(t - L / q, 0)) / 2`` (float32).
    ``offsets`` defaults to all of 0 .. L - 1; ``template`` (C*H*W offsets in [0, L))
    overrides the one drawn from ``seed``. Give exactly one of sigma and lam.
    """
    check_images(x)
    _, levels = dssn_levels(sigma, lam, q)
    if offsets is None:
        ks = torch.arange(levels, dtype=torch.int64)
    else:
        ks = check_index_tensor(offsets, "offsets", levels, torch.device("cpu"))
        if ks.dim() != 1:
            raise ValueError(f"offsets must be 1-D, got shape {tuple(ks.shape)}")
    return _split(x, ks.reshape(1, -1), sigma, lam, seed, template, q, backend)


def dssn_split_random(
    x: torch.Tensor,
    sigma: float | None = None,
    lam: float | None = None,
    seed: int = 0,
    template: torch.Tensor | None = None,
    q: int = 255,
    *,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """DSSN training noise: one uniformly random evaluation k per image, (B, C, H, W).

    k is drawn on the CPU with ``generator`` (a CPU ``torch.Generator``), so it does not
    depend on the device. ``seed`` is the template seed (part of the model), not k's.
    """
    check_images(x)
    _, levels = dssn_levels(sigma, lam, q)
    ks = torch.randint(levels, (x.shape[0], 1), generator=generator)
    return _split(x, ks, sigma, lam, seed, template, q, backend)


def _noise(impls, x, lam, n, generator, seed, backend) -> torch.Tensor:
    check_images(x)
    lam = _positive(lam, "lam")
    n = check_int(n, "n", 0, 1 << 31)
    return dispatch(impls, backend, x, lam, n, seed_from(generator, seed))


def ssn_noise(
    x: torch.Tensor,
    lam: float,
    n: int,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """SSN (independent splitting noise): (B, C, H, W) -> (B * n, C, H, W), image-major.

    Every element of every copy gets its own s ~ U(0, 2 lambda) (counter-based Philox: the
    same bits on every backend for the same seed); then the split formula with continuous s.
    The Philox seed is ``seed`` if given, else drawn from ``generator`` (or torch's global one).
    """
    return _noise(_SSN, x, lam, n, generator, seed, backend)


def uniform_noise(
    x: torch.Tensor,
    lam: float,
    n: int,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Uniform additive noise x + U(-lambda, lambda): (B, C, H, W) -> (B * n, C, H, W), image-major.

    Seeding as in :func:`ssn_noise`.
    """
    return _noise(_UNIFORM, x, lam, n, generator, seed, backend)
