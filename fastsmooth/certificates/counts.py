"""Winner and runner-up of vote counts, with the tie rules of semantics.md §0."""
from __future__ import annotations

import torch


def top_two(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, runner_up) for counts [B, K].

    The prediction is the argmax, the smallest class index on ties. The runner-up is the
    smallest index among the classes holding the largest count once the winner is removed,
    i.e. the second entry of a stable descending sort of the counts.
    """
    if counts.dim() != 2 or counts.shape[1] < 2:
        raise ValueError(f"counts must be [B, K] with K >= 2 classes, got shape {tuple(counts.shape)}")
    order = torch.sort(counts, dim=1, descending=True, stable=True).indices
    return order[:, 0], order[:, 1]
