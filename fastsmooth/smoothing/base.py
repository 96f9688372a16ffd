"""What every smoother shares: running the base model in bounded batches, and the result type
that ``fastsmooth.evaluate`` tabulates."""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn


class Certified(NamedTuple):
    """Per-image outcome of a certification.

    prediction: int64 [B], -1 where the smoother abstains.
    certificate: float64 [B], the largest certified patch size (patch smoothers) or radius
    (l0 / l1 / l2 smoothers); an image is certified at level t when ``certificate >= t`` and
    it does not abstain. Negative values mean nothing is certified.
    """

    prediction: torch.Tensor
    certificate: torch.Tensor


class BaseSmoother:
    """Holds the base model and runs it in inference mode over chunks of at most ``batch_size``.

    ``autocast`` (None, torch.bfloat16 or torch.float16) runs the base model under
    ``torch.autocast``: that changes the base classifier, so certificates are then those of
    the reduced-precision model.
    """

    certificate_name = "certificate"  # "patch_size" or "radius" in subclasses

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        batch_size: int = 1000,
        backend: str = "auto",
        autocast: torch.dtype | None = None,
    ) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or callable, got {type(model).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if autocast not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}")
        self.model = model
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.backend = backend
        self.autocast = autocast

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a parameterless callable)."""
        if isinstance(self.model, nn.Module):
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The base model's logits [N, num_classes] for a batch that fits in one forward pass."""
        # eval() walks every submodule: once per certification, not once per chunk.
        if isinstance(self.model, nn.Module) and self.model.training:
            self.model.eval()
        with torch.inference_mode():
            if self.autocast is None:
                out = self.model(inputs)
            else:
                with torch.autocast(inputs.device.type, dtype=self.autocast):
                    out = self.model(inputs)
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise ValueError(
                f"the base model returned shape {tuple(out.shape)}, expected (N, num_classes={self.num_classes})"
            )
        return out.float()

    def chunks(self, total: int, per_item: int = 1) -> Iterator[range]:
        """Ranges of items such that ``len(range) * per_item <= batch_size`` (at least one item)."""
        step = max(1, self.batch_size // max(1, per_item))
        for start in range(0, total, step):
            yield range(start, min(total, start + step))
