"""Deciders: the certificate's question, asked of each image's counts after its units have run.

A decider says how many units an image needs first (``start``), and after they have run,
given its counts, either retires it (``None``) or asks for more (a larger unit total).
Answers stay with the decider; the certificate functions in ``fastsmooth.certificates``
compute them, unchanged.

- :class:`Everything`: every unit of a fixed set (full counts, today's certificates).
- :class:`Margins`: exact early exit of the deterministic smoothers at given levels.
- :class:`Sequential`: anytime-valid decisions of the sampling smoothers at given levels.
- :class:`SequentialPredict`: Cohen et al.'s PREDICT (binomial test), anytime-valid.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from fastsmooth.certificates.counts import top_two
from fastsmooth.stats import binomial_pvalues, clopper_pearson_lower, clopper_pearson_upper


class Decider(Protocol):
    # False: ``update`` gets counts=None; True: counts on the CPU; "device": on the tally's device
    reads_counts: bool | str

    def rows_hint(self, slots: int) -> int:
        """An upper bound on the rows that will be tallied for ``slots`` slots (sizes buffers)."""
        ...

    def start(self, slot: int) -> int:
        """The units ``slot`` needs before its first look."""
        ...

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        """For each slot (its counts [K] on the CPU, ``units`` run so far): None when it is done,
        else the unit total it needs before the next look."""
        ...


class Everything:
    """Run all ``total`` units of every slot (or ``total[slot]``); no look at the counts."""

    reads_counts = False

    def __init__(self, total: int | Sequence[int]) -> None:
        self.total = total

    def rows_hint(self, slots: int) -> int:
        return slots * self.total if isinstance(self.total, int) else sum(self.total)

    def start(self, slot: int) -> int:
        return self.total if isinstance(self.total, int) else self.total[slot]

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        return [None] * len(slots)


class TwoStage:
    """Cohen et al.'s fixed-n CERTIFY: ``n0`` selection units, then ``n`` estimation units of the
    same stream. ``selection[slot]`` holds the counts of the first n0 units (the tally's row minus
    it is the estimation counts). The snapshot stays on the device: no wait for it mid-run."""

    reads_counts = "device"

    def __init__(self, n0: int, n: int, slots: int, num_classes: int) -> None:
        self.n0, self.n = n0, n
        self.shape = (slots, num_classes)
        self.selection = torch.zeros(self.shape, dtype=torch.int64)

    def rows_hint(self, slots: int) -> int:
        return slots * (self.n0 + self.n)

    def start(self, slot: int) -> int:
        return self.n0

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        assert counts is not None
        out: list[int | None] = []
        if self.selection.device != counts.device:
            self.selection = self.selection.to(counts.device)
        for i, slot in enumerate(slots):
            if units[i] == self.n0:
                self.selection[slot] = counts[i]
                out.append(self.n0 + self.n)
            else:
                out.append(None)
        return out


def margins(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(leader c [S], D [S]) with D = min over j != c of n_c - n_j - [j < c].

    c is the argmax (smallest index on ties), so D >= 0. Certified against a level of L votes
    (L = 2 * Delta for patches, 2k for DSSN at k / q) iff D >= L: this is the spec's
    ``n_c - n_r > 2 Delta, or == 2 Delta and c < r`` for every runner-up r at once, and L = 0
    says c is the prediction.
    """
    c, D = host_margins(counts.cpu().numpy())
    return torch.from_numpy(c), torch.from_numpy(D)


