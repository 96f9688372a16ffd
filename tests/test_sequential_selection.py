"""Adaptive selection of c_A in ``fastsmooth.engine.Sequential``.

- ``selection="fixed"`` is the decider as it was before adaptive selection, bit for bit: the
  rule before is kept here as ``Before`` (its ``start`` and ``update``, unchanged) and both run
  on the same multi-class streams, directly and through ``Smooth.decide_batch``.
- A slot whose selection stops at 16 samples counts its estimation hits from unit 16 on (no
  sample serves both), on counts built so that reusing the selection samples changes the answer.
- Validity: the exact false-certification rate with selection included (``exact_total``) stays
  within alpha at the boundary; a simulation through ``update`` (every slot asking for its own
  unit totals) agrees with it; the exact computation still catches the invalid variants; the
  end-to-end test of tests/test_sequential_validity.py runs the default (adaptive) decider.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm

import fastsmooth.smoothing.sequential as sequential_module
from fastsmooth import Smooth
from fastsmooth.engine import Sequential
from fastsmooth.engine.audit import exact, exact_total, one_level, simulate_total
from fastsmooth.engine.deciders import selection_schedule, sign_test_pvalues


class Before(Sequential):
    """The decider before adaptive selection: ``start`` and ``update`` as they were."""

    def start(self, slot: int) -> int:
        return self.n0

    def update(self, slots, counts, units):
        rows = np.asarray(slots, dtype=np.int64)
        counts_a = counts.numpy()
        m = np.asarray(units, dtype=np.int64) - self.n0
        nxt = np.full(len(rows), -1, dtype=np.int64)
        fresh = m == 0
        if fresh.any():
            c = counts_a[fresh].argmax(axis=1)
            self._choice[rows[fresh]] = c
            self._before[rows[fresh]] = counts_a[fresh][np.arange(len(c)), c]
            nxt[fresh] = self.n0 + self.looks[0]
        look = ~fresh
        if look.any():
            at, m_at = rows[look], m[look]
            hits = counts_a[look][np.arange(len(at)), self._choice[at]] - self._before[at]
            yes, no = self.judge(hits, m_at)
            if self.rule == "hybrid":
                decided_yes, decided_no = self._yes[at], self._no[at]
                yes = decided_yes | (yes & ~decided_no)
                no = decided_no | (no & ~decided_yes)
            self._yes[at], self._no[at] = yes, no
            done = (m_at >= self.n_max) | (yes | no).all(axis=1)
            finished = at[done]
            self._prediction[finished] = self._choice[finished]
            self._certified[finished] = yes[done]
            later = self._looks[np.minimum(np.searchsorted(self._looks, m_at, side="right"), len(self._looks) - 1)]
            nxt[look] = np.where(done, -1, self.n0 + later)
        return [None if t < 0 else t for t in nxt.tolist()]


def identity(p: np.ndarray) -> np.ndarray:
    return np.asarray(p, dtype=np.float64)


def drive(decider: Sequential, streams: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, certified, units used) of ``decider`` fed the prefix counts of ``streams``
    [S, T] (class per unit), each slot at the unit totals it asks for, all slots in one call
    per round (the engine's calls)."""
    S = len(streams)
    prefix = np.concatenate([np.zeros((S, 1, K), dtype=np.int64),
                             np.cumsum(np.eye(K, dtype=np.int64)[streams], axis=1)], axis=1)
    target = np.array([decider.start(s) for s in range(S)])
    active = np.arange(S)
    while len(active):
        counts = torch.from_numpy(prefix[active, target[active]])
        nxt = decider.update(active.tolist(), counts, target[active].tolist())
        more = np.array([t is not None for t in nxt])
        target[active[more]] = [t for t in nxt if t is not None]
        active = active[more]
    return decider.prediction.numpy().copy(), decider.certified.numpy().copy(), target


def mixed_streams(S: int, T: int, K: int, seed: int) -> np.ndarray:
    """Streams of K classes whose probabilities range from near ties to clear leaders."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(K, 0.3), size=S)
    return np.stack([rng.choice(K, size=T, p=p) for p in probs])


@pytest.mark.parametrize("rule", ["hybrid", "union"])
def test_fixed_selection_is_the_decider_before_bit_for_bit(rule):
    n0, n_max, K, S = 100, 1500, 3, 300
    streams = mixed_streams(S, n0 + n_max, K, seed=11)
    levels = [0.5, 0.7, 0.9]
    before = drive(Before(n0, n_max, 0.01, levels, identity, S, rule=rule), streams, K)
    fixed = drive(Sequential(n0, n_max, 0.01, levels, identity, S, rule=rule, selection="fixed"), streams, K)
    for a, b in zip(before, fixed):
        np.testing.assert_array_equal(a, b)
    adaptive = drive(Sequential(n0, n_max, 0.01, levels, identity, S, rule=rule, selection="adaptive"), streams, K)
    assert (adaptive[2] < before[2]).any()  # the comparison is not vacuous: adaptive selection differs


class OnePixel(torch.nn.Module):
    """Class 0 iff the noised pixel is below the image's value: p_A = Phi(x / sigma)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.reshape(x.shape[0], -1)
        return torch.stack([v[:, 1] - v[:, 0], v[:, 0] - v[:, 1]], dim=1)


