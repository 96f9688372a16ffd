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

Pairs that write the identical input (``keys``: a mask over pixels already equal to the fill
changes nothing) run once per image: the answer on one is the answer on every other, so
sharing it changes no answer, only the forwards. When a phase starts, its pairs whose input
already ran are judged at once, and only the first pair of each other input is queued.

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
from fastsmooth.ops.mask_pairs.repeats import pair_keys

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

    def append(self, slot: int, pairs: Sequence[tuple[int, int]] | np.ndarray) -> int:
        """Append ``pairs`` to ``slot``'s units; returns its new unit total."""
        n = int(self.size[slot])
        if len(pairs):
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
    partners = np.delete(np.arange(len(one)), i)
    order = np.lexsort((partners, one_margins[partners], one[partners] == one[i]))  # last key sorts first
    return partners[order].tolist()


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


#: The entry of an image's per-input class table for an input that has not run.
_UNSEEN = -1


class _State:
    """One image's progress: the class the pairs of the current phase must all equal, the pairs
    still to run in it and those of the chunk being waited on (int64 [n, 2] each), the class
    and margin of every input key (``_UNSEEN`` until read), and (without a label) the one-mask
    answers and the disagreers left."""

    __slots__ = ("target", "queue", "chunk", "done_in_phase", "checked", "phase", "one", "margins", "disagreers",
                 "classes", "input_margins", "two_pending")

    def __init__(self, num_keys: int) -> None:
        self.target = -1
        self.queue = _NO_PAIRS
        self.chunk = _NO_PAIRS  # the pairs whose classes the next look judges
        self.done_in_phase = 0
        self.checked = 0  # units whose predictions have been read
        self.phase = "one"  # "one" | "certify" | "row"
        self.one: np.ndarray | None = None
        self.margins = np.zeros(0, dtype=np.float32)  # one-mask margin of each mask, once known
        self.two_pending = False  # certification against a label: the two-mask pairs follow the one-mask ones
        self.disagreers: list[int] = []
        self.classes = np.full(num_keys, _UNSEEN, dtype=np.int64)  # input key -> top-1 class
        self.input_margins = np.zeros(num_keys, dtype=np.float32)  # input key -> logit margin


_NO_PAIRS = np.zeros((0, 2), dtype=np.int64)

#: What a scheduling step returns when a phase has no pair left to run (inputs that ran for
#: other pairs answered them all): the decider judges it at once, without a forward.
_READY = -2


def _pairs(pairs: Sequence[tuple[int, int]] | np.ndarray) -> np.ndarray:
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


