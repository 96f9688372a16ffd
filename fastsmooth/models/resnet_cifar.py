"""CIFAR ResNet-18 in the layout of kuangliu/pytorch-cifar (used by the patch and l0 papers).

The attribute names (``conv1``, ``bn1``, ``layer1..4``, ``linear``; blocks with ``conv1``, ``bn1``,
``conv2``, ``bn2``, ``shortcut``) are those of that code base, so the authors' checkpoints load.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarBasicBlock", "CifarResNet", "cifar_resnet18"]


class CifarBasicBlock(nn.Module):
    """Post-activation basic block; ``shortcut`` is an empty Sequential when it is the identity."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # An empty Sequential (rather than None) keeps the module tree identical to the original.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem and no max-pool (the CIFAR variant).

    Args:
        num_blocks: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        in_channels: input channels (6 for the ablation encoding of an RGB image).
        num_classes: output classes.
    """

    def __init__(self, num_blocks: Sequence[int], in_channels: int = 6, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * CifarBasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * CifarBasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # The original uses avg_pool2d(out, 4), which on 32x32 inputs is exactly a global average;
        # the adaptive form gives the same numbers there and also accepts other input sizes.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet18(in_channels: int = 6, num_classes: int = 10) -> CifarResNet:
    """ResNet-18 for 32 x 32 inputs; 6 channels by default (ablation encoding of RGB)."""
    return CifarResNet((2, 2, 2, 2), in_channels=in_channels, num_classes=num_classes)
