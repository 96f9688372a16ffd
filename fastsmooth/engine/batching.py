"""The batch former: which units share a forward pass.

Pending units of every admitted image wait in first-in first-out runs, one queue per group
key. A forward takes runs of one group, oldest first, until it holds ``batch_size`` rows,
cutting the last run (at a multiple of the work's granule), so every forward is full while
work is pending, whatever mix of images and stages that takes. It is the only place that
knows how rows are packed; it never looks at votes.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence

from fastsmooth.engine.items import Segment

Groups = Callable[[int, int, int], Sequence[tuple[Hashable, int, int]]]


class BatchFormer:
    """Queues of pending units; ``take`` forms one forward of at most ``batch_size`` rows."""

    def __init__(self, groups: Groups, granule: int = 1) -> None:
        self.groups = groups
        self.granule = granule
        self.queues: dict[Hashable, deque[list[int]]] = {}  # key -> runs [slot, image, first, end], oldest first
        self.rows: dict[Hashable, int] = {}  # pending rows per key
        self.outstanding: dict[int, int] = {}  # slot -> units planned or pending, not yet run
        self.planned: dict[int, int] = {}  # slot -> the end of the units asked for so far
        self.image: dict[int, int] = {}
        self.offset: dict[int, int] = {}  # slot unit u is unit offset + u of its image
        self._ran: list[int] = []  # slots with a segment in the forwards taken since the last `completed`

    # -- adding work ---------------------------------------------------------------------------
    def add(self, slot: int, image: int, first: int, end: int, offset: int = 0) -> None:
        """Units first .. end - 1 of ``slot`` (units offset + first .. of ``image``) become pending."""
        self.image[slot] = image
        self.offset[slot] = offset
        self.planned[slot] = end
        first, end = first + offset, end + offset
        if end <= first:
            return
        for key, a, b in self.groups(image, first, end):
            if key not in self.queues:
                self.queues[key] = deque()
                self.rows[key] = 0
            self.queues[key].append([slot, image, a, b])
            self.rows[key] += b - a
        self.outstanding[slot] = self.outstanding.get(slot, 0) + end - first

    def extend(self, slot: int, end: int) -> None:
        """More units for ``slot``, up to ``end``."""
        self.add(slot, self.image[slot], self.planned[slot], end, self.offset[slot])

    # -- forming forwards ----------------------------------------------------------------------
    def head(self) -> Hashable | None:
        """The group key of the oldest pending run (None when nothing is pending: check ``pending``)."""
        return next(iter(self.queues), None)

    def pending(self, key: Hashable | None = ...) -> int:  # type: ignore[assignment]
        """Pending rows of ``key`` (default: the head group)."""
        if key is ...:
            key = self.head()
        return self.rows.get(key, 0)

    def has_work(self) -> bool:
        return bool(self.queues)

    def take(self, key: Hashable, batch_size: int) -> list[Segment]:
        """One forward: pending runs of ``key``, oldest first, up to ``batch_size`` rows."""
        queue = self.queues.get(key)
        segments: list[Segment] = []
        room = batch_size
        g = self.granule
        while queue and room > 0:
            run = queue[0]
            slot, image, first, end = run
            stop = min(end, first + room)
            if stop < end and g > 1:
                cut = (stop // g) * g
                if cut > first:
                    stop = cut
                elif segments:  # not one whole granule fits: leave it to the next forward
                    break
            segments.append(Segment(slot, image, first, stop))
            room -= stop - first
            self.rows[key] -= stop - first
            self.outstanding[slot] -= stop - first
            self._ran.append(slot)
            if stop == end:
                queue.popleft()
            else:
                run[2] = stop
        if queue is not None and not queue:
            del self.queues[key]
            del self.rows[key]
        return segments

    def completed(self) -> list[int]:
        """Slots taken since the last call whose asked-for units have all been taken (in order)."""
        done = [s for s in dict.fromkeys(self._ran) if self.outstanding.get(s, 0) == 0]
        self._ran.clear()
        return done

    def seen(self, slot: int) -> int:
        """Units of ``slot`` asked for so far (all run once the slot is completed)."""
        return self.planned[slot]
