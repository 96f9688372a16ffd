"""Per-slot vote counts kept on the model's device, added a few megabytes of logits at a time."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fastsmooth.engine.items import Segment

PENDING_LOGITS = 1 << 22  # logits (floats) held before their votes are counted


class NonFiniteLogitsError(ValueError):
    """The base model returned NaN or Inf logits: such a row is no vote (the argmax of a NaN row
    is an arbitrary class), so counts that saw one give no answer."""

    def __init__(self, bad: int, rows: int) -> None:
        self.bad, self.rows = bad, rows
        super().__init__(
            f"the base model returned non-finite logits (NaN or Inf) for {bad} of the {rows} rows (ablations / noise "
            f"samples) evaluated: they are not votes, so nothing is predicted or certified; check the model's weights "
            f"(e.g. all(p.isfinite().all() for p in model.parameters())) and what it does with its inputs"
        )


class Tally:
    """``counts[slot]`` += votes of the rows of each segment.

    Logits are copied into one buffer as they come (a model may return the same tensor,
    overwritten, at every call, as a CUDA-graph replay does) and voted on when it is full or
    when the counts are read: a vote per forward would cost a small kernel launch and an
    index tensor each time, a measurable share of small forwards.
    """

    def __init__(
        self, slots: int, num_classes: int, votes: Callable[[torch.Tensor], torch.Tensor], device: torch.device, rows: int
    ) -> None:
        """``rows``: how many logits rows will come in all (bounds the buffer)."""
        self.counts = torch.zeros(slots, num_classes, dtype=torch.int64, device=device)
        self.votes = votes
        held = max(1, min(rows, PENDING_LOGITS // num_classes))
        self.buffer = torch.empty(held, num_classes, device=device)
        self.held = 0
        self.slots: list[int] = []  # the slot of each group of held rows...
        self.rows: list[int] = []  # ...and its number of rows
        # Rows with a non-finite logit, summed on the device (no host sync per forward): read by
        # check(), which the engine calls wherever counts leave it.
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self.voted = 0  # rows counted so far

    def add(self, logits: torch.Tensor, segments: Sequence[Segment]) -> None:
        """Votes of ``logits`` (rows in segment order) go to the segments' slots."""
        rows, room = logits.shape[0], self.buffer.shape[0]  # (not len(): a Python-level call per forward)
        if self.held + rows > room:
            self.flush()
        if rows > room:  # larger than the whole buffer: count it directly
            self._count(logits, [s.slot for s in segments], [s.rows for s in segments])
            return
        self.buffer[self.held : self.held + rows].copy_(logits)
        self.held += rows
        self.slots.extend(s.slot for s in segments)
        self.rows.extend(s.rows for s in segments)

    def flush(self) -> torch.Tensor:
        """Counts every held row; returns the counts [slots, K] (on the device)."""
        if self.held:
            self._count(self.buffer[: self.held], self.slots, self.rows)
        self.held = 0
        self.slots.clear()
        self.rows.clear()
        return self.counts

    def check(self) -> None:
        """Raises :class:`NonFiniteLogitsError` if any row counted so far had a NaN / Inf logit
        (one read of a device scalar: call it where counts are read anyway)."""
        bad = int(self.nonfinite)
        if bad:
            raise NonFiniteLogitsError(bad, self.voted)

    def _count(self, logits: torch.Tensor, slots: list[int], rows: list[int]) -> None:
        self.nonfinite += logits.isfinite().all(dim=1).logical_not_().sum()
        self.voted += logits.shape[0]
        slot = torch.from_numpy(np.repeat(np.asarray(slots, dtype=np.int64), rows))  # (one call, not three)
        self.counts.index_add_(0, slot.to(self.counts.device), self.votes(logits))