def host_margins(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`margins` of int64 counts [S, K] held on the host, in NumPy (a look at a few
    hundred images costs tens of microseconds; the same in torch costs a dispatch per op)."""
    S, K = counts.shape
    rows = np.arange(S)
    c = counts.argmax(axis=1)  # the first (smallest) index on ties
    d = counts[rows, c][:, None] - counts - (np.arange(K)[None, :] < c[:, None])
    d[rows, c] = np.iinfo(np.int64).max
    return c, d.min(axis=1) if K > 1 else np.zeros(S, dtype=np.int64)


class Margins:
    """Exact early exit for deterministic smoothers (every one of ``total`` units votes once).

    Each remaining unit moves any margin n_c - n_j by at most one vote (under threshold
    voting a unit adds at most one vote to each class; under top-1 exactly one in all), so
    with R units left the final D of the leader lies in [D - R, D + R] and no other class can
    reach more than D + R. Level L is decided once ``D - R >= L`` (certified whatever comes)
    or ``D + R < L`` (no class can be certified); the prediction once ``D - R >= 0``. Any
    schedule of looks gives the answers of the full enumeration, bit for bit; the schedule
    only decides how many units run.

    The looks: the next one is placed at the first unit count where a decision is possible
    at all (D - R and D + R move by at most 2 per unit), unless a decision there could save
    fewer than ``min_saving`` units; then the image runs to the end. The default, 1, looks
    wherever a unit could be saved: the engine makes the looks of many images in one call
    (``fastsmooth.engine.loop``), so a look costs far less than a unit's forward row. On the
    demo's column network (28 units, 200 digits, 5 x 5) certify used 25.9 units per image with
    1, 26.3 with 3 (one look fewer per image in the last rounds) and 28 with 7.

    ``levels``: thresholds L >= 0 in votes; ``predict``: the prediction must be decided too.
    Results: ``prediction`` [S] (-1 where undecided), ``certified`` [S, len(levels)].
    """

    reads_counts = True

    def __init__(
        self, total: int, levels: Sequence[int], slots: int, predict: bool = True, min_saving: int = 1
    ) -> None:
        self.total = total
        self.levels = np.asarray([int(v) for v in levels], dtype=np.int64)
        self.predict = predict
        self.min_saving = max(1, int(min_saving))
        self._prediction = np.full(slots, -1, dtype=np.int64)
        self._certified = np.zeros((slots, len(self.levels)), dtype=np.bool_)
        self.prediction = torch.from_numpy(self._prediction)  # views: the looks write the arrays
        self.certified = torch.from_numpy(self._certified)
        # from zero counts (D = 0, R = total): the first unit count at which a decision is possible
        self._start = int(self._next(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))[0])

    def rows_hint(self, slots: int) -> int:
        return slots * self.total

    def start(self, slot: int) -> int:
        return self._start

    @staticmethod
    def slack(R: np.ndarray) -> np.ndarray:
        """How far R remaining units can move the leader's margin D, either way."""
        return R

    def _next(self, D: np.ndarray, units: np.ndarray) -> np.ndarray:
        """[S]: the unit count of the next look of undecided images (D at ``units`` run)."""
        R = self.total - units
        low, high = D - self.slack(R), D + self.slack(R)
        L = self.levels[None, :]
        undecided = ~((low[:, None] >= L) | (high[:, None] < L))
        # "certified" needs low to rise to L, "not" needs high to fall below L: each moves <= 2 per unit
        to_yes = (L - low[:, None] + 1) // 2
        to_no = (high[:, None] - L + 2) // 2
        need = np.where(undecided, np.minimum(to_yes, to_no), 0)
        need = need.max(axis=1) if need.shape[1] else np.zeros_like(D)
        if self.predict:
            need = np.maximum(need, np.where(low < 0, (1 - low) // 2, 0))
        look = np.minimum(self.total, units + np.maximum(need, 1))
        return np.where(self.total - look < self.min_saving, self.total, look)

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        assert counts is not None
        c, D = host_margins(counts.numpy())
        units_a = np.asarray(units, dtype=np.int64)
        R = self.total - units_a
        low, high = D - self.slack(R), D + self.slack(R)
        decided = ((low[:, None] >= self.levels[None, :]) | (high[:, None] < self.levels[None, :])).all(axis=1)
        if self.predict:
            decided &= low >= 0
        decided |= R == 0
        done = np.asarray(slots, dtype=np.int64)[decided]
        self._prediction[done] = np.where((low >= 0) | (R == 0), c, -1)[decided]
        self._certified[done] = (low[:, None] >= self.levels[None, :])[decided]
        return [None if d else n for d, n in zip(decided.tolist(), self._next(D, units_a).tolist())]


#: Defaults of the sequential deciders' schedule of looks, chosen on the demo digits'
#: sample streams (README, "Adaptive certification"): looks 64, 96, 144, ... (x 1.5) up to
#: n_max, half of alpha at n_max and the other half split evenly over the earlier looks.
FIRST_LOOK = 64
GROWTH = 1.5
FINAL_SHARE = 0.5


class _Looks:
    """The schedule of looks of the sequential deciders (``schedule``) and each look's share of
    alpha (``look_alphas``): ``looks`` [m_1 < ... < m_K = n_max], ``look_alpha`` {m_k: alpha_k}."""

    def _init_looks(self, n_max: int, alpha: float, first: int, growth: float, final_share: float) -> None:
        self.looks = schedule(n_max, first, growth)
        self.look_alpha = dict(zip(self.looks, look_alphas(len(self.looks), alpha, final_share)))

    def _after(self, m: int) -> int:
        """The first look past ``m`` samples (m < n_max)."""
        return next(t for t in self.looks if t > m)


def top_two_pvalues(counts: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """(top class [S], p-value of the two-sided binomial test of the top two counts at p = 1/2
    [S]) of counts [S, K] on the host: Cohen et al.'s PREDICT test."""
    top, second = top_two(counts)
    n1 = counts.gather(1, top[:, None])[:, 0].numpy()
    n2 = counts.gather(1, second[:, None])[:, 0].numpy()
    return top, binomial_pvalues(n1, n2)


class Sequential(_Looks):
    """Anytime-valid decisions of a sampling smoother: n0 samples choose the class c_A, then
    estimation samples are looked at on a geometric schedule and the image retires as soon as
    every level is decided.

    Confidence sequence: a union bound over the finite schedule of looks m_1 < m_2 < ... < m_K
    = n_max (m_1 = ``first``, then x ``growth``), look k a Clopper-Pearson interval at level
    alpha_k with sum_k alpha_k = alpha: P(p_A outside the interval at some look) <= alpha,
    whatever the stopping rule (the fixed-n Clopper-Pearson test repeated at every look without
    the split is not valid, see tests/test_sequential_validity.py). ``final_share`` of alpha
    goes to the last look (n_max), the rest is split evenly over the others: images that need
    all n_max samples are those near the threshold, where the fixed-n test decides with the
    whole alpha, so giving the last look half of it keeps their answers within ln 2 of the
    fixed-n test's, while images far from the threshold (most of them) retire at an early look
    at the price of alpha / (2 (K - 1)).

    Chosen over a betting or a conjugate-mixture (Robbins) confidence sequence because it is
    exact for any n (no asymptotics), needs no prior, reuses the certificate functions, and on
    the demo digits' sample streams it used fewer samples than a beta-binomial mixture at the
    same alpha (README): the mixture pays about ln(m) at every look, the union bound ln(K).

    A level is certified when ``certificate(lower) >= level`` and given up when
    ``certificate(upper) < level`` (no later look could certify it at this confidence; giving up
    never certifies, so it does not touch validity). ``certificate`` maps p bounds (np.ndarray) to
    certificates (radii / patch sizes) and must not decrease in p. ``give_up=False`` never stops
    an image for a level it cannot certify (it then runs to n_max).
    """

    reads_counts = True

    def __init__(
        self,
        n0: int,
        n_max: int,
        alpha: float,
        levels: Sequence[float],
        certificate: Callable[[np.ndarray], np.ndarray],
        slots: int,
        first: int = FIRST_LOOK,
        growth: float = GROWTH,
        give_up: bool = True,
        final_share: float = FINAL_SHARE,
    ) -> None:
        self.n0, self.n_max, self.alpha, self.give_up = n0, n_max, alpha, give_up
        self.levels = np.asarray([float(v) for v in levels], dtype=np.float64)
        self.certificate = certificate
        self._init_looks(n_max, alpha, first, growth, final_share)
        self.choice = torch.full((slots,), -1, dtype=torch.int64)
        self.selection: dict[int, torch.Tensor] = {}
        self.prediction = torch.full((slots,), -1, dtype=torch.int64)
        self.certified = torch.zeros(slots, len(self.levels), dtype=torch.bool)
        self.p_lower = torch.zeros(slots, dtype=torch.float64)

    def rows_hint(self, slots: int) -> int:
        return slots * (self.n0 + self.n_max)

    def start(self, slot: int) -> int:
        return self.n0

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        assert counts is not None
        out: list[int | None] = [None] * len(slots)
        looking = []  # rows of slots past selection: decided together (one vectorized bound per look)
        for i, slot in enumerate(slots):
            if slot not in self.selection:  # the n0 selection samples have run
                self.selection[slot] = counts[i].clone()
                self.choice[slot] = counts[i].argmax()  # smallest index on ties
                out[i] = self.n0 + self.looks[0]
            else:
                looking.append(i)
        if not looking:
            return out
        chosen = [slots[i] for i in looking]
        m = np.array([int(units[i]) - self.n0 for i in looking])
        c = self.choice[chosen]
        before = torch.stack([self.selection[s] for s in chosen]).gather(1, c[:, None])[:, 0]
        hits = (counts[looking].gather(1, c[:, None])[:, 0] - before).numpy()
        lower, upper = np.empty(len(m)), np.empty(len(m))
        for look in np.unique(m):  # one vectorized bound per look (its own alpha)
            at = m == look
            lower[at] = clopper_pearson_lower(hits[at], m[at], self.look_alpha[int(look)])
            upper[at] = clopper_pearson_upper(hits[at], m[at], self.look_alpha[int(look)])
        yes = self.certificate(lower)[:, None] >= self.levels[None, :]
        no = self.certificate(upper)[:, None] < self.levels[None, :]
        if not self.give_up:  # run every image to n_max unless it is certified at every level
            no[:] = False
        done = (m >= self.n_max) | (yes | no).all(axis=1)
        for j, i in enumerate(looking):
            slot = slots[i]
            if done[j]:
                self.prediction[slot] = self.choice[slot]
                self.certified[slot] = torch.from_numpy(yes[j])
                self.p_lower[slot] = float(lower[j])
            else:
                out[i] = self.n0 + self._after(m[j])
        return out


class SequentialPredict(_Looks):
    """Cohen et al.'s PREDICT, anytime-valid: the two-sided binomial test of the top two counts
    at p = 1/2, at every look of the schedule of :class:`Sequential` with the same split of
    alpha over the looks. Returns the top class at the first look whose p-value is <= that
    look's alpha; abstains (-1) at n_max. P(returning a class other than g(x)) <= alpha: each
    look's test errs with probability <= its alpha_k (Cohen et al.'s argument), and the looks'
    alphas sum to alpha. Images near a tie run to n_max, as they would at a fixed n.
    """

    reads_counts = True

    def __init__(
        self,
        n_max: int,
        alpha: float,
        slots: int,
        first: int = FIRST_LOOK,
        growth: float = GROWTH,
        final_share: float = FINAL_SHARE,
    ) -> None:
        self.n_max, self.alpha = n_max, alpha
        self._init_looks(n_max, alpha, first, growth, final_share)
        self.prediction = torch.full((slots,), -1, dtype=torch.int64)

    def rows_hint(self, slots: int) -> int:
        return slots * self.n_max

    def start(self, slot: int) -> int:
        return self.looks[0]

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        assert counts is not None
        top, pvalues = top_two_pvalues(counts)
        m = np.asarray([int(u) for u in units])
        passed = pvalues <= np.array([self.look_alpha[int(t)] for t in m])
        out: list[int | None] = []
        for i, slot in enumerate(slots):
            if passed[i]:
                self.prediction[slot] = int(top[i])
                out.append(None)
            elif m[i] >= self.n_max:
                out.append(None)  # abstain
            else:
                out.append(self._after(m[i]))
        return out


def look_alphas(looks: int, alpha: float, final_share: float = FINAL_SHARE) -> list[float]:
    """alpha_k of each of ``looks`` looks: ``final_share`` x alpha at the last, the rest evenly
    over the others (sum alpha); a single look gets all of alpha."""
    if not 0 < final_share <= 1:
        raise ValueError(f"final_share must be in (0, 1], got {final_share!r}")
    if looks == 1:
        return [alpha]
    if final_share == 1:
        raise ValueError("final_share=1 leaves no alpha for the looks before n_max: use a single look (first=n_max)")
    return [alpha * (1 - final_share) / (looks - 1)] * (looks - 1) + [alpha * final_share]


def schedule(n_max: int, first: int, growth: float) -> list[int]:
    """The looks m_1 = min(first, n_max) < ... < m_K = n_max, each >= growth x the last (ceil)."""
    if growth <= 1:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    looks = [min(first, n_max)]
    while looks[-1] < n_max:
        looks.append(min(n_max, max(looks[-1] + 1, int(np.ceil(looks[-1] * growth)))))
    return looks
