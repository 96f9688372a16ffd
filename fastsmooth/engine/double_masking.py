"""PatchCleanser's double masking as a decider: which mask pairs an image needs, decided look by look.

Units of an image are mask pairs (i, j) (a one-mask input is (i, i)); which pairs come next
depends on the model's answers so far, so an image's units are appended to a :class:`PairLog`
at each look and never changed afterwards (unit u of image b is always the same model input,
as the engine requires). The Work that writes the inputs records the model's top-1 class of
every unit in the log's ``preds``; :class:`DoubleMasking` reads them at its looks.

The questions (Xiang et al. 2022, semantics.md §15), for M masks:

- certification against a label y: certified iff every one- and two-mask prediction is y. The
  image stops at the first look that sees a prediction other than y (so the two-mask round
  is skipped when a one-mask prediction is already wrong).
- without a label (``evaluate``): the M one-mask predictions first. Unanimous (class c): the
  double-masking prediction is c (Case I), and the image is certified iff every two-mask
  prediction is c too (the label rule for the label c; prediction == label is then checked by
  whoever knows the label). Otherwise it is not certified, and the prediction is the
  double-masking inference: the majority class m of the one-mask predictions (most votes,
  ties to the largest class: the authors' ``np.unique`` + stable ``argsort``); for each
  disagreer mask i (one-mask prediction != m), in mask order, its two-mask predictions (i, j)
  for every j; the first disagreer whose row all equals its own one-mask prediction gives the
  prediction (Case II); none: m (Case III). A row stops at the first look that sees a
  disagreement; a pair already evaluated (as (j, i)) is not run again.

Any chunking gives the same answers: a row or a certification holds iff none of its pairs
disagrees, which does not depend on the order the pairs are seen in; and at most one class can
pass Case II (two passing disagreers i, i' of different classes would need pair (i, i') to
equal both), so the order of the disagreers does not change the prediction either.

The order is therefore free, and it sets the forwards a failing image costs. The Work also
records each unit's logit margin (top-1 minus top-2 logit); after the one-mask round the
decider orders by it (:func:`pair_order`, :func:`row_order`, :func:`disagreer_order`): the
two-mask pairs by the sum of their masks' one-mask margins, least first (masks the model is
least sure under combine into the pairs most likely to flip it); a Case II row's partners with a
one-mask class other than the row's first, then by margin; the disagreers most confident first
(a passing row ends the search, so the likeliest to pass goes first). Ties keep the spread
order. On 1000 held-out demo digits this cut the forwards of images that are not certified
from 123 to 71 on average (docs/methods/patchcleanser.md).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fastsmooth.engine.items import Segment, spread

__all__ = ["PairLog", "DoubleMasking", "majority", "pair_order", "row_order", "disagreer_order", "FIRST_CHUNK", "GROWTH"]

#: Pairs checked before the first look of a phase, and the growth of the chunks after it:
#: looks at 4, 8, 16, 32, ... pairs. With pairs ordered by margin most failing images fail
#: within the first chunk, so a small first chunk is what saves forwards (16 cost 8% more on
#: the demo digits); doubling after it keeps a certified image to 9 looks for 630 pairs (growth
#: 1.5: 13), and every look whose images all wait on it runs a forward less than full (on the
#: certified demo digits the engine's cost over the network fell from 1.06x to 1.04x, while
#: forwards on held-out digits rose 1.4%).
FIRST_CHUNK = 4
GROWTH = 2.0


class PairLog:
    """Per slot, the mask pair of each unit (append-only) and the model's top-1 class on it.

    ``pairs``: int64 [slots, capacity, 2] on the host; ``size[slot]``: units appended so far;
    ``preds``: int64 [slots * capacity] on the model's device, -1 until the unit has run, and
    ``margins``: float32 [slots * capacity], the unit's top-1 minus top-2 logit (0 for a single
    class), both written by the Work (:meth:`record`, once per forward)."""

    def __init__(self, slots: int, capacity: int, device: torch.device) -> None:
        self.capacity = capacity
        self.pairs = np.zeros((slots, capacity, 2), dtype=np.int64)
        self.size = np.zeros(slots, dtype=np.int64)
        self.preds = torch.full((slots * capacity,), -1, dtype=torch.int64, device=device)
        self.margins = torch.zeros(slots * capacity, dtype=torch.float32, device=device)

    def record(self, flat: torch.Tensor, logits: torch.Tensor) -> None:
        """Store the top-1 class (the first, smallest class on ties, as torch's ``max(1)`` in the
        authors' code) and the margin of the units at flat indices ``flat`` from their logits."""
        self.preds[flat] = logits.argmax(dim=1)
        if logits.shape[1] >= 2:
            top = logits.topk(2, dim=1).values.float()
            self.margins[flat] = top[:, 0] - top[:, 1]

    def append(self, slot: int, pairs: Sequence[tuple[int, int]]) -> int:
        """Append ``pairs`` to ``slot``'s units; returns its new unit total."""
        n = int(self.size[slot])
        if pairs:
            self.pairs[slot, n : n + len(pairs)] = np.asarray(pairs, dtype=np.int64)
        self.size[slot] = n + len(pairs)
        return n + len(pairs)

    def rows_of(self, segments: Sequence[Segment]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image (int64 [N]), flat unit index (int64 [N]) and mask pair (int64 [N, 2]) of every
        row of ``segments``, in order (vectorized: a forward holds pairs of many images)."""
        seg = np.array([(s.slot, s.image, s.first, s.end) for s in segments], dtype=np.int64).reshape(-1, 4)
        lengths = seg[:, 3] - seg[:, 2]
        starts = np.cumsum(lengths) - lengths  # each segment's first row in the forward
        offset = np.repeat(seg[:, 0] * self.capacity + seg[:, 2] - starts, lengths)
        flat = offset + np.arange(int(lengths.sum()), dtype=np.int64)
        return np.repeat(seg[:, 1], lengths), flat, self.pairs.reshape(-1, 2)[flat]

    def read(self, slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The top-1 classes (int64) and margins (float32) of ``slots``' units, each
        [len(slots), capacity] (one transfer each)."""
        index = torch.as_tensor(list(slots), dtype=torch.int64, device=self.preds.device)
        preds = self.preds.view(-1, self.capacity).index_select(0, index).cpu().numpy()
        margins = self.margins.view(-1, self.capacity).index_select(0, index).cpu().numpy()
        return preds, margins


def pair_order(pairs: np.ndarray, one_margins: np.ndarray) -> np.ndarray:
    """The order to run two-mask ``pairs`` [P, 2] in (indices into them): by the sum of the two
    masks' one-mask margins, least first; ties keep the given order."""
    return np.argsort(one_margins[pairs[:, 0]] + one_margins[pairs[:, 1]], kind="stable")


def row_order(i: int, one: np.ndarray, one_margins: np.ndarray) -> list[int]:
    """Mask i's row partners j != i in the order to run them: those whose one-mask class differs
    from i's first (a pair likelier to leave i's class), then by one-mask margin, least first."""
    partners = [j for j in range(len(one)) if j != i]
    return sorted(partners, key=lambda j: (bool(one[j] == one[i]), float(one_margins[j])))


def disagreer_order(disagreers: Sequence[int], one_margins: np.ndarray) -> list[int]:
    """The disagreers in the order to try their rows: the largest one-mask margin first (ties:
    mask order)."""
    return sorted(disagreers, key=lambda i: -float(one_margins[i]))


def majority(one_mask: np.ndarray) -> int:
    """The authors' majority class of the one-mask predictions: most votes, ties to the largest
    class (``np.unique`` sorts the classes, a stable ``argsort`` of the counts keeps that order
    among equal counts, and the last entry is taken)."""
    classes, counts = np.unique(one_mask, return_counts=True)
    return int(classes[np.argsort(counts, kind="stable")][-1])


class _State:
    """One image's progress: the class the pairs of the current phase must all equal, the pairs
    still to run in it, and (without a label) the one-mask answers and the disagreers left."""

    __slots__ = ("target", "queue", "done_in_phase", "checked", "phase", "one", "margins", "disagreers", "known",
                 "row", "two_pending")

    def __init__(self) -> None:
        self.target = -1
        self.queue: list[tuple[int, int]] = []
        self.done_in_phase = 0
        self.checked = 0  # units whose predictions have been read
        self.phase = "one"  # "one" | "certify" | "row"
        self.one: np.ndarray | None = None
        self.margins = np.zeros(0, dtype=np.float32)  # one-mask margin of each mask, once known
        self.two_pending = False  # certification against a label: the two-mask pairs follow the one-mask ones
        self.disagreers: list[int] = []
        self.known: dict[tuple[int, int], int] = {}  # (i <= j) -> top-1 class, every pair seen
        self.row = -1


class DoubleMasking:
    """The engine's decider of PatchCleanser (see the module docstring).

    ``num_masks`` M; ``log`` the :class:`PairLog` the Work reads its pairs from; ``labels``
    (int per slot) for certification against labels (``predict`` is then not available), or
    None for the label-free questions. ``certify`` / ``predict``: which answers are wanted.
    Results: ``prediction`` int64 [S] (-1 where not computed) and ``certified`` bool [S].
    """

    reads_counts = False  # the answers need each unit's class, from the log, not the counts

    def __init__(
        self,
        num_masks: int,
        slots: int,
        log: PairLog,
        labels: Sequence[int] | None = None,
        certify: bool = True,
        predict: bool = True,
        first: int = FIRST_CHUNK,
        growth: float = GROWTH,
    ) -> None:
        if labels is not None and predict:
            raise ValueError("DoubleMasking: certification against labels does not compute the prediction; "
                             "pass predict=False with labels")
        self.M = num_masks
        self.log = log
        self.labels = None if labels is None else [int(y) for y in labels]
        self.want_certify, self.want_predict = certify, predict
        self.first, self.growth = max(1, int(first)), float(growth)
        self.prediction = torch.full((slots,), -1, dtype=torch.int64)
        self.certified = torch.zeros(slots, dtype=torch.bool)
        self.states = [_State() for _ in range(slots)]
        M = num_masks
        # the two-mask pairs i < j in spread order: neighbouring pairs mask similar regions and
        # agree or disagree alike, so a spread prefix finds a disagreement sooner (any order
        # gives the same answers)
        upper = [(i, j) for i in range(M) for j in range(i + 1, M)]
        self.two_mask = [upper[k] for k in spread(len(upper)).tolist()]
        self._two_mask = np.asarray(self.two_mask, dtype=np.int64).reshape(-1, 2)
        self.one_mask = [(i, i) for i in spread(M).tolist()]

    def two_mask_order(self, one_margins: np.ndarray) -> list[tuple[int, int]]:
        """The two-mask pairs in the order they run, given the one-mask margins [M] (spread order
        among equal sums: a spread prefix masks regions far apart)."""
        return [self.two_mask[k] for k in pair_order(self._two_mask, one_margins).tolist()]

    def rows_hint(self, slots: int) -> int:
        return slots * self.log.capacity

    # -- scheduling ------------------------------------------------------------------------------
    def _next(self, slot: int) -> int:
        """Append the next chunk of the current phase's queue; the new unit total."""
        st = self.states[slot]
        size = self.first if st.done_in_phase == 0 else max(self.first, math.ceil(st.done_in_phase * (self.growth - 1)))
        chunk, st.queue = st.queue[:size], st.queue[size:]
        st.done_in_phase += len(chunk)
        return self.log.append(slot, chunk)

    def _phase(self, slot: int, phase: str, target: int, pairs: list[tuple[int, int]]) -> None:
        st = self.states[slot]
        st.phase, st.target, st.queue, st.done_in_phase = phase, target, list(pairs), 0

    def start(self, slot: int) -> int:
        if self.labels is not None:  # every one- and two-mask prediction must be the label
            self._phase(slot, "certify", self.labels[slot], self.one_mask)
            self.states[slot].two_pending = True  # ordered by margin once the one-mask round has run
            return self._next(slot)
        return self.log.append(slot, [(i, i) for i in range(self.M)])  # the one-mask round, in mask order

    # -- looks -----------------------------------------------------------------------------------
    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        table, margins = self.log.read(slots)
        out: list[int | None] = []
        for k, slot in enumerate(slots):
            st = self.states[slot]
            n = int(units[k])
            new = table[k, st.checked : n]
            if st.phase == "row":  # only two-mask rows reuse pairs seen before (Case II)
                for (i, j), c in zip(self.log.pairs[slot, st.checked : n].tolist(), new.tolist()):
                    st.known[(min(i, j), max(i, j))] = c
            st.checked = n
            out.append(self._look(slot, st, new, margins[k]))
        return out

    def _one_margins(self, slot: int, margins: np.ndarray) -> np.ndarray:
        """Each mask's one-mask margin, from the slot's first M units (the one-mask pairs)."""
        one = np.zeros(self.M, dtype=np.float32)
        one[self.log.pairs[slot, : self.M, 0]] = margins[: self.M]
        return one

    def _look(self, slot: int, st: _State, new: np.ndarray, margins: np.ndarray) -> int | None:
        if st.phase == "one":
            return self._after_one_mask(slot, st, new, self._one_margins(slot, margins))
        if st.phase == "certify":
            if (new != st.target).any():
                return None  # not certified (false by default); the prediction, if wanted, is already set
            if not st.queue and st.two_pending:  # every one-mask prediction is the label: the pairs, by margin
                st.two_pending = False
                st.queue = self.two_mask_order(self._one_margins(slot, margins))
            if st.queue:
                return self._next(slot)
            self.certified[slot] = True
            return None
        # a Case II row
        if (new != st.target).any():
            return self._next_row(slot, st)
        if st.queue:
            return self._next(slot)
        self.prediction[slot] = st.target  # Case II: the disagreer's class
        return None

    def _after_one_mask(self, slot: int, st: _State, table_one: np.ndarray, one_margins: np.ndarray) -> int | None:
        st.one = table_one[: self.M].copy()  # the one-mask round runs in mask order: unit i is mask i
        st.margins = one_margins
        if (st.one == st.one[0]).all():  # Case I
            c = int(st.one[0])
            self.prediction[slot] = c
            if not self.want_certify:
                return None
            self._phase(slot, "certify", c, self.two_mask_order(one_margins))
            return self._next(slot)
        # not certified; the prediction needs the second round
        if not self.want_predict:
            return None
        m = majority(st.one)
        st.target = m
        st.disagreers = disagreer_order([i for i in range(self.M) if st.one[i] != m], one_margins)
        return self._next_row(slot, st)

    def _next_row(self, slot: int, st: _State) -> int | None:
        """Start the row of the next disagreer whose already-known pairs all agree; Case III when none."""
        while st.disagreers:
            i = st.disagreers.pop(0)
            c = int(st.one[i])
            row = [(i, j) for j in row_order(i, st.one, st.margins)]
            known = [st.known.get((min(a, b), max(a, b))) for a, b in row]
            if any(v is not None and v != c for v in known):
                continue  # a known pair already disagrees: no forward needed
            todo = [p for p, v in zip(row, known) if v is None]
            if not todo:
                self.prediction[slot] = c
                return None
            st.row = i
            self._phase(slot, "row", c, todo)
            return self._next(slot)
        self.prediction[slot] = majority(st.one)  # Case III
        return None
