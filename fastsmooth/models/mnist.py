"""The MNIST base network of the patch-smoothing and l0-ablation papers."""
from __future__ import annotations

from torch import nn

__all__ = ["MnistCNN"]


class MnistCNN(nn.Sequential):
    """Conv(in->64,k4,s2,p1) ReLU Conv(64->128,k4,s2,p1) ReLU Flatten Linear(6272->500) ReLU
    Linear(500->100) ReLU Linear(100->num_classes), on 28 x 28 inputs.

    A plain ``nn.Sequential`` (not a module with named attributes) on purpose: the authors built the
    network as an ``nn.Sequential``, so their checkpoints use the keys ``0.weight``, ``2.weight``,
    ``5.weight``, ``7.weight``, ``9.weight``; keeping the same indices makes them load unchanged.

    Args:
        in_channels: 2 by default, the ``[x, 1 - x]`` ablation encoding of a grey image.
        num_classes: 10 by default.
    """

    def __init__(self, in_channels: int = 2, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),  # parameter-free, so it may replace the authors' own Flatten module
            nn.Linear(128 * 7 * 7, 500),
            nn.ReLU(),
            nn.Linear(500, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )
