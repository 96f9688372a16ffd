"""The PatchCleanser mask set (Xiang et al., USENIX Security 2022): rectangles, not pixel masks.

A mask set is R-covering for a p_h x p_w patch: whatever the patch's position, one mask
covers it entirely. Per axis of length N with patch length p (semantics.md §15): the stride
is s = ceil((N - p + 1) / k) for k masks per axis (or given), the mask length m = min(p + s -
1, N), and the mask positions are 0, s, 2s, ... up to N - m, plus N - m when the steps miss
it. The set is every (row position, column position), row-major: the order of the authors'
``gen_mask_set``. Masks are kept as half-open rectangles (top, left, bottom, right); the
fused op (``fastsmooth.ops.mask_pairs``) tests pixels against them and never builds a mask.
"""
from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["MaskSet", "mask_set", "axis_positions", "misaligned", "covered_tokens"]


def _pair(value: object, name: str) -> tuple[int, int]:
    """An int or a pair of ints, as (first axis, second axis)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        a, b = value
    else:
        a = b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    return int(a), int(b)


def axis_positions(length: int, patch: int, num_mask: int | None, stride: int | None) -> tuple[list[int], int, int]:
    """(mask positions, mask length, stride) along one axis of ``length`` pixels."""
    if stride is None:
        stride = math.ceil((length - patch + 1) / num_mask)
    size = min(patch + stride - 1, length)
    positions = list(range(0, length - size + 1, stride))
    if (length - size) % stride != 0:
        positions.append(length - size)
    return positions, size, stride


@dataclasses.dataclass(frozen=True)
class MaskSet:
    """``rects``: int64 [M, 4] (top, left, bottom, right), half-open, in the authors' order.

    ``patch``, ``mask_size``, ``stride``: (height, width) each; ``image``: (H, W)."""

    rects: torch.Tensor
    patch: tuple[int, int]
    mask_size: tuple[int, int]
    stride: tuple[int, int]
    image: tuple[int, int]

    @property
    def count(self) -> int:
        return int(self.rects.shape[0])

    def keep(self) -> torch.Tensor:
        """bool [M, H, W], True where mask i keeps the pixel (the authors' boolean masks)."""
        H, W = self.image
        h = torch.arange(H)[None, :, None]
        w = torch.arange(W)[None, None, :]
        r = self.rects[:, :, None, None]
        inside = (h >= r[:, 0]) & (h < r[:, 2]) & (w >= r[:, 1]) & (w < r[:, 3])
        return ~inside


def mask_set(
    height: int,
    width: int,
    patch: int | tuple[int, int],
    num_mask: int | tuple[int, int] | None = 6,
    stride: int | tuple[int, int] | None = None,
) -> MaskSet:
    """The R-covering mask set of ``patch`` (an int, or (height, width) for a rectangle) on
    ``height`` x ``width`` images: ``num_mask`` masks per axis (k), or a given ``stride``
    (then ``num_mask`` must be None, as the authors' "set either mask_stride or num_mask")."""
    H, W = _pair((height, width), "image size")
    if H < 1 or W < 1:
        raise ValueError(f"image size must be positive, got {H} x {W}")
    ph, pw = _pair(patch, "patch")
    if not (1 <= ph <= H and 1 <= pw <= W):
        raise ValueError(f"patch={patch!r} does not fit {H} x {W} images: use a patch of at most {H} x {W} pixels")
    if (num_mask is None) == (stride is None):
        raise ValueError(f"give exactly one of num_mask and stride, got num_mask={num_mask!r}, stride={stride!r}")
    if stride is not None:
        sh, sw = _pair(stride, "stride")
        if sh < 1 or sw < 1:
            raise ValueError(f"stride={stride!r} must be >= 1 along both axes: use a positive mask stride")
        kh = kw = None
    else:
        kh, kw = _pair(num_mask, "num_mask")
        if kh < 2 or kw < 2:
            raise ValueError(f"num_mask={num_mask!r} must be >= 2 per axis (one mask would cover the whole image): "
                             "use num_mask=2 or more (the paper uses 6)")
        sh = sw = None
    rows, mh, sh = axis_positions(H, ph, kh, sh)
    cols, mw, sw = axis_positions(W, pw, kw, sw)
    rects = torch.tensor([[r, c, r + mh, c + mw] for r in rows for c in cols], dtype=torch.int64)
    return MaskSet(rects, (ph, pw), (mh, mw), (sh, sw), (H, W))


def misaligned(masks: MaskSet, patch: tuple[int, int]) -> str | None:
    """Why the masks do not align with a ViT's ``patch`` grid (a one-line reason), or None when
    every rectangle edge lies on a multiple of the patch size (each token then lies wholly
    inside or wholly outside every mask, so a pair's masked pixels are whole tokens)."""
    ph, pw = patch
    H, W = masks.image
    if H % ph or W % pw:
        return f"the {H} x {W} images do not split into {ph} x {pw} patches"
    for top, left, bottom, right in masks.rects.tolist():
        if top % ph or bottom % ph or left % pw or right % pw:
            return (f"mask rows [{top}, {bottom}) x columns [{left}, {right}) cut {ph} x {pw} patches (mask size "
                    f"{masks.mask_size[0]} x {masks.mask_size[1]}, stride {masks.stride[0]} x {masks.stride[1]}; "
                    "aligned masks need both on multiples of the patch size)")
    return None


def covered_tokens(masks: MaskSet, patch: tuple[int, int]) -> torch.Tensor:
    """bool [M, G_h * G_w]: the tokens (row-major on the patch grid) each mask covers, for masks
    aligned with the ``patch`` grid (see :func:`misaligned`)."""
    ph, pw = patch
    H, W = masks.image
    gh = torch.arange(H // ph)[None, :, None]
    gw = torch.arange(W // pw)[None, None, :]
    r = masks.rects[:, :, None, None]
    inside = (gh >= r[:, 0] // ph) & (gh < r[:, 2] // ph) & (gw >= r[:, 1] // pw) & (gw < r[:, 3] // pw)
    return inside.reshape(masks.count, -1)
