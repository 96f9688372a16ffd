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
