"""PatchCleanser's double masking (semantics.md §15): image batch + mask pairs -> masked batch.

``mask_pairs`` writes row r = image ``images[r]`` with the pixels of the two rectangles
``rects[r]`` (the masks m_i and m_j of one pair: the kept set m_i AND m_j) set to ``fill``,
for many pairs of many images in one pass; a one-mask input is the pair (i, i). Masks are
rectangles (``geometry.mask_set``), so no full-size boolean mask is built or read.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastsmooth._validation import check_images, check_out, check_real, check_stats
from fastsmooth.ops._dispatch import OpTable, dispatch, kernel_for
from fastsmooth.ops.mask_pairs.geometry import MaskSet, axis_positions, mask_set
from fastsmooth.ops.mask_pairs.native import mask_pairs_native
from fastsmooth.ops.mask_pairs.reference import mask_pairs_reference

Stats = Sequence[float] | torch.Tensor | None

__all__ = ["mask_pairs", "mask_pairs_kernel", "pair_rects", "MaskSet", "mask_set", "axis_positions"]


def _mask_pairs_triton(*args, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from fastsmooth.ops.mask_pairs.triton_kernel import mask_pairs_triton  # triton is optional

    return mask_pairs_triton(*args, **kwargs)


_IMPLS = OpTable("mask_pairs", {
    "reference": mask_pairs_reference,
    "cpu": mask_pairs_native,
    "cuda": mask_pairs_native,
    "triton": _mask_pairs_triton,
})


def mask_pairs_kernel(backend: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """The implementation ``mask_pairs`` runs for ``backend`` on ``device`` (self-checked on first
    use), without its checks: ``kernel(x, images, rects, fill, mean, std, out=out)``."""
    return kernel_for(_IMPLS, backend, device)


def pair_rects(masks: MaskSet, pairs: torch.Tensor) -> torch.Tensor:
    """int64 [R, 2, 4]: the rectangles of mask pairs ``pairs`` [R, 2] (indices into ``masks``)."""
    return masks.rects[pairs.to(torch.int64)]


def mask_pairs(
    x: torch.Tensor,
    images: torch.Tensor,
    rects: torch.Tensor,
    fill: float = 0.0,
    mean: Stats = None,
    std: Stats = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """x * (m_i AND m_j) (masked pixels = ``fill``) for every row: (N, C, H, W) -> (R, C, H, W).

    Args:
        x: images, any floating dtype (arithmetic in float32, float64 for float64; rounded once).
        images: int64 [R], the image (index into x) of each output row.
        rects: int64 [R, 2, 4], each row's two masks as half-open rectangles (top, left,
            bottom, right); see :func:`pair_rects`. Rectangles may reach past the image.
        fill: the value of masked pixels, in the model's input space (after normalization).
        mean, std: per-channel normalization (x - mean) / std of the kept pixels.
        out: optional output of the result's shape, x's dtype and device, contiguous or
            channels-last contiguous.
        backend: "auto", "reference", "cpu", "triton" or "cuda".
    """
    check_images(x)
    N, C, H, W = x.shape
    if not isinstance(images, torch.Tensor) or images.dtype != torch.int64 or images.dim() != 1:
        raise ValueError(f"images must be an int64 tensor [R], got {images!r}")
    R = images.shape[0]
    if not isinstance(rects, torch.Tensor) or rects.dtype != torch.int64 or tuple(rects.shape) != (R, 2, 4):
        shape = tuple(rects.shape) if isinstance(rects, torch.Tensor) else type(rects).__name__
        raise ValueError(f"rects must be an int64 tensor [R = {R}, 2, 4] (top, left, bottom, right), got {shape}")
    if R and (int(images.min()) < 0 or int(images.max()) >= N):
        raise ValueError(f"images must index x's {N} images (0 .. {N - 1}), got {int(images.min())} .. "
                         f"{int(images.max())}")
    fill = check_real(fill, "fill")
    mean_t, std_t = check_stats(mean, std, x)
    check_out(out, (R, C, H, W), x, channels_last_ok=True)
    return dispatch(_IMPLS, backend, x, images.to(x.device).contiguous(), rects.to(x.device).contiguous(), fill,
                    mean_t, std_t, out=out)
