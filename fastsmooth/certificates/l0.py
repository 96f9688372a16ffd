"""Certificates of l0 randomized ablation (semantics.md §2): exact, vectorized, fast.

With d pixels of which each sample keeps k uniformly at random, changing rho pixels changes
the base classifier's probabilities by at most

    Delta(rho) = 1 - C(d - rho, k) / C(d, k) = 1 - Q(rho),  Q(rho) = prod_{i<rho} (d - k - i) / (d - i),

and the radius is the largest integer rho >= 0 with ``p_lower - Delta(rho) > 1/2``, that is
``Q(rho) > t`` with ``t = 3/2 - p_lower`` (exact in float64 for p_lower in [1/2, 1]).

``l0_radius`` compares log Q(rho) (a cached cumulative sum of log1p terms) with log t in
float64. The float error of log Q is below 1e-13 wherever the comparison matters (|log Q| <=
log 2 there), so every comparison decided by more than a 1e-9 margin is exact; the few that
are not are decided with integers: Q(rho) > a / b  <=>  perm(d - k, rho) * b > a * perm(d, rho).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import torch

__all__ = ["l0_delta", "l0_delta_exact", "l0_radius"]

_MARGIN = 1e-9  # far above the float error of log Q (< 1e-13), far below its steps (>= 1/d)

ArrayLike = float | np.ndarray | torch.Tensor | list


def _check_dk(d: int, keep: int) -> tuple[int, int]:
    for name, v in (("d", d), ("keep", keep)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    d, keep = int(d), int(keep)
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if not 0 <= keep <= d:
        raise ValueError(f"keep must be in [0, d = {d}], got {keep}")
    return d, keep


@functools.lru_cache(maxsize=64)
def _log_q(d: int, keep: int) -> np.ndarray:
    """log Q(rho) for rho = 0 .. R, decreasing, with log Q(R) < log(1/2) - margin (or -inf).

    Only that prefix is needed: t >= 1/2, so no rho with Q(rho) < 1/2 is ever certified. Since
    Q(rho) <= (1 - k/d)^rho, R <= log(2) / -log1p(-k/d) + 2.
    """
    if keep == 0:
        return np.zeros(1)  # Q = 1 for every rho <= d: handled by the caller
    top = d - keep + 1  # Q(d - k + 1) = 0
    bound = math.ceil(math.log(2.0) / -math.log1p(-keep / d)) + 2 if keep < d else 1
    rho_max = min(top, bound)
    i = np.arange(rho_max, dtype=np.float64)
    with np.errstate(divide="ignore"):
        terms = np.log1p(-keep / (d - i))  # log((d - k - i) / (d - i)); -inf at i = d - k
    return np.concatenate([[0.0], np.cumsum(terms)])


def l0_delta_exact(rho: int, d: int, keep: int) -> Fraction:
    """Delta(rho) as an exact fraction (big integers)."""
    d, keep = _check_dk(d, keep)
    if not 0 <= rho <= d:
        raise ValueError(f"rho must be in [0, d = {d}], got {rho}")
    return 1 - Fraction(math.comb(d - rho, keep), math.comb(d, keep))


def l0_delta(rho: int | np.ndarray | torch.Tensor, d: int, keep: int) -> np.ndarray:
    """Delta(rho) = 1 - C(d - rho, keep) / C(d, keep) in float64, vectorized over integer rho in [0, d].

    Computed as -expm1(sum of log1p terms): relative error about 1e-15 even for tiny Delta.
    """
    d, keep = _check_dk(d, keep)
    r = np.asarray(rho.detach().cpu().numpy() if isinstance(rho, torch.Tensor) else rho)
    if r.dtype.kind not in "iu":
        raise TypeError(f"rho must hold integers, got dtype {r.dtype}")
    if r.size and (r.min() < 0 or r.max() > d):
        raise ValueError(f"rho must lie in [0, d = {d}], got {r[(r < 0) | (r > d)].flat[0]}")
    r = r.astype(np.int64)
    i = np.arange(int(r.max()) if r.size else 0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Factor i is (d - k - i) / (d - i): zero from i = d - k on, so Delta = 1 beyond.
        terms = np.where(i < d - keep, np.log1p(-keep / (d - i)), -np.inf)
    log_q = np.concatenate([[0.0], np.cumsum(terms)])
    return 0.0 - np.expm1(log_q[r])  # 0.0 - : no negative zero at rho = 0


def _q_above(rho: int, t: float, d: int, keep: int) -> bool:
    """Exactly: Q(rho) > t, i.e. perm(d - k, rho) / perm(d, rho) > a / b for t = a / b."""
    a, b = t.as_integer_ratio()
    return math.perm(d - keep, rho) * b > a * math.perm(d, rho)


def l0_radius(p_lower: ArrayLike, d: int, keep: int) -> np.ndarray:
    """Certified l0 radius for each p_lower (float64 lower bounds of the top class probability).

    Returns int64 radii, the largest rho >= 0 with ``p_lower - Delta(rho) > 1/2`` decided
    exactly for the given floats, and -1 where p_lower <= 1/2 (abstain: nothing is certified).
    With keep = 0 the smoothed classifier ignores the input, so the radius is d.
    """
    d, keep = _check_dk(d, keep)
    p = np.asarray(p_lower.detach().cpu().numpy() if isinstance(p_lower, torch.Tensor) else p_lower, dtype=np.float64)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_lower must lie in [0, 1], got {p[np.isnan(p) | (p < 0) | (p > 1)].flat[0]}")
    shape = p.shape
    p = p.reshape(-1)
    radius = np.full(p.shape, -1, dtype=np.int64)
    ok = p > 0.5
    if keep == 0:
        radius[ok] = d
        return radius.reshape(shape)
    log_q = _log_q(d, keep)
    t = 1.5 - p[ok]  # exact: p in (1/2, 1]
    log_t = np.log(t)
    neg = -log_q  # increasing
    # rho < lo: Q(rho) > t for sure; rho >= hi: Q(rho) < t for sure; in between: decide exactly.
    lo = np.searchsorted(neg, -log_t - _MARGIN, side="left")
    hi = np.searchsorted(neg, -log_t + _MARGIN, side="right")
    r = lo - 1
    for idx in np.nonzero(hi > lo)[0]:
        for rho in range(int(lo[idx]), int(hi[idx])):
            if not _q_above(rho, float(t[idx]), d, keep):
                break
            r[idx] = rho
    radius[ok] = r
    return radius.reshape(shape)
