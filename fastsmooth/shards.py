"""Shards: a deterministic, disjoint split of a run's images into N parts, for job arrays.

A run certifies the images ``i`` with ``i % skip == 0`` and ``i < max`` (the authors'
``--skip`` / ``--max``). Shard ``K/N`` (K in 1..N) takes every N-th of those, starting from
the K-th: the selected image at position ``p = i // skip`` goes to shard ``p % N + 1``.
Interleaving (rather than N contiguous blocks) needs no knowledge of the data set's length
and spreads images of different costs evenly over the parts. Each part is a results file of
its own; ``fastsmooth merge`` (:func:`fastsmooth.merge.merge_parts`) joins them.
"""
from __future__ import annotations

import dataclasses
import re

__all__ = ["Shard", "parse_shard", "selected"]


@dataclasses.dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"shard {name} must be an integer, got {value!r}")
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 <= K <= N in K/N (e.g. 1/3, 2/3, 3/3)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, index: int, skip: int = 1) -> bool:
        """Whether image ``index`` (already selected by ``skip``) belongs to this shard."""
        return (index // skip) % self.count == self.index - 1


def parse_shard(text: str | Shard | tuple[int, int]) -> Shard:
    """``"K/N"``, a ``(K, N)`` pair or a :class:`Shard`."""
    if isinstance(text, Shard):
        return text
    if isinstance(text, tuple) and len(text) == 2:
        return Shard(*text)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ValueError(f"shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/3 (the second of three parts)")
    return Shard(int(match.group(1)), int(match.group(2)))


def selected(index: int, skip: int = 1, max: int | None = None, shard: Shard | None = None) -> bool:  # noqa: A002
    """Whether a run with ``skip``, ``max`` and ``shard`` certifies image ``index``."""
    if max is not None and index >= max:
        return False
    if index % skip:
        return False
    return shard is None or shard.holds(index, skip)
