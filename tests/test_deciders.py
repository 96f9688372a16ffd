"""Deciders on count sequences: the exact early exit against brute force over every continuation,
and the sequential decision's schedule."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from fastsmooth.certificates import certify_counts
from fastsmooth.engine import Margins, margins, schedule


def simulate(decider, votes: torch.Tensor) -> tuple[int, list[bool], int]:
    """Feed the counts of growing prefixes of ``votes`` [T, K] to a one-slot decider."""
    target = decider.start(0)
    while True:
        counts = votes[:target].sum(0, keepdim=True)
        nxt = decider.update([0], counts, [target])[0]
        if nxt is None:
            return int(decider.prediction[0]), decider.certified[0].tolist(), target
        assert nxt > target
        target = nxt


def answer(counts: torch.Tensor, levels: list[int]) -> tuple[int, tuple[bool, ...]]:
    c, D = margins(counts[None])
    return int(c[0]), tuple(bool(D[0] >= L) for L in levels)


def continuations(K: int, R: int, threshold: bool):
    """The votes R remaining units can add, every possibility (top-1: one class per unit;
    threshold: any subset of classes per unit)."""
    if threshold:  # each class independently gets 0 .. R votes
        for added in itertools.product(range(R + 1), repeat=K):
            yield torch.tensor(added)
    else:  # compositions of R into K parts
        for cuts in itertools.combinations_with_replacement(range(K), R):
            yield torch.bincount(torch.tensor(cuts, dtype=torch.int64), minlength=K)


def earliest(votes: torch.Tensor, levels: list[int], threshold: bool) -> int:
    """The first prefix length after which every continuation gives the same answer."""
    T, K = votes.shape
    for t in range(T + 1):
        seen = {answer(votes[:t].sum(0) + rest, levels) for rest in continuations(K, T - t, threshold)}
        if len(seen) == 1:
            return t
    raise AssertionError("unreachable")


def random_votes(gen: random.Random, T: int, K: int, threshold: bool) -> torch.Tensor:
    bias = [gen.random() for _ in range(K)]
    rows = []
    for _ in range(T):
        if threshold:
            rows.append([int(gen.random() < b) for b in bias])
        else:
            rows.append(list(map(int, torch.eye(K, dtype=torch.int64)[gen.choices(range(K), weights=bias)[0]])))
    return torch.tensor(rows, dtype=torch.int64)


def test_margins_equal_the_spec_certificate():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        counts = torch.randint(0, 6, (1, 4), generator=gen)
        delta = int(torch.randint(0, 3, (1,), generator=gen))
        c, D = margins(counts)
        prediction, certified = certify_counts(counts, delta)
        assert int(c[0]) == int(prediction[0])
        assert bool(D[0] >= 2 * delta) == bool(certified[0]), (counts, delta)


def last_decides(threshold: bool, count: int, seed: int = 0) -> list[tuple[torch.Tensor, list[int]]]:
    """Vote sequences whose answer is open until the very last unit (brute force), with levels."""
    gen = random.Random(seed)
    found = []
    T, K = (7, 3) if threshold else (9, 3)
    while len(found) < count:
        votes = random_votes(gen, T, K, threshold)
        levels = sorted(gen.sample(range(0, 5), gen.randint(1, 2)))
        if earliest(votes, levels, threshold) == T:
            found.append((votes, levels))
    return found


CASES = {mode: last_decides(mode, 40, seed=int(mode)) for mode in (False, True)}


def mismatches(decider_cls, threshold: bool, min_saving: int = 1) -> list:
    """Cases where the decider's answer or stopping point differs from brute force: the first
    decided unit, or the end when deciding there would save fewer than ``min_saving`` units."""
    bad = []
    gen = random.Random(1 + int(threshold))
    cases = CASES[threshold] + [
        (random_votes(gen, 7 if threshold else 9, 3, threshold), sorted(gen.sample(range(0, 5), 2))) for _ in range(40)
    ]
    for votes, levels in cases:
        T = votes.shape[0]
        decider = decider_cls(T, levels, 1, predict=True, min_saving=min_saving)
        prediction, certified, stop = simulate(decider, votes)
        full = answer(votes.sum(0), levels)
        first = earliest(votes, levels, threshold)
        if (prediction, tuple(certified)) != full or stop != (first if T - first >= min_saving else T):
            bad.append((votes, levels, stop))
    return bad


@pytest.mark.parametrize("threshold", [False, True], ids=["top1", "threshold"])
def test_early_exit_is_exact_and_stops_at_the_first_decided_unit(threshold):
    assert not mismatches(Margins, threshold)


def test_cases_include_ties_at_exactly_the_level_in_both_orders_and_multi_votes():
    kinds = set()
    for threshold, cases in CASES.items():
        for votes, levels in cases:
            counts = votes.sum(0)
            c, D = margins(counts[None])
            order = torch.argsort(-counts, stable=True)
            r = int(order[1]) if int(order[0]) == int(c[0]) else int(order[0])
            for L in levels:
                if int(counts[c] - counts[r]) == L and L > 0:
                    kinds.add(("tie", "c<r" if int(c[0]) < r else "c>r"))
            if threshold and bool((votes[-1].sum() > 1).item()):
                kinds.add(("several votes in the last unit",))
    assert {("tie", "c<r"), ("tie", "c>r"), ("several votes in the last unit",)} <= kinds


@pytest.mark.parametrize("min_saving", [2, 3, 5])
@pytest.mark.parametrize("threshold", [False, True], ids=["top1", "threshold"])
def test_looks_that_could_save_little_are_skipped_with_the_same_answers(threshold, min_saving):
    assert not mismatches(Margins, threshold, min_saving)


def test_min_saving_skips_the_looks_near_the_end():
    assert Margins(28, [12], 1).min_saving == 1  # by default every look that could save a unit
    # a unanimous class 0 over 28 units: the prediction is decided after 14 (14 - 0 >= 14
    # remaining), the level 12 (D - R >= 12) after 20, the level 24 after 26
    votes = torch.zeros(28, 2, dtype=torch.int64)
    votes[:, 0] = 1
    assert simulate(Margins(28, [12], 1), votes)[2] == 20
    assert simulate(Margins(28, [12], 1, min_saving=3), votes)[2] == 20  # 8 left >= 3: looked at
    assert simulate(Margins(28, [24], 1), votes)[2] == 26
    assert simulate(Margins(28, [24], 1, min_saving=3), votes)[2] == 28  # 2 left < 3: runs to the end
    assert simulate(Margins(28, [24], 1, min_saving=2), votes)[2] == 26  # 2 left >= 2: looked at


class Early(Margins):
    slack = staticmethod(lambda R: R - 1)  # the bound one vote too tight: stops too soon


class Late(Margins):
    slack = staticmethod(lambda R: R + 1)  # one vote too loose: stops later than it could


@pytest.mark.parametrize("variant", [Early, Late])
@pytest.mark.parametrize("threshold", [False, True], ids=["top1", "threshold"])
def test_a_stopping_bound_off_by_one_is_caught(variant, threshold):
    assert mismatches(variant, threshold)


def test_no_levels_and_prediction_only():
    votes = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]])
    prediction, certified, stop = simulate(Margins(5, [], 1), votes)
    assert (prediction, certified, stop) == (0, [], 3)  # 3 - 0 > 2 remaining: class 0 wins


def test_schedule():
    assert schedule(10_000, 100, 2.0) == [100, 200, 400, 800, 1600, 3200, 6400, 10_000]
    assert schedule(50, 100, 2.0) == [50]
    with pytest.raises(ValueError, match="growth"):
        schedule(100, 10, 1.0)


def test_kt_mixture_equals_its_integral():
    """The closed form (incomplete beta functions) against numerical integration of the
    truncated Beta(1/2, 1/2) mixture of likelihood ratios, both sides."""
    import numpy as np
    from scipy.integrate import quad
    from scipy.stats import beta

    from fastsmooth.engine.deciders import kt_log_mixture

    for k, m, p0 in [(0, 1, 0.5), (9, 10, 0.5), (40, 50, 0.7), (95, 100, 0.9), (3, 60, 0.2), (200, 200, 0.99)]:
        for above in (True, False):
            lo, hi = (p0, 1.0) if above else (0.0, p0)
            ratio = lambda q: (q / p0) ** k * ((1 - q) / (1 - p0)) ** (m - k) * beta.pdf(q, 0.5, 0.5)
            want = quad(ratio, lo, hi, limit=200, points=[k / m])[0] / (beta.cdf(hi, 0.5, 0.5) - beta.cdf(lo, 0.5, 0.5))
            got = float(np.exp(kt_log_mixture(np.array(k), np.array(m), np.array(p0), above=above)))
            assert got == pytest.approx(want, rel=1e-6), (k, m, p0, above)


def test_thresholds_are_the_least_p_reaching_each_level():
    import numpy as np
    from scipy.stats import norm

    from fastsmooth.engine.deciders import _thresholds

    sigma = 0.25
    radius = lambda p: np.where(p < 0.5, -np.inf, sigma * norm.ppf(p))
    levels = np.array([0.0, 0.25, 0.75, 10.0, -1.0])
    p_star = _thresholds(levels, radius)
    assert p_star[3] == 1.0 and p_star[4] == 0.5  # only p = 1 reaches 10; -1 needs p >= 1/2 (below: -inf)
    assert _thresholds(np.array([1.5]), lambda p: p)[0] == np.inf  # no p reaches it
    assert _thresholds(np.array([-0.5]), lambda p: p)[0] == 0.0  # reached without data
    for t, p in zip(levels[:3], p_star[:3]):
        assert radius(np.array([p]))[0] >= t > radius(np.array([np.nextafter(p, 0)]))[0]
    assert p_star[0] == 0.5 and p_star[1] == pytest.approx(norm.cdf(1.0), abs=1e-15)


def test_hybrid_decisions_are_final_and_give_up_false_runs_to_n_max():
    """Certified at a look stays certified (the mixture is valid at every look); a level given
    up stays given up; give_up=False never gives up."""
    import numpy as np

    from fastsmooth.engine import Sequential

    ident = lambda p: np.asarray(p, dtype=np.float64)
    d = Sequential(0, 1000, 0.01, [0.5, 0.99], ident, 1)
    d.update([0], torch.tensor([[0, 0]]), [0])
    # 16 hits of 16: the mixture rejects p <= 1/2; 0.99 stays open
    assert d.update([0], torch.tensor([[16, 0]]), [16]) == [d.looks[1]]
    assert d._yes[0].tolist() == [True, False]
    # then a run of misses: level 0.99 is given up (at 64, a look of both schedules), 0.5 stays
    # certified though 30 of 64 would not certify it now; the image is done
    assert 64 in d.looks and d.update([0], torch.tensor([[30, 34]]), [64]) == [None]
    assert d.certified[0].tolist() == [True, False] and int(d.prediction[0]) == 0
    keep = Sequential(0, 1000, 0.01, [0.99], ident, 1, give_up=False)
    keep.update([0], torch.tensor([[0, 0]]), [0])
    assert keep.update([0], torch.tensor([[0, 16]]), [16]) == [keep.looks[1]]
    with pytest.raises(ValueError, match="rule"):
        Sequential(0, 10, 0.01, [0.5], ident, 1, rule="betting")
