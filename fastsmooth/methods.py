"""The registry of smoothing methods the command line trains and certifies.

For each method: its hyperparameters under the papers' names (with defaults), how to build
its smoother around a base model, the training noise its base model needs (the training
variants of :mod:`fastsmooth.ops`), how many input channels it gives the base model (2C for
the ablation methods, C otherwise) and which image sizes it can use.

Hyperparameter names (the papers' symbols in brackets):

- ``size`` (s): band width / block side (patch methods, randomized band);
- ``stride``: certify with the bands (blocks) starting at 0, stride, 2 stride, .. only (column,
  row, block; a pair (rows, columns) for blocks); 1, every position, by default;
- ``threshold`` (theta): vote threshold on the softmax, ``None`` for top-1 votes;
- ``keep``: kappa (bands / tiles kept, multi-band / multi-block) or k (pixels kept, l0 ablation);
- ``sigma``: noise level (DSSN / SSN / uniform / Gaussian); ``seed``: the DSSN offset vector's seed;
- ``n0``, ``n``, ``alpha``: sample sizes and level of the statistical certificates;
- ``axis``, ``transposed``, ``sided``, ``mean``, ``std``: see the smoother classes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fastsmooth import ops
from fastsmooth.ops.ablation.masks import multi_band_masks, multi_block_masks, random_subsets
from fastsmooth.smoothing import (
    DSSN,
    PatchCleanser,
    SSN,
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    RandomizedAblation,
    RandomizedBandSmoothing,
    RowSmoothing,
    Smooth,
    UniformSmoothing,
)

__all__ = ["Method", "METHODS", "get", "names", "resolve", "for_vit"]

Hyper = dict[str, Any]
#: noise(x [B, C, H, W], generator) -> the base model's training input for that batch.
Noise = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Method:
    """One smoothing method.

    defaults: every hyperparameter with its default (``None`` where the user must choose,
    e.g. the band width). model_defining: the hyperparameters fixed at training time (a
    checkpoint records them; certifying with other values certifies a different model).
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    model_defining: tuple[str, ...]
    ablation: bool  # encodes [x, 1 - x]: the base model sees 2C channels
    build: Callable[[nn.Module, int, Hyper, int | str], Any]  # (model, num_classes, hp, batch_size) -> smoother
    noise: Callable[[Hyper, str], Noise]  # (hp, per) -> training noise
    check_shape: Callable[[Hyper, int, int], None]  # raises ValueError for an unusable H x W
    levels: tuple[float, ...]  # certificate levels of the summary table
    per_choices: tuple[str, ...] = ("image",)  # one noise draw per image, or one per minibatch

    def in_channels(self, image_channels: int) -> int:
        """Channels the base model receives for images of ``image_channels`` channels."""
        return 2 * image_channels if self.ablation else image_channels


# -- shape checks ------------------------------------------------------------------------------
def _need(hp: Hyper, name: str, method: str) -> Any:
    value = hp.get(name)
    if value is None:
        raise ValueError(f"method {method!r} needs the hyperparameter {name!r} (--{name.replace('_', '-')})")
    return value


def _fits(value: int, name: str, limit: int, what: str) -> None:
    if not 1 <= value <= limit:
        raise ValueError(f"{name}={value} cannot be used on {what}: it must be in [1, {limit}]")


def _band_axis(hp: Hyper) -> str:
    # Transposed row models are certified with column bands of the transposed image.
    return "column" if hp.get("transposed") else hp.get("axis", "column")


def _band_shape(hp: Hyper, H: int, W: int) -> None:
    axis = _band_axis(hp)
    length = W if axis == "column" else H
    _fits(hp["size"], "size", length, f"{H} x {W} images ({axis} bands)")
    if "stride" in hp:
        if isinstance(hp["stride"], (list, tuple)):
            raise ValueError(f"stride={list(hp['stride'])}: {axis} bands take one stride (an integer); "
                             "two (rows, columns) are for block smoothing")
        _fits(hp["stride"], "stride", length, f"{H} x {W} images ({axis} bands)")


