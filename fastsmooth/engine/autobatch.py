"""``batch_size="auto"``: the forward batch size, picked by timing the base model.

Per-row cost of a forward falls with the batch size until the model saturates the device,
then flattens or rises (cache misses on a CPU: the MNIST column row ran 1.5x slower at 1000
than at 100). The fastest per-row size among a few candidates is measured once per model,
input row shape, dtype, device and layout, on copies of a real input row, and remembered.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable

import torch

CANDIDATES = (16, 32, 64, 128, 256, 512, 1024)
_REPEATS = 3  # timed forwards per candidate (after one warm-up), the median kept
_chosen: weakref.WeakKeyDictionary[object, dict[Hashable, int]] = weakref.WeakKeyDictionary()


def fastest(forward: Callable[[int], object], limit: int | None = None, device: torch.device | None = None) -> int:
    """The candidate batch size (<= ``limit``) with the least time per row of ``forward(n)``."""
    sizes = [n for n in CANDIDATES if limit is None or n <= limit] or [max(1, limit or 1)]
    best, best_cost = sizes[0], float("inf")
    for n in sizes:
        forward(n)  # warm-up: allocator, oneDNN / cuDNN plans
        times = []
        for _ in range(_REPEATS):
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            forward(n)
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        cost = sorted(times)[len(times) // 2] / n
        if cost < best_cost:
            best, best_cost = n, cost
    return best


def auto_batch_size(
    model: object, key: Hashable, row: torch.Tensor, run: Callable[[torch.Tensor], object], limit: int | None = None
) -> int:
    """The remembered (or now measured) batch size for ``model`` on rows like ``row`` [1, ...]."""
    try:
        known = _chosen.setdefault(model, {})
    except TypeError:  # not weak-referenceable: measure every time
        known = {}
    if key not in known:
        known[key] = fastest(lambda n: run(row.expand(n, *row.shape[1:])), limit, row.device)
    return known[key]
