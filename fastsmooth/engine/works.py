"""Work for smoothers whose fused op draws its randomness from one seed per call.

The l0 pixel ablation and the SSN / uniform noise ops key their randomness by (seed, sample
index within the call). To make unit u of image i the same sample whichever forward it lands
in, units are cut into granules of ``GRANULE`` units: granule k of image i is drawn by its own
call, ``op(x[i], n, seed=mix_seed(seed, i, k))``, and unit u is sample ``u mod GRANULE`` of
granule ``u // GRANULE`` (the ops' sample j does not depend on n, so a shorter call gives a
prefix of the granule). The batch former cuts forwards at granule boundaries where it can; a
segment that starts inside a granule draws the granule's prefix and keeps its tail.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastsmooth.engine.items import Segment, mix_seed

GRANULE = 100  # units per op call (divides the usual n0 / look schedules: 100, 1000, 10,000)

# op(image [1, C, H, W], n, seed) -> n model inputs [n, ...]
SeededOp = Callable[[torch.Tensor, int, int], torch.Tensor]


def top1_votes(num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Votes of hard argmax (first maximum: the smallest class on ties)."""
    return lambda logits: torch.nn.functional.one_hot(logits.argmax(dim=1), num_classes)


class SeededWork:
    """Units = samples of ``op``; ``logits(inputs)`` runs the base model on one forward."""

    granule = GRANULE

    def __init__(
        self,
        x: torch.Tensor,
        op: SeededOp,
        seed: int,
        logits: Callable[[torch.Tensor], torch.Tensor],
        num_classes: int,
        image_ids: Sequence[int] | None = None,
    ) -> None:
        self.x, self.op, self.seed, self.logits = x, op, seed, logits
        self.image_ids = image_ids
        self.votes = top1_votes(num_classes)

    def _draw(self, image: int, first: int, end: int) -> list[torch.Tensor]:
        g = self.granule
        ident = image if self.image_ids is None else self.image_ids[image]
        parts = []
        a = first
        while a < end:
            k = a // g
            b = min(end, (k + 1) * g)
            sample = self.op(self.x[image : image + 1], b - k * g, mix_seed(self.seed, ident, k))
            parts.append(sample if a == k * g else sample[a - k * g :])
            a = b
        return parts

    def build(self, segments: Sequence[Segment]) -> torch.Tensor:
        parts = [p for s in segments for p in self._draw(s.image, s.first, s.end)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.logits(inputs[start:stop])