def _block_stride(stride: Any) -> int | tuple[int, int]:
    """A block stride as the smoother takes it: an integer, or a pair (rows, columns) from a list."""
    if isinstance(stride, (list, tuple)):
        if len(stride) != 2:
            raise ValueError(f"stride={list(stride)} must be one integer or two (rows, columns), e.g. --stride 10 5")
        return tuple(stride) if stride[0] != stride[1] else stride[0]
    return stride


def _block_shape(hp: Hyper, H: int, W: int) -> None:
    _fits(hp["size"], "size", min(H, W), f"{H} x {W} images (blocks)")
    if "stride" in hp:
        stride = _block_stride(hp["stride"])
        rows, cols = stride if isinstance(stride, tuple) else (stride, stride)
        if not (1 <= rows <= H and 1 <= cols <= W):
            raise ValueError(f"stride={hp['stride']} cannot be used on {H} x {W} images (blocks): it must be in "
                             f"[1, {H}] along the rows and [1, {W}] along the columns")


def _multi_band_shape(hp: Hyper, H: int, W: int) -> None:
    _band_shape(hp, H, W)
    length = W if hp.get("axis", "column") == "column" else H
    _fits(hp["keep"], "keep", length // hp["size"], f"{H} x {W} images ({length // hp['size']} bands of {hp['size']})")


def _multi_block_shape(hp: Hyper, H: int, W: int) -> None:
    _block_shape(hp, H, W)
    tiles = (H // hp["size"]) * (W // hp["size"])
    _fits(hp["keep"], "keep", tiles, f"{H} x {W} images ({tiles} tiles of {hp['size']} x {hp['size']})")


def _pixel_shape(hp: Hyper, H: int, W: int) -> None:
    _fits(hp["keep"], "keep", H * W, f"{H} x {W} images ({H * W} pixels)")


def _any_shape(hp: Hyper, H: int, W: int) -> None:
    return None


def _cleanser_shape(hp: Hyper, H: int, W: int) -> None:
    from fastsmooth.ops.mask_pairs import mask_set

    try:
        mask_set(H, W, hp["patch_size"], None if hp.get("mask_stride") else hp["num_mask"], hp.get("mask_stride"))
    except ValueError as err:
        raise ValueError(f"patch_size={hp['patch_size']}: {err}") from None


# -- training noise ------------------------------------------------------------------------------
def _stats(hp: Hyper) -> dict[str, Any]:
    return {"mean": hp.get("mean"), "std": hp.get("std")}


def _band_noise(hp: Hyper, per: str) -> Noise:
    size, transposed, axis = hp["size"], bool(hp.get("transposed")), hp.get("axis", "column")

    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if transposed:  # the authors' MNIST row models: transposed images, column bands
            x = x.transpose(2, 3).contiguous()
        ax = "column" if transposed else axis
        if per == "batch":
            length = x.shape[3] if ax == "column" else x.shape[2]
            start = torch.randint(length, (1,), generator=g)
            return ops.ablate_bands(x, size, start, ax, **_stats(hp))
        return ops.ablate_random_band(x, size, ax, generator=g, **_stats(hp))

    return noise


def _block_noise(hp: Hyper, per: str) -> Noise:
    size = hp["size"]

    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if per == "batch":
            corner = torch.randint(x.shape[2] * x.shape[3], (1,), generator=g)
            return ops.ablate_blocks(x, size, corner, **_stats(hp))
        return ops.ablate_random_block(x, size, generator=g, **_stats(hp))

    return noise


def _multi_band_noise(hp: Hyper, per: str) -> Noise:
    size, keep, axis = hp["size"], hp["keep"], hp.get("axis", "column")

    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        _, _, H, W = x.shape
        n = (W if axis == "column" else H) // size
        combos = random_subsets(1 if per == "batch" else x.shape[0], n, keep, g)
        if per == "batch":
            return ops.ablate_multi_bands(x, size, keep, combos, axis, **_stats(hp))
        return ops.ablate_with_masks(x, multi_band_masks(H, W, size, combos, axis).per_image(), **_stats(hp))

    return noise


def _multi_block_noise(hp: Hyper, per: str) -> Noise:
    size, keep = hp["size"], hp["keep"]

    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        _, _, H, W = x.shape
        n = (H // size) * (W // size)
        combos = random_subsets(1 if per == "batch" else x.shape[0], n, keep, g)
        if per == "batch":
            return ops.ablate_multi_blocks(x, size, keep, combos, **_stats(hp))
        return ops.ablate_with_masks(x, multi_block_masks(H, W, size, combos).per_image(), **_stats(hp))

    return noise


def _pixel_noise(hp: Hyper, per: str) -> Noise:
    return lambda x, g: ops.ablate_pixels_train(x, hp["keep"], per=per, generator=g, **_stats(hp))


def _dssn_noise(hp: Hyper, per: str) -> Noise:
    return lambda x, g: ops.dssn_split_random(x, sigma=hp["sigma"], seed=hp["seed"], generator=g)


def _ssn_noise(hp: Hyper, per: str) -> Noise:
    return lambda x, g: ops.ssn_noise(x, hp["sigma"] * math.sqrt(3), 1, g)


def _uniform_noise(hp: Hyper, per: str) -> Noise:
    return lambda x, g: ops.uniform_noise(x, hp["sigma"] * math.sqrt(3), 1, g)


def _gaussian_noise(hp: Hyper, per: str) -> Noise:
    return lambda x, g: ops.gaussian_noise(x, hp["sigma"], 1, g)


def _cutout_noise(hp: Hyper, per: str) -> Noise:
    """Cutout with the certification's own masks: two random masks of the mask set (one pair)
    per image or per minibatch, set to ``fill`` (the paper trains its models with Cutout)."""
    from fastsmooth.ops.mask_pairs import pair_rects

    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        masks = ops.mask_set(x.shape[2], x.shape[3], hp["patch_size"], None if hp.get("mask_stride") else hp["num_mask"],
                             hp.get("mask_stride"))
        pairs = torch.randint(masks.count, (1 if per == "batch" else x.shape[0], 2), generator=g)
        pairs = pairs.expand(x.shape[0], 2)
        images = torch.arange(x.shape[0])
        return ops.mask_pairs(x, images, pair_rects(masks, pairs), hp["fill"], hp.get("mean"), hp.get("std"))

    return noise


def _token_cutout_noise(model: nn.Module, hp: Hyper, per: str) -> Noise:
    """Cutout for a token-dropping TokenViT: one random mask pair per image (or minibatch), its
    tokens dropped, as PatchCleanser's token path certifies; masks off the ViT's patch grid
    mask pixels instead (``_cutout_noise``), as the smoother then does."""
    from fastsmooth._validation import check_stats
    from fastsmooth.ops.mask_pairs.geometry import covered_tokens, misaligned
    from fastsmooth.ops.tokens.geometry import TokenSets, group_by_count
    from fastsmooth.smoothing.patchcleanser import image_tokens
    from fastsmooth.training import Forwards

    pixel_noise = _cutout_noise(hp, per)

    def noise(x: torch.Tensor, g: torch.Generator):
        masks = ops.mask_set(x.shape[2], x.shape[3], hp["patch_size"], None if hp.get("mask_stride") else hp["num_mask"],
                             hp.get("mask_stride"))
        if (x.shape[2], x.shape[3]) != model.image_size or misaligned(masks, model.patch) is not None:
            return pixel_noise(x, g)
        pairs = torch.randint(masks.count, (1 if per == "batch" else x.shape[0], 2), generator=g)
        covered = covered_tokens(masks, model.patch)
        keep = ~(covered[pairs[:, 0]] | covered[pairs[:, 1]])  # [pairs, G]
        mean, std = check_stats(hp.get("mean"), hp.get("std"), x)
        patches = image_tokens(x, model.patch, mean, std)  # [B, G, E]
        if per == "batch":
            index = keep[0].nonzero()[:, 0].to(x.device)
            return patches[:, index], index
        parts = []
        for members, tokens in group_by_count(TokenSets([row.nonzero()[:, 0] for row in keep])):
            on, tokens = members.to(x.device), tokens.to(x.device)
            parts.append((on, (patches[on[:, None], tokens], tokens)))
        return Forwards(parts)

    return noise


def _cleanser(model: nn.Module, k: int, hp: Hyper, bs: int | str) -> PatchCleanser:
    stride = hp.get("mask_stride")
    return PatchCleanser(model, k, hp["patch_size"], num_mask=None if stride else hp["num_mask"], mask_stride=stride,
                         fill=hp["fill"], mean=hp.get("mean"), std=hp.get("std"), batch_size=bs)


# -- smoothers -----------------------------------------------------------------------------------
def _patch_kw(hp: Hyper) -> dict[str, Any]:
    return {"threshold": hp.get("threshold"), "mean": hp.get("mean"), "std": hp.get("std")}


def _stride_kw(hp: Hyper) -> dict[str, Any]:
    """The stride of strided column / row / block smoothing (not model-defining: a model
    trained with ordinary ablation is certified at any stride, as Salman et al. do)."""
    return {"stride": _block_stride(hp.get("stride", 1))}


def _stat_kw(hp: Hyper) -> dict[str, Any]:
    return {"n0": hp["n0"], "n": hp["n"], "alpha": hp["alpha"]}


_PATCH = {"size": None, "threshold": 0.3, "mean": None, "std": None}
_STRIDED = {**_PATCH, "stride": 1}
_STAT_PATCH = {"n0": 1000, "n": 10000, "alpha": 0.05}
_STAT_L1 = {"n0": 64, "n": 100000, "alpha": 0.001, "sided": "two"}
_PATCH_LEVELS = (1, 2, 3, 4, 5, 6, 7)
_BAND_DESC = "{} smoothing (Levine & Feizi): every band of `size` {}s, wraparound (or every `stride`-th)"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "column", _BAND_DESC.format("column", "column"), {**_STRIDED},
            ("size", "mean", "std"), True,
            lambda model, k, hp, bs: ColumnSmoothing(model, k, hp["size"], batch_size=bs, **_patch_kw(hp),
                                                     **_stride_kw(hp)),
            _band_noise, _band_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "row", _BAND_DESC.format("row", "row") + "; --transposed for models trained on transposed images",
            {**_STRIDED, "transposed": False}, ("size", "mean", "std", "transposed"), True,
            lambda model, k, hp, bs: RowSmoothing(
                model, k, hp["size"], batch_size=bs, transposed=bool(hp["transposed"]), **_patch_kw(hp),
                **_stride_kw(hp)
            ),
            lambda hp, per: _band_noise({**hp, "axis": "row"}, per),
            lambda hp, H, W: _band_shape({**hp, "axis": "row"}, H, W), _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "block", "block smoothing: every `size` x `size` block, wraparound (or every `stride`-th corner per axis)",
            {**_STRIDED}, ("size", "mean", "std"), True,
            lambda model, k, hp, bs: BlockSmoothing(model, k, hp["size"], batch_size=bs, **_patch_kw(hp),
                                                    **_stride_kw(hp)),
            _block_noise, _block_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "multi-band", "every choice of `keep` (kappa) aligned bands of `size`",
            {**_PATCH, "keep": None, "axis": "column"}, ("size", "keep", "axis", "mean", "std"), True,
            lambda model, k, hp, bs: MultiBandSmoothing(
                model, k, hp["size"], hp["keep"], batch_size=bs, axis=hp["axis"], **_patch_kw(hp)
            ),
            _multi_band_noise, _multi_band_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "multi-block", "every choice of `keep` (kappa) aligned `size` x `size` tiles",
            {**_PATCH, "keep": None}, ("size", "keep", "mean", "std"), True,
            lambda model, k, hp, bs: MultiBlockSmoothing(
                model, k, hp["size"], hp["keep"], batch_size=bs, **_patch_kw(hp)
            ),
            _multi_block_noise, _multi_block_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "randomized-band", "randomized band smoothing (the baseline): n0 + n random bands, top-1 votes",
            {"size": None, "axis": "column", "mean": None, "std": None, **_STAT_PATCH},
            ("size", "axis", "mean", "std"), True,
            lambda model, k, hp, bs: RandomizedBandSmoothing(
                model, k, hp["size"], hp.get("mean"), hp.get("std"), batch_size=bs, axis=hp["axis"], **_stat_kw(hp)
            ),
            _band_noise, _band_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
        Method(
            "ablation", "l0 randomized ablation (Levine & Feizi): keep k random pixels per sample",
            {"keep": None, "mean": None, "std": None, **_STAT_PATCH}, ("keep", "mean", "std"), True,
            lambda model, k, hp, bs: RandomizedAblation(
                model, k, hp["keep"], batch_size=bs, mean=hp.get("mean"), std=hp.get("std"), **_stat_kw(hp)
            ),
            _pixel_noise, _pixel_shape, (0, 1, 2, 3, 4, 5, 6, 8, 10), ("image", "batch"),
        ),
        Method(
            "dssn", "deterministic splitting noise (l1, exact certificates); the seed is part of the model",
            {"sigma": None, "seed": 0}, ("sigma", "seed"), False,
            lambda model, k, hp, bs: DSSN(model, k, sigma=hp["sigma"], seed=hp["seed"], batch_size=bs),
            _dssn_noise, _any_shape, (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4),
        ),
        Method(
            "ssn", "independent splitting noise (l1, randomized)", {"sigma": None, **_STAT_L1}, ("sigma",), False,
            lambda model, k, hp, bs: SSN(model, k, sigma=hp["sigma"], batch_size=bs, sided=hp["sided"], **_stat_kw(hp)),
            _ssn_noise, _any_shape, (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4),
        ),
        Method(
            "uniform", "uniform additive noise (l1, randomized)", {"sigma": None, **_STAT_L1}, ("sigma",), False,
            lambda model, k, hp, bs: UniformSmoothing(
                model, k, sigma=hp["sigma"], batch_size=bs, sided=hp["sided"], **_stat_kw(hp)
            ),
            _uniform_noise, _any_shape, (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4),
        ),
        Method(
            "gaussian", "Gaussian smoothing (Cohen et al., l2)", {"sigma": None, "n0": 100, "n": 100000, "alpha": 0.001},
            ("sigma",), False,
            lambda model, k, hp, bs: Smooth(model, k, hp["sigma"], batch_size=bs, **_stat_kw(hp)),
            _gaussian_noise, _any_shape, (0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
        ),
        Method(
            "patchcleanser", "PatchCleanser (Xiang et al.): double masking with num_mask x num_mask masks; "
            "certified iff every one- and two-mask prediction is the label",
            {"patch_size": None, "num_mask": 6, "mask_stride": None, "fill": 0.0, "mean": None, "std": None},
            ("mean", "std"), False, _cleanser, _cutout_noise, _cleanser_shape, _PATCH_LEVELS, ("image", "batch"),
        ),
    )
}


def names() -> list[str]:
    """The method names, in registry order."""
    return list(METHODS)


def get(name: str) -> Method:
    """The method called ``name``; the error lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None


def resolve(method: Method, given: Mapping[str, Any], shape: tuple[int, int, int] | None = None) -> Hyper:
    """The method's full hyperparameters: defaults overridden by ``given`` (``None`` values ignored).

    Unknown names are refused; required ones (default ``None`` and not optional) must be
    given; with ``shape`` (C, H, W) the image size is checked against the method.
    """
    if given.get("stride") is not None and "stride" not in method.defaults:
        raise ValueError(f"stride={given['stride']!r} has no meaning for method {method.name!r} (only column, row and "
                         "block smoothing retain every stride-th position); drop --stride or use one of those methods")
    unknown = sorted(set(given) - set(method.defaults))
    if unknown:
        raise ValueError(f"method {method.name!r} has no hyperparameter(s) {unknown}; it takes {sorted(method.defaults)}")
    hp = dict(method.defaults)
    hp.update({k: v for k, v in given.items() if v is not None})
    if hp.get("threshold") == "top1":  # the command line's spelling of "no threshold: top-1 votes"
        hp["threshold"] = None
    optional = {"threshold", "mean", "std", "mask_stride"}
    for name in method.defaults:
        if name not in optional:
            _need(hp, name, method.name)
    if shape is not None:
        method.check_shape(hp, shape[1], shape[2])
    return hp


# -- smoothed vision transformers -------------------------------------------------------------------
#: patch method -> (ablation kind, band axis unless the method's ``axis`` says otherwise) of its smoothed-ViT variant
_VIT_VARIANTS = {
    "column": ("band", "column"), "row": ("band", "row"), "block": ("block", "column"),
    "multi-band": ("multi_band", "column"), "multi-block": ("multi_block", "column"),
}


def for_vit(method: Method, model: nn.Module) -> Method:
    """The smoothed-ViT variant of a patch method (semantics.md §10), for a ``TokenViT`` ``model``.
    PatchCleanser keeps its smoother (which drops the masked tokens when every mask lies on the
    ViT's patch grid and the model drops tokens, else masks pixels: semantics.md §15); its
    training noise follows the same choice (:func:`_token_cutout_noise`).

    The model sees C channels (not 2C) and is trained with one random band / block per
    minibatch (``--per batch``, the default, as the authors) or per image (``--per image``:
    images keeping the same number of tokens share a forward), kept tokens only when it drops
    tokens. Top-1 votes by
    default, as the papers' ViT code. Two hyperparameters join the method's: ``normalize``
    ("after" or "before" ablation) and ``drop_tokens`` (fixed by the model), both recorded.
    """
    from fastsmooth.smoothing.vit import (
        ViTBlockSmoothing,
        ViTColumnSmoothing,
        ViTMultiBandSmoothing,
        ViTMultiBlockSmoothing,
        ViTRowSmoothing,
        token_training_noise,
    )

    if method.name == "patchcleanser":  # tokens when the masks align with the ViT's grid, else pixels (§15)
        if not model.drop_tokens:
            return method
        return dataclasses.replace(method, noise=lambda hp, per: _token_cutout_noise(model, hp, per))
    if method.name not in _VIT_VARIANTS:
        raise ValueError(f"method {method.name!r} has no smoothed-ViT variant; with a ViT use "
                         f"{', '.join(_VIT_VARIANTS)}")
    kind, axis = _VIT_VARIANTS[method.name]
    smoother = {"column": ViTColumnSmoothing, "row": ViTRowSmoothing, "block": ViTBlockSmoothing,
                "multi-band": ViTMultiBandSmoothing, "multi-block": ViTMultiBlockSmoothing}[method.name]

    def build(m: nn.Module, k: int, hp: Hyper, bs: int | str) -> Any:
        extra = {"transposed": bool(hp["transposed"])} if method.name == "row" else {}
        if method.name == "multi-band":
            extra["axis"] = hp["axis"]
        keep = (hp["keep"],) if kind.startswith("multi") else ()
        if bs != "auto":  # token batches need a number: "auto" keeps the ViT smoothers' default
            extra["batch_size"] = bs
        if "stride" in hp:
            extra.update(_stride_kw(hp))
        return smoother(m, k, hp["size"], *keep, normalize=hp["normalize"], drop_tokens=hp["drop_tokens"],
                        **_patch_kw(hp), **extra)

    def noise(hp: Hyper, per: str) -> Noise:
        return token_training_noise(model, kind, hp["size"], axis=hp.get("axis", axis), mean=hp.get("mean"),
                                    std=hp.get("std"), normalize=hp["normalize"],
                                    transposed=bool(hp.get("transposed")), per=per, keep=hp.get("keep"))

    return dataclasses.replace(
        method,
        description=method.description + "; smoothed ViT (token dropping)",
        defaults={**method.defaults, "threshold": None, "normalize": "after", "drop_tokens": model.drop_tokens},
        model_defining=method.model_defining + ("normalize", "drop_tokens"),
        ablation=False,
        build=build,
        noise=noise,
        per_choices=("batch", "image"),
    )