class DoubleMasking:
    """The engine's decider of PatchCleanser (see the module docstring).

    ``num_masks`` M; ``log`` the :class:`PairLog` the Work reads its pairs from; ``labels``
    (int per slot) for certification against labels (``predict`` is then not available), or
    None for the label-free questions. ``certify`` / ``predict``: which answers are wanted.
    ``keys``: int64 [slots, M, M] in [0, M * M), symmetric, an input key per pair of each image
    such that pairs of equal key give the model the identical input
    (:func:`~fastsmooth.ops.mask_pairs.repeats.input_keys`): each key runs once per image and
    its class answers every pair that has it; None: one key per pair (every pair runs).
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
        keys: np.ndarray | None = None,
    ) -> None:
        if labels is not None and predict:
            raise ValueError("DoubleMasking: certification against labels does not compute the prediction; "
                             "pass predict=False with labels")
        M = num_masks
        self.shared = keys is not None  # whether two pairs of an image may share an input
        if keys is None:  # one key per unordered pair
            keys = np.broadcast_to(pair_keys(M), (slots, M, M))
        elif tuple(keys.shape) != (slots, M, M) or (keys.size and not 0 <= keys.min() <= keys.max() < M * M):
            span = f" in [{keys.min()}, {keys.max()}]" if keys.size else ""
            raise ValueError(f"DoubleMasking: keys must be int [slots, M, M] = [{slots}, {M}, {M}] in [0, {M * M}), "
                             f"got {tuple(keys.shape)}{span}; build them with ops.mask_pairs.repeats.input_keys")
        self.keys = keys
        self.M = M
        self.log = log
        self.labels = None if labels is None else [int(y) for y in labels]
        self.want_certify, self.want_predict = certify, predict
        self.first, self.growth = max(1, int(first)), float(growth)
        self.prediction = torch.full((slots,), -1, dtype=torch.int64)
        self.certified = torch.zeros(slots, dtype=torch.bool)
        self.states = [_State(M * M) for _ in range(slots)]
        # the two-mask pairs i < j in spread order: neighbouring pairs mask similar regions and
        # agree or disagree alike, so a spread prefix finds a disagreement sooner (any order
        # gives the same answers)
        upper = [(i, j) for i in range(M) for j in range(i + 1, M)]
        self.two_mask = [upper[k] for k in spread(len(upper)).tolist()]
        self._two_mask = _pairs(self.two_mask)
        self._one_mask = _pairs([(i, i) for i in spread(M).tolist()])
        self._mask_order = _pairs([(i, i) for i in range(M)])

    def two_mask_order(self, one_margins: np.ndarray) -> list[tuple[int, int]]:
        """The two-mask pairs in the order they run, given the one-mask margins [M] (spread order
        among equal sums: a spread prefix masks regions far apart)."""
        return [tuple(p) for p in self._two_mask_order(one_margins).tolist()]

    def _two_mask_order(self, one_margins: np.ndarray) -> np.ndarray:
        return self._two_mask[pair_order(self._two_mask, one_margins)]

    def rows_hint(self, slots: int) -> int:
        return slots * self.log.capacity

    # -- scheduling ------------------------------------------------------------------------------
    def _needed(self, slot: int, pairs: np.ndarray, target: int) -> np.ndarray | None:
        """The pairs among ``pairs`` that need a forward: those whose input has not run, the first
        of each input only (a later pair of the same input has its class). None when an input
        that already ran gives a class other than ``target`` (>= 0; -1: no target): the pairs
        cannot all equal it, with no forward."""
        st = self.states[slot]
        keys = self.keys[slot][pairs[:, 0], pairs[:, 1]]
        seen = st.classes[keys]
        if target >= 0 and ((seen >= 0) & (seen != target)).any():
            return None
        fresh = np.flatnonzero(seen == _UNSEEN)
        if self.shared and len(fresh) > 1:
            _, first = np.unique(keys[fresh], return_index=True)
            fresh = np.sort(fresh[first])
        return pairs[fresh]

    def _next(self, slot: int, size: int | None = None) -> int:
        """Append the next chunk of the current phase's queue (``size`` pairs, or by the chunk
        rule; every queued pair is a new input); the new unit total, or ``_READY`` when the
        queue is empty (every pair of the phase was answered by inputs that ran before)."""
        st = self.states[slot]
        if not len(st.queue):
            st.chunk = _NO_PAIRS
            return _READY
        if size is None:
            size = self.first if st.done_in_phase == 0 else max(self.first,
                                                                math.ceil(st.done_in_phase * (self.growth - 1)))
        st.chunk, st.queue = st.queue[:size], st.queue[size:]
        st.done_in_phase += len(st.chunk)
        return self.log.append(slot, st.chunk)

    def _phase(self, slot: int, phase: str, target: int, pairs: np.ndarray) -> None:
        """Start ``phase``: its pairs that need a forward (see :meth:`_needed`) are queued."""
        st = self.states[slot]
        st.phase, st.target, st.queue, st.done_in_phase = phase, target, pairs, 0

    def _settle(self, slot: int, result: int | None) -> int | None:
        """Judge every chunk that needs no forward, until one does (its unit total) or the image
        is answered (None)."""
        st = self.states[slot]
        while result == _READY:
            result = self._look(slot, st)
        return result

    def start(self, slot: int) -> int | None:
        if self.labels is not None:  # every one- and two-mask prediction must be the label
            self._phase(slot, "certify", self.labels[slot], self._needed(slot, self._one_mask, -1))
            self.states[slot].two_pending = True  # ordered by margin once the one-mask round has run
            return self._settle(slot, self._next(slot))
        # the one-mask round, in one chunk (the label-free questions need all of it)
        self._phase(slot, "one", -1, self._needed(slot, self._mask_order, -1))
        return self._settle(slot, self._next(slot, self.M))

    # -- looks -----------------------------------------------------------------------------------
    def update(self, slots: Sequence[int], counts: torch.Tensor | None, units: Sequence[int]) -> list[int | None]:
        table, margins = self.log.read(slots)
        out: list[int | None] = []
        for k, slot in enumerate(slots):
            st = self.states[slot]
            n = int(units[k])
            pairs = self.log.pairs[slot, st.checked : n]
            keys = self.keys[slot][pairs[:, 0], pairs[:, 1]]
            st.classes[keys] = table[k, st.checked : n]
            st.input_margins[keys] = margins[k, st.checked : n]
            st.checked = n
            out.append(self._settle(slot, self._look(slot, st)))
        return out

    def _one_mask_answers(self, slot: int, st: _State) -> tuple[np.ndarray, np.ndarray]:
        """Each mask's one-mask class and margin (every one-mask input has run)."""
        index = np.arange(self.M)
        keys = self.keys[slot][index, index]
        return st.classes[keys], st.input_margins[keys]

    def _look(self, slot: int, st: _State) -> int | None:
        if st.phase == "one":
            return self._after_one_mask(slot, st, *self._one_mask_answers(slot, st))
        new = st.classes[self.keys[slot][st.chunk[:, 0], st.chunk[:, 1]]]  # the chunk's classes
        if st.phase == "certify":
            if (new != st.target).any():
                return None  # not certified (false by default); the prediction, if wanted, is already set
            if not len(st.queue) and st.two_pending:  # every one-mask prediction is the label: the pairs, by margin
                st.two_pending = False
                queue = self._needed(slot, self._two_mask_order(self._one_mask_answers(slot, st)[1]), st.target)
                if queue is None:
                    return None
                st.queue = queue
            if len(st.queue):
                return self._next(slot)
            self.certified[slot] = True
            return None
        # a Case II row
        if (new != st.target).any():
            return self._next_row(slot, st)
        if len(st.queue):
            return self._next(slot)
        self.prediction[slot] = st.target  # Case II: the disagreer's class
        return None

    def _after_one_mask(self, slot: int, st: _State, one: np.ndarray, one_margins: np.ndarray) -> int | None:
        st.one, st.margins = one, one_margins
        if (st.one == st.one[0]).all():  # Case I
            c = int(st.one[0])
            self.prediction[slot] = c
            if not self.want_certify:
                return None
            queue = self._needed(slot, self._two_mask_order(one_margins), c)
            if queue is None:  # a two-mask pair repeats an input of another class
                return None
            self._phase(slot, "certify", c, queue)
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
            partners = np.asarray(row_order(i, st.one, st.margins), dtype=np.int64)
            todo = self._needed(slot, np.stack([np.full_like(partners, i), partners], axis=1), c)
            if todo is None:
                continue  # a known pair already disagrees: no forward needed
            if not len(todo):
                self.prediction[slot] = c
                return None
            self._phase(slot, "row", c, todo)
            return self._next(slot)
        self.prediction[slot] = majority(st.one)  # Case III
        return None
