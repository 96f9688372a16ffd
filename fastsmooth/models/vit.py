"""Vision transformers for smoothed-ViT patch certification (semantics.md §10).

:class:`TokenViT` wraps a timm ``VisionTransformer`` (patch embedding + class token) so that it
runs on the pixels of the *kept* tokens only: the fused op ``fastsmooth.ops.ablate_tokens``
writes them as ``[N, K, C * p_h * p_w]`` rows, the patch embedding is one matmul with the
flattened convolution weight, positional embeddings are gathered for the kept token indices,
and the class token is prepended. ``drop_tokens`` says whether the model was trained (and is
certified) on the kept tokens only, or on all tokens with ablated pixels at the fill value; a
checkpoint records it (:func:`fastsmooth.training.save_checkpoint` reads ``model.drop_tokens``).

timm is an optional dependency (``pip install fastsmooth[vit]``); it is imported when a ViT is
built. Nothing is downloaded: ``pretrained=`` takes a local file (timm / safetensors / torch).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["TokenViT", "build_vit", "mnist_vit", "cifar_vit", "vit_names", "import_timm"]

#: Registry names of fastsmooth.models.build that make a TokenViT (besides "vit:<timm name>").
VIT_PRESETS = ("mnist_vit", "cifar_vit")


def _timm() -> Any:
    from fastsmooth.models._torchvision_compat import import_timm

    try:
        return import_timm()
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "vision transformers need timm: pip install 'fastsmooth[vit]' (timm==1.0.19, torchvision==0.28.0)"
        ) from err


def import_timm() -> Any:
    """timm (the optional extra ``vit``); raises ImportError naming the extra when it is missing."""
    return _timm()


class TokenViT(nn.Module):
    """A timm VisionTransformer that classifies from the kept tokens of an ablated image.

    Args:
        vit: a ``timm.models.vision_transformer.VisionTransformer`` with a class token, no
            register tokens, class-token pooling and a fixed image size.
        drop_tokens: True: the model sees only the kept tokens (token dropping); False: it
            sees every token, ablated pixels at the fill value.

    ``forward(x)`` runs the plain ViT on a batch of C-channel images; ``forward_tokens(pixels,
    index)`` runs it on kept tokens (what the smoothers call).
    """

    def __init__(self, vit: nn.Module, drop_tokens: bool = True) -> None:
        super().__init__()
        _check_supported(vit)
        if not isinstance(drop_tokens, bool):
            raise TypeError(f"drop_tokens must be a bool, got {drop_tokens!r}")
        self.vit = vit
        self.drop_tokens = drop_tokens
        proj = vit.patch_embed.proj
        self.patch = (int(proj.kernel_size[0]), int(proj.kernel_size[1]))
        self.grid = (int(vit.patch_embed.grid_size[0]), int(vit.patch_embed.grid_size[1]))
        self.in_chans = int(proj.in_channels)
        self.image_size = (self.grid[0] * self.patch[0], self.grid[1] * self.patch[1])
        self.num_classes = int(vit.num_classes)

    @property
    def num_tokens(self) -> int:
        """Patch tokens of a whole image (G_h * G_w), without the class token."""
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of whole C-channel images (every token), as the timm model computes them; with
        ``index``, x holds kept-token pixels and this is :meth:`forward_tokens`."""
        if index is not None:
            return self.forward_tokens(x, index)
        return self.vit(x)

    def embed(self, pixels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The token sequence [N, 1 + K, D] (class token first) of kept-token pixels.

        pixels: [N, K, C * p_h * p_w], each row a patch flattened as (c, dy, dx) (the layout of
        the convolution weight); index: [K] or [N, K] patch indices (row-major) of the rows.
        """
        vit = self.vit
        proj = vit.patch_embed.proj
        weight = proj.weight.reshape(proj.out_channels, -1)
        tokens = torch.nn.functional.linear(pixels, weight, proj.bias)  # the patch convolution as one matmul
        tokens = vit.patch_embed.norm(tokens)
        pos = vit.pos_embed[0]  # [1 + G, D]; class token at 0 (no_embed_class is refused)
        tokens = tokens + pos[1 + index]
        cls = (vit.cls_token[0] + pos[:1]).expand(tokens.shape[0], 1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward_tokens(self, pixels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] from kept-token pixels (see :meth:`embed`)."""
        vit = self.vit
        x = vit.pos_drop(self.embed(pixels, index))
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return vit.forward_head(x)


def _check_supported(vit: nn.Module) -> None:
    timm = _timm()
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"vit must be a timm VisionTransformer, got {type(vit).__name__}")
    problems = []
    if vit.cls_token is None or getattr(vit, "num_prefix_tokens", 1) != 1:
        problems.append(f"exactly one prefix token, the class token (num_prefix_tokens={vit.num_prefix_tokens})")
    if getattr(vit, "no_embed_class", False):
        problems.append("a positional embedding for the class token (no_embed_class=False)")
    if getattr(vit, "global_pool", "token") != "token":
        problems.append(f"class-token pooling (global_pool='token', got {vit.global_pool!r})")
    if getattr(vit, "dynamic_img_size", False):
        problems.append("a fixed image size (dynamic_img_size=False)")
    proj = getattr(vit.patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride or proj.padding != (0, 0):
        problems.append("a non-overlapping convolutional patch embedding")
    if problems:
        raise ValueError(f"token dropping needs a timm ViT with {'; '.join(problems)} (timm {timm.__version__})")


def vit_names() -> list[str]:
    """timm model names that build a supported ViT (``vit_*`` and ``deit_*`` without distillation)."""
    timm = _timm()
    return sorted(n for n in timm.list_models(["vit_*", "deit_*"]) if "distilled" not in n)


def _load_pretrained(vit: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local timm / safetensors / torch checkpoint into ``vit`` (never downloads)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained={path!r}: no such file (give a local checkpoint; nothing is downloaded)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        from fastsmooth.models.checkpoint import extract_state_dict, read_checkpoint

        state = extract_state_dict(read_checkpoint(path))
    # weights saved from a TokenViT carry the "vit." prefix; timm's own files do not
    if state and all(k.startswith("vit.") for k in state):
        state = {k[len("vit."):]: v for k, v in state.items()}
    from timm.models.vision_transformer import checkpoint_filter_fn

    vit.load_state_dict(checkpoint_filter_fn(state, vit))


def build_vit(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    img_size: int | tuple[int, int] | None = None,
    patch_size: int | None = None,
    drop_tokens: bool = True,
    pretrained: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> TokenViT:
    """A :class:`TokenViT` around ``timm.create_model(name, pretrained=False, ...)``.

    Args:
        name: a timm ViT / DeiT name (see :func:`vit_names`), e.g. ``vit_small_patch16_224``.
        num_classes, in_channels, img_size, patch_size: passed to timm (None: timm's default).
        drop_tokens: whether the model runs on kept tokens only (see :class:`TokenViT`).
        pretrained: a local checkpoint file to load (timm / safetensors / torch state dict).
        **kwargs: further timm model arguments (``depth``, ``embed_dim``, ``num_heads``, ...).
    """
    timm = _timm()
    if name not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r}; see fastsmooth.models.vit.vit_names()")
    if img_size is not None:
        kwargs["img_size"] = img_size
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    vit = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    if pretrained is not None:
        _load_pretrained(vit, pretrained)
    return TokenViT(vit, drop_tokens=drop_tokens)


def mnist_vit(in_channels: int = 1, num_classes: int = 10, drop_tokens: bool = True, **kwargs: Any) -> TokenViT:
    """A small ViT for 28 x 28 images: 4 x 4 patches (49 tokens), width 64, depth 4, 4 heads."""
    args = dict(img_size=28, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
    args.update(kwargs)
    return build_vit("vit_tiny_patch16_224", num_classes=num_classes, in_channels=in_channels,
                     drop_tokens=drop_tokens, **args)


def cifar_vit(in_channels: int = 3, num_classes: int = 10, drop_tokens: bool = True, **kwargs: Any) -> TokenViT:
    """A small ViT for 32 x 32 images: 4 x 4 patches (64 tokens), width 96, depth 4, 3 heads."""
    args = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0)
    args.update(kwargs)
    return build_vit("vit_tiny_patch16_224", num_classes=num_classes, in_channels=in_channels,
                     drop_tokens=drop_tokens, **args)
