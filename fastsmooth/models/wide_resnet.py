"""WideResNet (Zagoruyko & Komodakis) in the widely copied xternalz/WideResNet-pytorch layout.

Pre-activation blocks (bn-relu-conv). Module names ``conv1``, ``block1..3`` (each with a ``layer``
Sequential of blocks holding ``bn1``, ``conv1``, ``bn2``, ``conv2`` and, when the width changes,
``convShortcut``), ``bn1``, ``fc`` are those of that implementation, which the l1-smoothing code
bases reuse, so its checkpoints load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideBasicBlock", "WideResNet", "wrn40_2"]


class WideBasicBlock(nn.Module):
    """bn-relu-conv3x3-bn-relu-(dropout)-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # As in the reference implementation: when the width changes, the 1x1 shortcut is taken
        # from the *pre-activated* input; otherwise the shortcut is the raw input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class _NetworkBlock(nn.Module):
    """A stage of ``n`` blocks, stored under ``.layer`` as in the reference implementation."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen for 32 x 32 inputs.

    Args:
        depth: 6n + 4 (40 for WRN-40-2).
        widen_factor: channel multiplier (2 for WRN-40-2).
        in_channels: 3 (RGB).
        num_classes: 10 (CIFAR-10).
        drop_rate: dropout inside blocks; 0 as in the papers.
    """

    def __init__(self, depth: int = 40, widen_factor: int = 2, in_channels: int = 3,
                 num_classes: int = 10, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.n_channels = widths[3]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        # avg_pool2d(out, 8) in the original == global average on the 8x8 map of a 32x32 input.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def wrn40_2(in_channels: int = 3, num_classes: int = 10) -> WideResNet:
    """WRN-40-2 (about 2.24M parameters), dropout 0."""
    return WideResNet(40, 2, in_channels=in_channels, num_classes=num_classes)
