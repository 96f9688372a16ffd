"""Exact operating characteristics of a sequential decision rule on a Bernoulli stream.

A level of :class:`fastsmooth.engine.Sequential` is decided from the hits of c_A among the
estimation samples only, at the looks of its schedule, and its first decision ends it. So for
one level and a true p_A = p, the distribution of the hit count among the streams still
undecided at each look follows from the previous one by convolution with Bin(m_k - m_{k-1}, p),
and the streams the decider settles at a look (its ``judge`` evaluated at every possible hit
count, the very code that runs on real counts) leave it. This gives, with no sampling error:

- P(certified): at p on the wrong side of the level's threshold, the exact false-certification
  rate of the rule (its validity); elsewhere its power;
- E[samples]: the expected estimation samples the level takes (selection samples excluded).

:func:`simulate` runs the same decider through ``update`` on simulated streams, vectorized over
streams, as a check that the exact computation describes the code path the engine runs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import binom

from fastsmooth.engine.deciders import Sequential

__all__ = ["Outcome", "exact", "one_level", "simulate"]


class Outcome(NamedTuple):
    """certified: P(the level is certified); given_up: P(given up before n_max); samples:
    E[estimation samples used]."""

    certified: float
    given_up: float
    samples: float


def one_level(n_max: int, alpha: float, p_star: float, rule: str = "hybrid", slots: int = 1, **kwargs) -> Sequential:
    """A decider of a single level whose threshold is ``p_star`` (certificate(p) = p, level p_star)."""
    return Sequential(0, n_max, alpha, [p_star], lambda p: np.asarray(p, dtype=np.float64), slots, rule=rule, **kwargs)


def exact(decider: Sequential, p: float, level: int = 0) -> Outcome:
    """The exact :class:`Outcome` of ``decider``'s level ``level`` on a stream of Bernoulli(p)
    hits (dynamic programming over the looks; see the module docstring)."""
    alive = np.ones(1)  # P(undecided with k hits so far), k = 0 .. m
    certified = given_up = samples = 0.0
    m = 0
    for look in decider.looks:
        step = look - m
        samples += step * float(alive.sum())
        alive = np.convolve(alive, binom.pmf(np.arange(step + 1), step, p))
        m = look
        # judge only the hit counts still holding mass (Bin's far tails underflow to exactly 0)
        k = np.flatnonzero(alive)
        yes, no = decider.judge(k, np.full(len(k), m))
        yes, no = yes[:, level], no[:, level] & ~yes[:, level]
        certified += float(alive[k[yes]].sum())
        if m >= decider.n_max:
            break
        given_up += float(alive[k[no]].sum())
        alive[k[yes | no]] = 0.0
    return Outcome(certified, given_up, samples)


def simulate(
    make: Callable[[int], Sequential], p: float, streams: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(certified [streams, L] bool, estimation samples [streams]) of ``make(streams)``, a decider
    with one slot per stream, fed through ``update`` the counts of ``streams`` independent
    Bernoulli(p) streams of class 0 (selection counts put class 0 first), every stream's looks
    in one call."""
    decider = make(streams)
    rng = np.random.default_rng(seed)
    n0 = decider.n0
    slots = np.arange(streams)
    selection = torch.zeros(streams, 2, dtype=torch.int64)
    selection[:, 0] = n0
    first = decider.update(slots.tolist(), selection, [n0] * streams)
    hits = np.zeros(streams, dtype=np.int64)
    used = np.zeros(streams, dtype=np.int64)
    active, m = slots, 0
    target = first[0] - n0
    while len(active):
        hits[active] += rng.binomial(target - m, p, size=len(active))
        m = target
        counts = torch.from_numpy(np.stack([n0 + hits[active], m - hits[active]], axis=1))
        nxt = decider.update(active.tolist(), counts, [n0 + m] * len(active))
        left = np.array([t is None for t in nxt])
        used[active[left]] = m
        active = active[~left]
        if len(active):
            target = next(t for t in nxt if t is not None) - n0
    return decider.certified.numpy().copy(), used
