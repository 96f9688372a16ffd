"""Work items: what a smoother asks the base model to evaluate, and how it becomes a model input.

A smoother enumerates or samples *units* per image: ablation positions, DSSN offsets, noise
sample indices, l0 subsets. Unit ``u`` of image ``i`` is one row of one forward pass; its
model input is a pure function of (image, unit) and the smoother's settings, so the same
units give the same votes whichever forward they land in. A :class:`Segment` is a run of
consecutive units of one image that share a forward; the votes of its rows go to counts
row ``slot``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import torch


@dataclasses.dataclass(frozen=True)
class Segment:
    """Units ``first .. end - 1`` of image ``image`` (a row of x), voting into counts row ``slot``."""

    slot: int
    image: int
    first: int
    end: int

    @property
    def rows(self) -> int:
        return self.end - self.first


class Work(Protocol):
    """How a smoother plugs into the engine (see ``fastsmooth.engine`` for the walk-through).

    ``granule``: pending units are cut into forwards only at multiples of it (ops whose
    randomness is keyed per call, not per sample, draw one granule per call); 1 elsewhere.
    """

    granule: int

    def groups(self, image: int, first: int, end: int) -> Sequence[tuple[Hashable, int, int]]:
        """Units first .. end - 1 of ``image`` as runs ``(group key, first, end)``: only units of
        one group key share a forward (e.g. ViT inputs with the same number of kept tokens)."""
        ...

    def build(self, segments: Sequence[Segment]) -> Any:
        """The model input of every row of ``segments``, in order (one write; may span forwards)."""
        ...

    def forward(self, inputs: Any, start: int, stop: int) -> torch.Tensor:
        """Logits [stop - start, K] of rows start .. stop - 1 of ``build``'s result (one forward)."""
        ...

    def votes(self, logits: torch.Tensor) -> torch.Tensor:
        """Votes [N, K] (int64, 0 / 1) of N rows' logits."""
        ...


def one_group(image: int, first: int, end: int) -> list[tuple[Hashable, int, int]]:
    """The default :meth:`Work.groups`: every unit may share a forward with any other."""
    return [(None, first, end)]


def runs(segments: Sequence[Segment]) -> list[tuple[int, int, int, int, int]]:
    """Maximal runs of segments over consecutive images with the same unit range:
    ``(first image, end image, first unit, end unit, first row)``. A fused op writes each run
    in one call (every image of a run uses the same units); consecutive units of one image
    split across forwards form one run too."""
    pieces: list[list[int]] = []  # [image, first, end, row]: one image's consecutive units joined first
    row = 0
    for s in segments:
        if pieces and pieces[-1][0] == s.image and pieces[-1][2] == s.first:
            pieces[-1][2] = s.end
        else:
            pieces.append([s.image, s.first, s.end, row])
        row += s.rows
    out: list[tuple[int, int, int, int, int]] = []
    for image, first, end, row in pieces:  # then consecutive images with the same units
        if out and out[-1][1] == image and out[-1][2] == first and out[-1][3] == end:
            out[-1] = (out[-1][0], image + 1, first, end, out[-1][4])
        else:
            out.append((image, image + 1, first, end, row))
    return out


def mix_seed(seed: int, *words: int) -> int:
    """A 63-bit seed for (seed, words...) (splitmix64 steps): per-image and per-granule seeds of
    ops whose randomness is keyed by one seed per call."""
    mask = (1 << 64) - 1
    z = seed & mask
    for w in words:
        z = (z + 0x9E3779B97F4A7C15 + (w & mask)) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
    return z >> 1


def spread(total: int) -> torch.Tensor:
    """An order of units 0 .. total - 1 that visits them evenly: u_k = k * g mod total, g coprime
    to total and near total / golden ratio.

    Early-exit decisions look at a prefix of the units; neighbouring ablations (bands, blocks,
    DSSN offsets) overlap and vote alike, so a prefix spread over the image is a better sample
    of the final counts than a prefix of the spec's order, and decides sooner. Any order gives
    the same answers.
    """
    import math

    if total <= 2:
        return torch.arange(total)
    g = max(1, round(total * 0.6180339887))
    while math.gcd(g, total) != 1:
        g += 1
    return (torch.arange(total) * g) % total
