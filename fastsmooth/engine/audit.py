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

:func:`exact_total` adds the selection of c_A (``Sequential.selection``, fixed or adaptive),
exactly, on a two-class stream: class A with probability p against everything else lumped into
one class, which A loses ties to. Lumping is the hard case of the sign test: the runner-up's
count is then all of the non-A votes, so a correct early stop is never easier, and a wrong
class j can lead and pass the test against the runner-up (whose count is >= A's) only on
streams where the lumped class passes against A too; so the two-class wrong-choice probability
bounds that of any split of the other classes, look by look. Selection at the looks s_1 <
... < s_J = n0 follows the same dynamic programming (its ``select`` evaluated at every count).
The estimation samples after the selection's stop are fresh draws whatever c_A and the stop
are, so with R = P(c_A = A) and W = 1 - R:

- P(certified) = R x P_est(certified | p) + W x P_est(certified | 1 - p): a wrong c_A has
  probability 1 - p, and certifying it at a level whose threshold p* exceeds 1 - p is a false
  certification, at most alpha (exactly: ``exact`` at 1 - p; not assumed 0);
- E[forwards] = E[selection samples] + R x E_est[samples | p] + W x E_est[samples | 1 - p].

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

__all__ = ["Outcome", "Total", "exact", "exact_total", "one_level", "simulate", "simulate_total"]


class Outcome(NamedTuple):
    """certified: P(the level is certified); given_up: P(given up before n_max); samples:
    E[estimation samples used]."""

    certified: float
    given_up: float
    samples: float


class Total(NamedTuple):
    """One level with the selection of c_A included (:func:`exact_total`). certified: P(the
    level is certified, for whichever class was chosen); wrong: P(c_A is not class A);
    selection: E[selection samples]; forwards: E[selection + estimation samples]."""

    certified: float
    wrong: float
    selection: float
    forwards: float


def one_level(
    n_max: int, alpha: float, p_star: float, rule: str = "hybrid", slots: int = 1, n0: int = 0, **kwargs
) -> Sequential:
    """A decider of a single level whose threshold is ``p_star`` (certificate(p) = p, level p_star)."""
    return Sequential(n0, n_max, alpha, [p_star], lambda p: np.asarray(p, dtype=np.float64), slots, rule=rule,
                      **kwargs)


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


def exact_total(decider: Sequential, p: float, level: int = 0) -> Total:
    """The exact :class:`Total` of ``decider``'s level ``level`` with its selection (n0 and
    ``selection`` of the decider) on a two-class stream, class A with probability p (see the
    module docstring). Class A has index 1, so it loses ties to the lumped class (index 0)."""
    alive = np.ones(1)  # P(still selecting with a votes of A so far), a = 0 .. s
    right = wrong = selection = 0.0
    s = 0
    for look in decider.selection_looks:
        step = look - s
        selection += step * float(alive.sum())
        if step:
            alive = np.convolve(alive, binom.pmf(np.arange(step + 1), step, p))
        s = look
        a = np.flatnonzero(alive)
        chosen = decider.select(np.stack([s - a, a], axis=1), np.full(len(a), s))
        right += float(alive[a[chosen == 1]].sum())
        wrong += float(alive[a[chosen == 0]].sum())
        alive[a[chosen >= 0]] = 0.0
    hit, miss = exact(decider, p, level), exact(decider, 1.0 - p, level)
    certified = right * hit.certified + wrong * miss.certified
    return Total(certified, wrong, selection, selection + right * hit.samples + wrong * miss.samples)


def simulate_total(
    make: Callable[[int], Sequential], p: float, streams: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(certified [streams, L] bool, c_A is wrong [streams] bool, units used, selection
    included [streams]) of ``make(streams)`` fed through ``update`` the counts of ``streams``
    independent two-class streams (class A = index 1 with probability p, as in
    :func:`exact_total`), each slot asking for its own unit totals (selection looks, then
    estimation looks), all slots in one call per round."""
    decider = make(streams)
    rng = np.random.default_rng(seed)
    counts = np.zeros((streams, 2), dtype=np.int64)
    drawn = np.zeros(streams, dtype=np.int64)
    target = np.full(streams, decider.start(0), dtype=np.int64)
    active = np.arange(streams)
    while len(active):
        step = target[active] - drawn[active]
        hits = rng.binomial(step, p)
        counts[active, 1] += hits
        counts[active, 0] += step - hits
        drawn[active] = target[active]
        nxt = decider.update(active.tolist(), torch.from_numpy(counts[active]), drawn[active].tolist())
        more = np.array([t is not None for t in nxt])
        target[active[more]] = [t for t in nxt if t is not None]
        active = active[more]
    return decider.certified.numpy().copy(), decider.prediction.numpy() != 1, drawn


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
