"""Triton kernel of the fused double-masking op (beside its reference in reference.py).

The grid is (tiles of one row's C * H * W outputs) x (rows), as the CUDA kernel's (see
csrc/ops/cuda/mask_pairs_kernel.cu); a program strides over rows beyond the grid's second
dimension. Each program decodes its BLOCK output elements, in the output's memory order, to
(channel, h, w), tests them against the row's two rectangles and writes them contiguously.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.triton_kernel import _to_output
from fastsmooth.ops.launch_plans import triton_mask_pairs


@triton.jit
def _mask_pairs_kernel(
    x_ptr, out_ptr, images_ptr, rects_ptr, mean_ptr, std_ptr, fill,
    R, C, H, W,
    CHANNELS_LAST: tl.constexpr, NORMALIZE: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    per_row = C * H * W
    valid = i < per_row
    if CHANNELS_LAST:
        c = i % C
        w = (i // C) % W
        h = i // (C * W)
    else:
        c = i // (H * W)
        h = (i // W) % H
        w = i % W
    for r in range(tl.program_id(1), R, tl.num_programs(1)):
        b = tl.load(images_ptr + r)
        base = rects_ptr + r * 8
        t0 = tl.load(base + 0)
        l0 = tl.load(base + 1)
        b0 = tl.load(base + 2)
        r0 = tl.load(base + 3)
        t1 = tl.load(base + 4)
        l1 = tl.load(base + 5)
        b1 = tl.load(base + 6)
        r1 = tl.load(base + 7)
        masked = ((h >= t0) & (h < b0) & (w >= l0) & (w < r0)) | ((h >= t1) & (h < b1) & (w >= l1) & (w < r1))
        v = tl.load(x_ptr + ((b * C + c) * H + h) * W + w, mask=valid, other=0.0).to(ACC_DTYPE)
        if NORMALIZE:
            m = tl.load(mean_ptr + c, mask=valid, other=0.0)
            s = tl.load(std_ptr + c, mask=valid, other=1.0)
            v = (v - m) / s
        f = tl.zeros([BLOCK], dtype=ACC_DTYPE) + fill
        tl.store(out_ptr + r * per_row + i, _to_output(tl.where(masked, f, v), out_ptr.dtype.element_ty), mask=valid)


def mask_pairs_triton(
    x: torch.Tensor,
    images: torch.Tensor,
    rects: torch.Tensor,
    fill: float,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    _, C, H, W = x.shape
    R = images.shape[0]
    x = x.contiguous()
    if out is None:
        out = torch.empty(R, C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    channels_last = not out.is_contiguous() and out.is_contiguous(memory_format=torch.channels_last)
    plan = triton_mask_pairs(R, C * H * W)
    _mask_pairs_kernel[plan.grid[:2]](
        x, out, images, rects, mean if mean is not None else x, std if std is not None else x, float(fill),
        R, C, H, W,
        CHANNELS_LAST=channels_last, NORMALIZE=mean is not None,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32, **plan.meta,
    )
    return out