class Fixed(Sequential):
    """``Sequential(..., selection="fixed")`` wherever the smoothers build one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "selection": "fixed"})


def test_fixed_selection_through_decide_batch_is_the_decider_before(monkeypatch):
    """Same samples (seeded streams), same answers, same forwards through the engine."""
    sigma = 0.2
    smooth = Smooth(OnePixel(), 2, sigma, backend="cpu")
    # pixel 1 holds t with p_A = Phi(t): from near ties to clear; pixel 0 is 0 (noised too)
    t = torch.tensor(norm.ppf(np.linspace(0.52, 0.999, 24)), dtype=torch.float32)
    x = torch.zeros(24, 1, 1, 2)
    x[:, 0, 0, 1] = t * np.sqrt(2) * sigma  # the difference of two noised pixels has sd sqrt(2) sigma

    def run(decider):
        monkeypatch.setattr(sequential_module, "Sequential", decider)
        return smooth.decide_batch(x, [0.1, 0.5], n0=100, n_max=2000, alpha=0.01, seed=4)

    before = run(Before)
    fixed = run(Fixed)
    assert torch.equal(before.prediction, fixed.prediction) and torch.equal(before.certified, fixed.certified)
    assert torch.equal(before.forwards, fixed.forwards)
    adaptive = run(Sequential)  # the default
    assert int(adaptive.forwards.min()) < 100  # some images stopped selecting before n0


def test_estimation_samples_start_after_the_slots_own_selection():
    """16 votes for class 0 end selection at 16 (sign test 2^-16); then 16 votes for class 1.
    Counted from unit 16, c_A = 0 has 0 hits of 16 and level 1/2 is given up; counted from unit
    0 (the selection samples reused) it would have 16 of 16 and be certified."""
    d = Sequential(100, 1000, 0.01, [0.5], identity, 2)
    assert d.start(0) == 16
    # slot 0 stops selecting at 16; slot 1 (an 8 / 8 tie) looks again at 32
    nxt = d.update([0, 1], torch.tensor([[16, 0], [8, 8]]), [16, 16])
    assert nxt == [16 + d.looks[0], 32] and int(d.selected[0]) == 16 and int(d._choice[1]) == -1
    assert d.looks[0] == 16
    assert d.update([0], torch.tensor([[16, 16]]), [32]) == [None]
    assert not bool(d.certified[0, 0]) and int(d.prediction[0]) == 0
    reused = Sequential(100, 1000, 0.01, [0.5], identity, 1)  # the same judge on the reused counts
    yes, _ = reused.judge(np.array([16]), np.array([16]))
    assert yes[0, 0]
    # slot 1: 30 of 32 for class 1 stops at 32; its estimation starts there (m = units - 32)
    assert d.update([1], torch.tensor([[2, 30]]), [32]) == [32 + d.looks[0]]
    assert int(d.selected[1]) == 32 and int(d._choice[1]) == 1
    d.update([1], torch.tensor([[2, 30 + 16]]), [48])  # 16 of 16 fresh hits certify 1/2
    assert bool(d.certified[1, 0]) and int(d.prediction[1]) == 1


def test_selection_schedule_sign_test_and_arguments():
    assert selection_schedule(100) == [16, 32, 64, 100]
    assert selection_schedule(64) == [16, 32, 64] and selection_schedule(16) == [16] and selection_schedule(5) == [5]
    n1, n2 = np.array([15, 14, 0, 26, 25]), np.array([1, 2, 0, 6, 7])
    np.testing.assert_allclose(sign_test_pvalues(n1, n2), [binom.sf(k - 1, k + j, 0.5) for k, j in zip(n1, n2)])
    d = Sequential(100, 1000, 0.001, [0.5], identity, 1)
    # at 16: 15 of 16 passes at 0.001 (p = 2.6e-4), 14 of 16 does not (2.1e-3); at n0 the leader, ties to 0
    assert d.select(np.array([[1, 15], [2, 14], [50, 50]]), np.array([16, 16, 100])).tolist() == [1, -1, 0]
    # the runner-up counts against the leader, a third class does not: 14 vs 1 passes (4.9e-4),
    # 14 vs 2 does not (2.1e-3)
    assert d.select(np.array([[14, 1, 1], [14, 2, 0]]), np.array([16, 16])).tolist() == [0, -1]
    assert Sequential(100, 1000, 0.001, [0.5], identity, 1, rule="union").selection == "fixed"
    with pytest.raises(ValueError, match="selection"):
        Sequential(100, 1000, 0.001, [0.5], identity, 1, selection="early")
    with pytest.raises(ValueError, match="selection_alpha"):
        Sequential(100, 1000, 0.001, [0.5], identity, 1, selection_alpha=0.0)


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_exact_false_certification_rate_with_adaptive_selection_is_within_alpha(alpha):
    """At p_A = p* >= 1/2 both classes (A at p*, the rest at 1 - p* <= p*) lie in the null,
    so every certification, of whichever class selection chose, is false."""
    for p_star in (0.5, 0.9, 0.99):
        decider = one_level(3200, alpha, p_star, n0=100)  # hybrid, adaptive selection
        assert decider.selection == "adaptive"
        at = exact_total(decider, p_star)
        assert 0.25 * alpha < at.certified <= alpha, (p_star, at)
        if p_star > 0.5:  # (at p* = 1/2, p_A = 0.49 leaves the other class at 0.51: not a null)
            assert exact_total(decider, p_star - 0.01).certified <= at.certified


def test_exact_selection_outcome_by_enumeration():
    """``exact_total``'s selection part against a brute-force sum over the first n0 votes of a
    short schedule (looks 16 and 20)."""
    p, n0 = 0.7, 20
    d = one_level(200, 0.01, 0.6, n0=n0)
    d.selection_looks = [16, 20]
    got = exact_total(d, p)
    right = wrong = samples = 0.0
    for a16 in range(17):  # A votes among the first 16, then among the next 4
        w16 = binom.pmf(a16, 16, p)
        c16 = d.select(np.array([[16 - a16, a16]]), np.array([16]))[0]
        if c16 >= 0:
            right, wrong, samples = right + w16 * (c16 == 1), wrong + w16 * (c16 == 0), samples + 16 * w16
            continue
        for a4 in range(5):
            w = w16 * binom.pmf(a4, 4, p)
            c = d.select(np.array([[20 - a16 - a4, a16 + a4]]), np.array([20]))[0]
            right, wrong, samples = right + w * (c == 1), wrong + w * (c == 0), samples + 20 * w
    assert got.wrong == pytest.approx(wrong, abs=1e-12) and got.selection == pytest.approx(samples, abs=1e-9)
    hit, miss = exact(d, p), exact(d, 1 - p)
    assert got.certified == pytest.approx(right * hit.certified + wrong * miss.certified, abs=1e-12)
    assert got.forwards == pytest.approx(samples + right * hit.samples + wrong * miss.samples, abs=1e-9)


def test_exact_total_describes_the_deciders_code_path():
    """20,000 two-class streams through ``update``, each slot at its own unit totals: the
    certification rate, the wrong-choice rate and the mean forwards agree with ``exact_total``."""
    n_max, alpha, p_star, streams = 1000, 0.05, 0.8, 20_000
    want = exact_total(one_level(n_max, alpha, p_star, n0=100), p_star)
    certified, wrong, used = simulate_total(lambda s: one_level(n_max, alpha, p_star, slots=s, n0=100), p_star,
                                            streams, seed=3)
    assert binomtest(int(certified.sum()), streams, want.certified).pvalue > 1e-3
    assert abs(used.mean() - want.forwards) < 4 * used.std() / np.sqrt(streams)
    assert used.min() == 16 + 16  # stopped at the first selection look, then decided at the first mixture look
    near = exact_total(one_level(n_max, alpha, 0.6, n0=100), 0.55)  # near a tie: wrong choices are common
    certified, wrong, used = simulate_total(lambda s: one_level(n_max, alpha, 0.6, slots=s, n0=100), 0.55,
                                            streams, seed=4)
    assert binomtest(int(wrong.sum()), streams, near.wrong).pvalue > 1e-3
    assert abs(used.mean() - near.forwards) < 4 * used.std() / np.sqrt(streams)


class Naive(Sequential):
    """The fixed-n Clopper-Pearson test at level alpha at every look (invalid)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("give_up", False)
        super().__init__(*args, **{**kwargs, "rule": "union"})
        self.look_alpha = {look: self.alpha for look in self.looks}


class Twice(Sequential):
    """The hybrid rule spending alpha twice (invalid)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "rule": "hybrid"})
        self.mixture_log_bound = float(np.log(1 / self.alpha))
        self.look_alpha = {look: self.alpha for look in self.look_alpha}


@pytest.mark.parametrize("variant", [Naive, Twice])
@pytest.mark.parametrize("selection", ["fixed", "adaptive"])
def test_the_exact_audit_with_selection_catches_invalid_variants(variant, selection):
    alpha, p_star = 0.01, 0.8
    decider = variant(100, 3200, alpha, [p_star], identity, 1, selection=selection)
    assert exact_total(decider, p_star).certified > 1.2 * alpha
