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
from scipy.special import betainc, betaincc, betaln
from scipy.stats import binom

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
#: The hybrid rule's fine schedule of mixture looks (16, 18, 20, ... (x 1.1)): a mixture
#: test is valid at every sample count at once, so its looks cost no alpha, only decider calls.
MIXTURE_FIRST = 16
MIXTURE_GROWTH = 1.1
RULES = ("hybrid", "union")
#: Adaptive selection of c_A (``Sequential(selection="adaptive")``): looks after 16, 32, 64, ...
#: (x 2) selection samples, capped at n0, each a one-sided sign test of the leader against the
#: runner-up at SELECTION_ALPHA. Its level costs power only (a wrong c_A is rarely certified),
#: never validity: see :class:`Sequential`.
SELECTION_FIRST = 16
SELECTION_ALPHA = 0.001
SELECTIONS = ("adaptive", "fixed")
#: The sequential procedure of the smoothers' ``decide_batch`` (a level-mode results file of a
#: randomized smoother records it in its fingerprint): change it with any change of its defaults.
DECISION = {"rule": "hybrid", "selection": "adaptive", "selection_alpha": SELECTION_ALPHA,
            "selection_first": SELECTION_FIRST}


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


def kt_log_mixture(hits: np.ndarray, m: np.ndarray, p0: np.ndarray, above: bool = True) -> np.ndarray:
    """log of the one-sided truncated Krichevsky-Trofimov mixture statistic of ``hits`` successes
    in ``m`` trials against p0 (arrays broadcast):

        M = [integral over q in Q of q^k (1 - q)^(m - k) dBeta(1/2, 1/2)(q) / Beta(1/2, 1/2)(Q)]
            / (p0^k (1 - p0)^(m - k)),   Q = [p0, 1] (``above``) or [0, p0].

    For every q in [p0, 1] the likelihood ratio (q / p0)^k ((1 - q) / (1 - p0))^(m - k) is a
    nonnegative supermartingale in m when the true p <= p0 (its one-step mean is
    p q / p0 + (1 - p)(1 - q) / (1 - p0) <= 1), so their mixture M is one too, and Ville's
    inequality gives P(M >= 1 / a at any m) <= a whatever the stopping rule: rejecting
    "p <= p0" when M >= 1 / a errs with probability <= a. ``above=False`` is the mirror test of
    "p >= p0". p0 in (0, 1); M = 0 (log -inf) where the data lie far on the null side."""
    k = np.asarray(hits, dtype=np.float64)
    n = np.asarray(m, dtype=np.float64)
    p0 = np.asarray(p0, dtype=np.float64)
    a, b = k + 0.5, n - k + 0.5
    with np.errstate(divide="ignore"):
        if above:  # posterior and prior mass of [p0, 1]; Beta(1/2, 1/2)'s cdf is (2 / pi) asin(sqrt p)
            tail, prior = betaincc(a, b, p0), 1.0 - (2.0 / np.pi) * np.arcsin(np.sqrt(p0))
        else:
            tail, prior = betainc(a, b, p0), (2.0 / np.pi) * np.arcsin(np.sqrt(p0))
        return (betaln(a, b) - betaln(0.5, 0.5) + np.log(tail) - np.log(prior)
                - k * np.log(p0) - (n - k) * np.log1p(-p0))


