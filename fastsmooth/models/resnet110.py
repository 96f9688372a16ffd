"""Cohen et al.'s CIFAR ResNet-110 and their input-normalization wrapper.

Cohen et al. (randomized smoothing) reuse the CIFAR ResNet of bearpaw/pytorch-classification
(BasicBlock, 16-32-64 channels, ``conv1``/``bn1``/``layer1..3``/``avgpool``/``fc``, blocks with
``conv1``/``bn1``/``conv2``/``bn2``/``downsample``) and put a normalization layer *in front of the
network*, so that noise is added in [0, 1] pixel space: their ``get_architecture`` returns
``Sequential(NormalizeLayer, DataParallel(net))``, whose state-dict keys are ``1.module.conv1.weight``
etc. :func:`cohen_architecture` builds the same ``Sequential`` (without DataParallel); the
checkpoint loader drops the ``module.`` segment.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from fastsmooth.models.resnet_imagenet import imagenet_resnet50

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "NormalizeLayer", "CohenBasicBlock", "CohenCifarResNet", "cifar_resnet110", "cohen_architecture",
]

# The constants of Cohen et al.'s datasets.py (note the CIFAR std is the commonly used 0.2023 ...,
# not the true per-channel std); their checkpoints were trained with exactly these.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizeLayer(nn.Module):
    """``(x - mean[c]) / std[c]`` per channel of an NCHW batch.

    The mean and std are *non-persistent* buffers: they follow ``.to(device)`` but are not in the
    state dict, because Cohen's layer kept them as plain attributes and their checkpoints therefore
    have no ``0.*`` keys (a strict load would otherwise fail).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"NormalizeLayer expects {self.mean.shape[1]} channels, got input of shape {tuple(x.shape)}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class CohenBasicBlock(nn.Module):
    """Post-activation basic block with an optional ``downsample`` (1x1 conv + bn) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class CohenCifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2 (110 -> n = 18 blocks per stage), for 32 x 32 inputs.

    Args:
        depth: 6n + 2.
        in_channels: 3 (RGB).
        num_classes: 10 (CIFAR-10).
    """

    def __init__(self, depth: int = 110, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AvgPool2d(8)  # as in the original: 32x32 inputs give an 8x8 final map
        self.fc = nn.Linear(64 * CohenBasicBlock.expansion, num_classes)
        # The original initialization (He normal with fan-out), so new models train like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * CohenBasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * CohenBasicBlock.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * CohenBasicBlock.expansion),
            )
        layers = [CohenBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * CohenBasicBlock.expansion
        layers += [CohenBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet110(in_channels: int = 3, num_classes: int = 10) -> CohenCifarResNet:
    """Cohen et al.'s CIFAR-10 ResNet-110 (about 1.73M parameters), without normalization."""
    return CohenCifarResNet(110, in_channels=in_channels, num_classes=num_classes)


def cohen_architecture(arch: str = "cifar_resnet110", dataset: str = "cifar10") -> nn.Sequential:
    """Cohen et al.'s ``get_architecture``: ``Sequential(NormalizeLayer(dataset), net)``.

    Args:
        arch: ``"cifar_resnet110"`` or ``"resnet50"`` (torchvision-layout, 3 channels, 1000 classes).
        dataset: ``"cifar10"`` or ``"imagenet"``; selects the normalization constants.

    The model takes [0, 1] images; its state-dict keys are ``1.<net key>`` (Cohen's checkpoints
    have ``1.module.<net key>``, which :func:`fastsmooth.models.load_checkpoint` accepts).
    """
    norms = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
    if dataset not in norms:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(norms)}")
    if arch == "cifar_resnet110":
        net: nn.Module = cifar_resnet110(num_classes=10)
    elif arch == "resnet50":
        net = imagenet_resnet50(in_channels=3, num_classes=1000)
    else:
        raise ValueError(f"unknown Cohen architecture {arch!r}; expected 'cifar_resnet110' or 'resnet50'")
    return nn.Sequential(NormalizeLayer(*norms[dataset]), net)
