"""The base networks of the papers fastsmooth certifies, and loading of the authors' checkpoints.

``build(name, **kwargs)`` makes a network by registry name; ``available()`` lists the names;
``load_checkpoint(model, path)`` loads the authors' checkpoint formats. Defaults:

=========================  ===========  ===========  =====================================================
name                       in_channels  num_classes  used for
=========================  ===========  ===========  =====================================================
``mnist_cnn``              2            10           MNIST patch smoothing / l0 ablation, 28 x 28
``cifar_resnet18``         6            10           CIFAR-10 patch smoothing / l0 ablation, 32 x 32
``imagenet_resnet50``      3            1000         ImageNet DSSN / SSN / uniform (and Cohen, unwrapped)
``imagenet_resnet50_6ch``  6            1000         ImageNet patch (299 x 299) / l0 ablation (224 x 224)
``wrn40_2``                3            10           CIFAR-10 DSSN / SSN / uniform, 32 x 32
``cifar_resnet110``        3            10           CIFAR-10 Cohen et al. network, without normalization
``cohen_cifar_resnet110``  3            10           ``Sequential(NormalizeLayer(CIFAR-10), ResNet-110)``
``cohen_imagenet_resnet50`` 3           1000         ``Sequential(NormalizeLayer(ImageNet), ResNet-50)``
``mnist_vit``              1            10           smoothed ViT (token dropping), 28 x 28, 4 x 4 patches
``cifar_vit``              3            10           smoothed ViT (token dropping), 32 x 32, 4 x 4 patches
``vit_*`` / ``deit_*``     3            1000         any timm ViT / DeiT by its timm name (``TokenViT``)
=========================  ===========  ===========  =====================================================

The ViTs need the optional extra ``vit`` (timm) and take ``drop_tokens=`` and, for timm names,
``pretrained=<local file>``, ``img_size=``, ``patch_size=`` and timm's own arguments.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from fastsmooth.models.checkpoint import (
    CheckpointError,
    classes_in,
    extract_state_dict,
    load_checkpoint,
    looks_like_torch_file,
    read_checkpoint,
)
from fastsmooth.models.mnist import MnistCNN
from fastsmooth.models.resnet110 import (
    CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, CohenCifarResNet, NormalizeLayer,
    cifar_resnet110, cohen_architecture,
)
from fastsmooth.models.resnet_cifar import CifarResNet, cifar_resnet18
from fastsmooth.models.resnet_imagenet import ImageNetResNet, imagenet_resnet50
from fastsmooth.models.wide_resnet import WideResNet, wrn40_2

# fastsmooth.models.vit imports timm only when a ViT is built (timm is an optional extra)
from fastsmooth.models import vit as _vit

__all__ = [
    "build", "available", "load_checkpoint", "read_checkpoint", "extract_state_dict", "CheckpointError",
    "MnistCNN", "CifarResNet", "ImageNetResNet", "WideResNet", "CohenCifarResNet", "NormalizeLayer",
    "cifar_resnet18", "imagenet_resnet50", "wrn40_2", "cifar_resnet110", "cohen_architecture",
    "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "is_vit", "build_base",
    "looks_like_torch_file", "classes_in",
]


def _imagenet_resnet50_6ch(in_channels: int = 6, num_classes: int = 1000) -> nn.Module:
    return imagenet_resnet50(in_channels=in_channels, num_classes=num_classes)


def _cohen_cifar_resnet110() -> nn.Module:
    return cohen_architecture("cifar_resnet110", "cifar10")


def _cohen_imagenet_resnet50() -> nn.Module:
    return cohen_architecture("resnet50", "imagenet")


_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "cifar_resnet18": cifar_resnet18,
    "imagenet_resnet50": imagenet_resnet50,
    "imagenet_resnet50_6ch": _imagenet_resnet50_6ch,
    "wrn40_2": wrn40_2,
    "cifar_resnet110": cifar_resnet110,
    # Cohen's wrapped models are fixed by their checkpoints, hence no keyword arguments.
    "cohen_cifar_resnet110": _cohen_cifar_resnet110,
    "cohen_imagenet_resnet50": _cohen_imagenet_resnet50,
    "mnist_vit": _vit.mnist_vit,
    "cifar_vit": _vit.cifar_vit,
}
_TIMM_PREFIXES = ("vit_", "deit_")  # any timm ViT / DeiT name builds a TokenViT


def is_vit(name: str) -> bool:
    """Whether ``build(name)`` makes a :class:`~fastsmooth.models.vit.TokenViT` (a C-channel model)."""
    return name in _vit.VIT_PRESETS or name.startswith(_TIMM_PREFIXES)


def available() -> List[str]:
    """The names :func:`build` accepts, sorted (timm ViT names are accepted too, not listed)."""
    return sorted(_REGISTRY)


def build(name: str, **kwargs) -> nn.Module:
    """Build a freshly initialized network by registry name (see the module docstring).

    Args:
        name: one of :func:`available`.
        **kwargs: passed to the constructor, e.g. ``in_channels`` / ``num_classes`` (not accepted
            by the ``cohen_*`` wrapped models).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in _REGISTRY and name.startswith(_TIMM_PREFIXES):
        return _vit.build_vit(name, **kwargs)
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available: {', '.join(available())}, or a timm ViT name (vit_* / deit_*)"
        ) from None
    return factory(**kwargs)


def build_base(arch: str, in_channels: int, num_classes: int, shape: Optional[Tuple[int, ...]] = None,
               drop_tokens: Optional[bool] = None) -> nn.Module:
    """The base network a method certifies: ``arch`` for ``in_channels`` inputs (the method's
    encoding of the images, e.g. 2C channels for ablation) and ``num_classes`` outputs.

    Smoothed ViTs are built at the data's image size ``shape`` ([C, H, W]; timm names) and token
    mode ``drop_tokens``; the ``cohen_*`` networks are fixed by the authors' checkpoints.

    Raises:
        ValueError: unknown ``arch``, or a ``cohen_*`` network given other than 3 input channels.
    """
    if is_vit(arch):
        kwargs: Dict[str, Any] = {} if drop_tokens is None else {"drop_tokens": bool(drop_tokens)}
        if shape is not None and arch.startswith(_TIMM_PREFIXES):
            kwargs["img_size"] = tuple(shape[1:])
        return build(arch, in_channels=in_channels, num_classes=num_classes, **kwargs)
    if arch.startswith("cohen_"):  # fixed by the authors' checkpoints: 3 channels, no keywords
        if in_channels != 3:
            raise ValueError(f"{arch} takes 3 input channels, but the method gives the model {in_channels}")
        return build(arch)
    return build(arch, in_channels=in_channels, num_classes=num_classes)