def _thresholds(levels: np.ndarray, certificate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """p*(t) per level t: a p with certificate(p) >= t such that every p with certificate(p) < t
    lies below it (bisection on the non-decreasing certificate; its upper end, so the tests of
    "p_A <= p*" cover every p_A that would make a certificate at t false). 0 when certificate(0)
    already reaches t; inf when certificate(1) does not (never certified)."""
    lo, hi = np.zeros(len(levels)), np.ones(len(levels))
    if len(levels) == 0:
        return hi
    at_zero = certificate(lo) >= levels
    at_one = certificate(hi) >= levels
    for _ in range(64):  # hi - lo < 2^-64: below float64's resolution of p
        mid = 0.5 * (lo + hi)
        reach = certificate(mid) >= levels
        hi, lo = np.where(reach, mid, hi), np.where(reach, lo, mid)
    return np.where(at_zero, 0.0, np.where(at_one, hi, np.inf))


class Sequential(_Looks):
    """Anytime-valid decisions of a sampling smoother: selection samples (at most n0, see
    ``selection``) choose the class c_A, then the estimation samples are looked at on a schedule
    and an image retires as soon as every level is decided (certified or given up).
    P(certifying a level t with certificate(p_A) < t) <= alpha, whatever the data, for every
    level.

    ``rule="hybrid"`` (the default): level t with threshold p*(t) (the least p whose certificate
    reaches t) is certified at the first look where either
      - the one-sided truncated Krichevsky-Trofimov mixture test of "p_A <= p*(t)"
        (:func:`kt_log_mixture`) rejects at level (1 - ``final_share``) alpha; a mixture is a
        supermartingale under the null, so it may be looked at after every sample at no cost
        in alpha: its looks are the fine schedule 16, 18, 20, ... (x 1.1), joined with the
        union bound's looks below; or
      - at n_max, the one-sided Clopper-Pearson lower bound at ``final_share`` x alpha gives a
        certificate >= t (today's last look, so the images near the threshold, which run to
        n_max, keep the fixed-n test's power within ln 2);
    and given up at the first look where the union-bound rule below gives it up or the mirror
    mixture test of "p_A >= p*(t)" rejects at the same level. A level's first decision is
    final. Validity: a false certification needs the mixture to cross (probability <= (1 -
    final_share) alpha, Ville) or the last Clopper-Pearson bound to err (<= final_share x
    alpha); giving up never certifies. ``fastsmooth.engine.audit`` computes the exact error
    and expected samples of the rule by dynamic programming (docs/sequential-rule.md).

    ``rule="union"`` (the rule before the hybrid): a union bound over the finite schedule of
    looks m_1 < m_2 < ... < m_K = n_max (m_1 = ``first``, then x ``growth``), look k a
    Clopper-Pearson interval at level alpha_k with sum_k alpha_k = alpha: P(p_A outside the
    interval at some look) <= alpha, whatever the stopping rule (the fixed-n Clopper-Pearson
    test repeated at every look without the split is not valid, see
    tests/test_sequential_validity.py). ``final_share`` of alpha goes to the last look (n_max),
    the rest is split evenly over the others. A level is certified when ``certificate(lower) >=
    level`` and given up when ``certificate(upper) < level``, both at the current look.

    ``selection``: how c_A is chosen. ``"fixed"``: the leader (smallest index on ties) of the
    first n0 samples; estimation samples are units n0, n0 + 1, .... ``"adaptive"``: looks at the
    selection samples after 16, 32, 64, ... (x 2, :func:`selection_schedule`) and finally n0;
    at a look before n0, c_A is fixed to the leader when the one-sided sign test of its count n1
    against the runner-up's n2 (P(Bin(n1 + n2, 1/2) >= n1), :func:`sign_test_pvalues`) is <=
    ``selection_alpha``; at n0 it is the leader, as with ``"fixed"``. A slot's estimation
    samples are the units after its own selection length s (``selected[slot]``): its hits at
    unit total u are count(c_A at u) - count(c_A at s), m = u - s, m <= n_max. Validity does
    not depend on the selection: s is a stopping time of the stream, so the units after it are
    fresh independent draws whatever c_A is, and the estimation rule's guarantee holds given
    (s, c_A), hence overall (Cohen et al.'s argument for a fixed n0, with s in place of n0).
    The sign test's level only bounds the power lost to a wrong c_A: a wrong class j with
    p_j <= p_A stops an early look with probability <= ``selection_alpha``, so at most
    (number of early looks) x (K - 1) x ``selection_alpha`` (two classes: 3 x 0.001 at n0 = 100)
    more than a fixed n0 loses. The default, None, is ``"adaptive"`` under the hybrid rule and
    ``"fixed"`` under ``rule="union"`` (the rule before, kept as it was).

    ``certificate`` maps p bounds (np.ndarray) to certificates (radii / patch sizes) and must
    not decrease in p. ``give_up=False`` never stops an image for a level it cannot certify (it
    then runs to n_max).
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
        rule: str = "hybrid",
        selection: str | None = None,
        selection_alpha: float = SELECTION_ALPHA,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if selection is None:
            selection = "adaptive" if rule == "hybrid" else "fixed"
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0 < selection_alpha < 1:
            raise ValueError(f"selection_alpha must be in (0, 1), got {selection_alpha!r}; the default is "
                             f"{SELECTION_ALPHA}")
        self.n0, self.n_max, self.alpha, self.give_up, self.rule = n0, n_max, alpha, give_up, rule
        self.selection, self.selection_alpha = selection, float(selection_alpha)
        # the looks at the selection samples; "fixed": n0 only
        self.selection_looks = selection_schedule(n0) if selection == "adaptive" else [n0]
        self._selection_looks = np.asarray(self.selection_looks, dtype=np.int64)
        self.levels = np.asarray([float(v) for v in levels], dtype=np.float64)
        self.certificate = certificate
        self._init_looks(n_max, alpha, first, growth, final_share)
        self.union_looks = set(self.looks)  # where the union bound's intervals are computed
        if rule == "hybrid":
            self.looks = sorted(self.union_looks | set(schedule(n_max, MIXTURE_FIRST, MIXTURE_GROWTH)))
            # every look of the union schedule but n_max gives up only; n_max certifies at final_share x alpha
            self.mixture_log_bound = float(np.log(1.0 / ((1.0 - final_share) * alpha))) if final_share < 1 else np.inf
            self.p_star = _thresholds(self.levels, certificate)
        # per slot, on the host (one vectorized look for many images): c_A (-1 while selecting),
        # its count and the unit total where selection stopped (estimation starts there)
        self._choice = np.full(slots, -1, dtype=np.int64)
        self._before = np.zeros(slots, dtype=np.int64)
        self._selected = np.zeros(slots, dtype=np.int64)
        self.selected = torch.from_numpy(self._selected)  # view: selection samples each slot used
        self._prediction = np.full(slots, -1, dtype=np.int64)
        self._certified = np.zeros((slots, len(self.levels)), dtype=np.bool_)
        self.prediction = torch.from_numpy(self._prediction)  # views: the looks write the arrays
        self.certified = torch.from_numpy(self._certified)
        self._yes = np.zeros((slots, len(self.levels)), dtype=np.bool_)
        self._no = np.zeros((slots, len(self.levels)), dtype=np.bool_)
        self._looks = np.asarray(self.looks, dtype=np.int64)

    def rows_hint(self, slots: int) -> int:
        return slots * (self.n0 + self.n_max)

    def start(self, slot: int) -> int:
        return self.selection_looks[0]

    def select(self, counts: np.ndarray, units: np.ndarray) -> np.ndarray:
        """c_A [S] chosen from selection counts [S, K] (int64) at ``units`` [S] (each a selection
        look), -1 where selection goes on: the leader (smallest index on ties) at n0, or before
        n0 (``"adaptive"``) where its sign test against the runner-up passes. A pure function of
        (counts, units), which the exact audit evaluates at every possible count."""
        counts = np.asarray(counts, dtype=np.int64)
        units = np.asarray(units, dtype=np.int64)
        rows = np.arange(len(counts))
        leader = counts.argmax(axis=1)  # the first (smallest) index on ties
        stop = units >= self.n0
        if self.selection == "adaptive" and counts.shape[1] > 1:
            n1 = counts[rows, leader]
            others = counts.copy()
            others[rows, leader] = -1
            n2 = others.max(axis=1)
            stop |= sign_test_pvalues(n1, n2) <= self.selection_alpha
        return np.where(stop, leader, -1)

    def judge(self, hits: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(certified [S, L], given up [S, L]) of ``hits`` of c_A in ``m`` estimation samples at
        a look (m on the schedule), before the earlier looks' decisions are applied: a pure
        function of (hits, m), which the exact audit (``fastsmooth.engine.audit``) evaluates at
        every possible hit count."""
        hits, m = np.asarray(hits, dtype=np.int64), np.asarray(m, dtype=np.int64)
        L = self.levels[None, :]
        yes = np.zeros((len(m), len(self.levels)), dtype=np.bool_)
        no = np.zeros_like(yes)
        for look in np.unique(m):  # one vectorized bound per look (its own alpha)
            at = m == look
            if int(look) in self.union_looks and (self.rule == "union" or self.give_up or look >= self.n_max):
                a = self.look_alpha[int(look)]
                if self.rule == "union" or look >= self.n_max:
                    yes[at] = self.certificate(clopper_pearson_lower(hits[at], m[at], a))[:, None] >= L
                no[at] = self.certificate(clopper_pearson_upper(hits[at], m[at], a))[:, None] < L
        if self.rule == "hybrid":
            p_star = self.p_star[None, :]
            inner = (p_star > 0) & (p_star < 1)
            p0 = np.where(inner, p_star, 0.5)  # placeholder where the level is decided without data
            k, n = hits[:, None], m[:, None]
            yes |= inner & (kt_log_mixture(k, n, p0) >= self.mixture_log_bound)
            yes |= p_star <= 0  # certificate(0) already reaches the level
            no |= inner & (kt_log_mixture(k, n, p0, above=False) >= self.mixture_log_bound)
            no |= p_star >= 1  # never certified: certificate(1) < level
            no &= ~yes
        if not self.give_up:
            no[:] = False
        return yes, no

    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        assert counts is not None
        rows = np.asarray(slots, dtype=np.int64)
        counts_a = counts.numpy()
        units_a = np.asarray(units, dtype=np.int64)
        nxt = np.full(len(rows), -1, dtype=np.int64)  # -1: done
        selecting = self._choice[rows] < 0  # at a selection look: choose c_A or look again
        if selecting.any():
            at, u = rows[selecting], units_a[selecting]
            chosen = self.select(counts_a[selecting], u)
            stop = chosen >= 0
            self._choice[at[stop]] = chosen[stop]
            self._before[at[stop]] = counts_a[selecting][stop, chosen[stop]]
            self._selected[at[stop]] = u[stop]
            again = self._selection_looks[np.minimum(np.searchsorted(self._selection_looks, u, side="right"),
                                                     len(self._selection_looks) - 1)]
            nxt[selecting] = np.where(stop, u + self.looks[0], again)
        look = ~selecting  # past selection: decided together (one vectorized bound per look)
        if look.any():
            at = rows[look]
            m_at = units_a[look] - self._selected[at]  # estimation samples: after this slot's selection
            hits = counts_a[look][np.arange(len(at)), self._choice[at]] - self._before[at]
            yes, no = self.judge(hits, m_at)
            if self.rule == "hybrid":  # a level's first decision is final
                decided_yes, decided_no = self._yes[at], self._no[at]
                yes = decided_yes | (yes & ~decided_no)
                no = decided_no | (no & ~decided_yes)
            self._yes[at], self._no[at] = yes, no
            done = (m_at >= self.n_max) | (yes | no).all(axis=1)
            finished = at[done]
            self._prediction[finished] = self._choice[finished]
            self._certified[finished] = yes[done]
            later = self._looks[np.minimum(np.searchsorted(self._looks, m_at, side="right"), len(self._looks) - 1)]
            nxt[look] = np.where(done, -1, self._selected[at] + later)
        return [None if t < 0 else t for t in nxt.tolist()]


class SequentialPredict(_Looks):
    """Cohen et al.'s PREDICT, anytime-valid: the two-sided binomial test of the top two counts
    at p = 1/2, at every look of the schedule of :class:`Sequential` with the same split of
    alpha over the looks. Returns the top class at the first look whose p-value is <= that
    look's alpha; abstains (-1) at n_max. P(returning a class other than g(x)) <= alpha: each
    look's test errs with probability <= its alpha_k (Cohen et al.'s argument), and the looks'
    alphas sum to alpha. Images near a tie run to n_max, as they would at a fixed n. It has no
    selection samples (the class is what its test decides), so :class:`Sequential`'s adaptive
    selection has nothing to shorten here.
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


def selection_schedule(n0: int, first: int = SELECTION_FIRST) -> list[int]:
    """The looks of adaptive selection: first, 2 first, 4 first, ... below n0, then n0 (just
    [n0] when n0 <= first)."""
    looks = []
    s = first
    while s < n0:
        looks.append(s)
        s *= 2
    return looks + [n0]


def sign_test_pvalues(n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """P(Bin(n1 + n2, 1/2) >= n1) per entry: the one-sided sign test of "the class with n1 votes
    is not ahead of the one with n2" (1 where n1 = 0)."""
    n1, n2 = np.asarray(n1, dtype=np.int64), np.asarray(n2, dtype=np.int64)
    return binom.sf(n1 - 1, n1 + n2, 0.5)


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
