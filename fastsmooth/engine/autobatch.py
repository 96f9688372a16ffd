"""``batch_size="auto"``: the forward batch size, picked by timing the base model.

Per-row cost of a forward falls with the batch size until the model saturates the device,
then flattens or rises (cache misses on a CPU: the MNIST column row ran 1.5x slower at 1000
than at 100). Candidate sizes are timed on copies of a real input row, smallest first, and
the fastest per row is kept. The timing is kept cheap:

- only sizes up to the rows the call has pending (``limit``) are timed, that many rows being
  a candidate itself (a call of 56 images x 28 ablations times 16, 32, ... up to 1024; one of
  10 rows runs them in one forward of 10, untimed);
- the climb stops at the first size more than 10% slower per row than a smaller one (the
  model is saturated: larger sizes only hold more memory), and among sizes within 5% of the
  fastest per row the largest is kept (fewer forwards, less engine work per row);
- every time is remembered per model, input row shape, dtype, device, layout and autocast,
  so a later call times only the sizes it may use and no earlier call has timed.

The size chosen never changes an answer (seeded randomness is keyed per image and sample,
not per forward), and it is kept out of results files: a smoother records ``"auto"``.
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable, Hashable

import torch

CANDIDATES = (16, 32, 64, 128, 256, 512, 1024)
_REPEATS = 2  # timed forwards per candidate (after one warm-up), the fastest kept
# The climb stops at the first size this much slower per row than a smaller one: timings on a
# busy CPU vary by several percent, and stopping at the first slower timing at all left the
# MNIST column row at 16 rows (32 had timed 0.6% slower), 1.3x slower than batch 56.
SATURATED = 1.10
# Among sizes within this fraction of the least time per row, the largest is kept: the timing
# covers the model alone, and the engine's costs per forward (the fused op call, the tally)
# fall with fewer, larger forwards.
TIE = 0.05


@dataclasses.dataclass
class Timings:
    """Seconds per row of the sizes timed so far, and the first size found slower per row than
    a smaller one (larger sizes are not timed: the model is saturated there)."""

    per_row: dict[int, float] = dataclasses.field(default_factory=dict)
    ceiling: int | None = None

    def best(self, limit: int | None) -> int:
        """The largest size (<= ``limit``) within ``TIE`` of the least time per row."""
        sizes = [n for n in self.per_row if limit is None or n <= limit]
        least = min(self.per_row[n] for n in sizes)
        return max(n for n in sizes if self.per_row[n] <= least * (1 + TIE))


_chosen: weakref.WeakKeyDictionary[object, dict[Hashable, Timings]] = weakref.WeakKeyDictionary()


def candidates(limit: int | None) -> list[int]:
    """The sizes worth timing for a call with ``limit`` rows pending (None: no bound)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit!r}")
    sizes = [n for n in CANDIDATES if limit is None or n < limit]
    if limit is not None and limit <= CANDIDATES[-1]:
        sizes.append(limit)  # all the pending rows in one forward
    return sizes


def _time(forward: Callable[[int], object], n: int, device: torch.device | None) -> float:
    """Seconds per row of ``forward(n)``: the fastest of a few calls after a warm-up."""
    cuda = device is not None and device.type == "cuda"
    forward(n)  # warm-up: allocator, oneDNN / cuDNN plans
    times = []
    for _ in range(_REPEATS):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        forward(n)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times) / n


def fastest(
    forward: Callable[[int], object],
    limit: int | None = None,
    device: torch.device | None = None,
    timings: Timings | None = None,
) -> int:
    """The size (<= ``limit``) with the least time per row of ``forward(n)``, timing only the
    candidates ``timings`` does not hold yet (and none past a saturated climb)."""
    timings = Timings() if timings is None else timings
    sizes = candidates(limit)
    if len(sizes) == 1:  # one forward holds every pending row: nothing to choose
        return sizes[0]
    for n in sizes:
        if timings.ceiling is not None and n >= timings.ceiling:
            break
        if n not in timings.per_row:
            timings.per_row[n] = _time(forward, n, device)
        smaller = [t for m, t in timings.per_row.items() if m < n]
        if smaller and timings.per_row[n] > SATURATED * min(smaller):  # the model is saturated
            timings.ceiling = n
            break
    return timings.best(limit)


def auto_batch_size(
    model: object, key: Hashable, row: torch.Tensor, run: Callable[[torch.Tensor], object], limit: int | None = None
) -> int:
    """The batch size for ``model`` on rows like ``row`` [1, ...] in a call with ``limit`` rows
    pending: measured (see the module) and remembered per ``model`` and ``key``."""
    try:
        known = _chosen.setdefault(model, {})
    except TypeError:  # not weak-referenceable: measure every time
        known = {}
    timings = known.setdefault(key, Timings())
    return fastest(lambda n: run(row.expand(n, *row.shape[1:])), limit, row.device, timings)
