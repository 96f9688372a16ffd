"""Statistics of the randomized certificates, with the ecosystem's tools.

- ``clopper_pearson_lower``: one-sided Clopper-Pearson lower confidence bound (statsmodels).
- ``clopper_pearson_upper``: the matching one-sided upper bound.
- ``binomial_pvalue``: two-sided exact binomial test at p = 1/2 (``scipy.stats.binomtest``).
- ``binomial_pvalues``: the same test, vectorized over arrays of counts.

scipy.stats and statsmodels are imported where they are first used: together they take most of
a second to import, which every command-line call would pay otherwise.
"""
from __future__ import annotations

import numpy as np
import torch

ArrayLike = int | float | np.ndarray | torch.Tensor


def _numpy(v: ArrayLike) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def clopper_pearson_lower(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """Lower bound p_lower with P(p < p_lower) <= alpha (one-sided level ``alpha``).

    Equals ``proportion_confint(successes, trials, alpha=2 * alpha, method="beta")[0]``, the
    form of the authors' code; vectorized over arrays. 0 when successes == 0.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    k, n = _numpy(successes), _numpy(trials)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got successes={k!r}, trials={n!r}")
    from statsmodels.stats.proportion import proportion_confint

    low = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    return np.nan_to_num(np.asarray(low, dtype=np.float64), nan=0.0)


def clopper_pearson_upper(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """Upper bound p_upper with P(p > p_upper) <= alpha (one-sided level ``alpha``); 1 when successes == trials."""
    k, n = _numpy(successes), _numpy(trials)
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)


def binomial_pvalue(top: int, second: int) -> float:
    """Two-sided exact binomial test p-value of ``top`` successes in ``top + second`` trials at p = 1/2."""
    if top + second == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(top), int(top) + int(second), 0.5).pvalue)


def binomial_pvalues(top: ArrayLike, second: ArrayLike) -> np.ndarray:
    """``binomial_pvalue`` for arrays of counts: Bin(n, 1/2) is symmetric, so the two-sided
    p-value is min(1, 2 P(X <= min(top, second))) with n = top + second (1 when n = 0)."""
    from scipy.stats import binom

    a, b = _numpy(top).astype(np.int64), _numpy(second).astype(np.int64)
    n = a + b
    p = np.minimum(1.0, 2.0 * binom.cdf(np.minimum(a, b), n, 0.5))
    return np.where(n == 0, 1.0, p)
