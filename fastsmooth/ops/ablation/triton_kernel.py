"""Triton kernel of the structured-ablation op (beside its reference in reference.py).

One program owns a [BLOCK_H, W] tile of one input channel: it loads and encodes the tile
once, then writes it, masked, into each of the P ablations (value and complement channels).
Stores go through the output's strides, so an NCHW and a channels-last ``out`` both work.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.masks import KeepMasks


@triton.jit
def _to_output(v, dtype: tl.constexpr):
    """Round to the output dtype to nearest even, as torch does.

    bfloat16 is rounded with integer arithmetic: Triton's interpreter does not round it to
    nearest even, and this form gives the same bits on the GPU and in the interpreter.
    """
    if dtype == tl.bfloat16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)


@triton.jit
def _ablate_kernel(
    x_ptr, out_ptr, rows_ptr, cols_ptr, tiles_ptr, mean_ptr, std_ptr,
    C, H, W, P, per_image, TH, TW, tile_h, tile_w,
    out_sn, out_sc, out_sh, out_sw,
    NORMALIZE: tl.constexpr, HAS_TILES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    bc = tl.program_id(0).to(tl.int64)
    b = bc // C
    c = bc % C
    hs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ws = tl.arange(0, BLOCK_W)
    h_ok = hs < H
    w_ok = ws < W
    inside = h_ok[:, None] & w_ok[None, :]
    pixel = hs[:, None] * W + ws[None, :]
    x = tl.load(x_ptr + bc * H * W + pixel, mask=inside, other=0.0).to(ACC_DTYPE)
    if NORMALIZE:
        x = (x - tl.load(mean_ptr + c)) / tl.load(std_ptr + c)
    value = _to_output(x, out_ptr.dtype.element_ty)
    complement = _to_output(1.0 - x, out_ptr.dtype.element_ty)
    zero = tl.zeros([BLOCK_H, BLOCK_W], dtype=out_ptr.dtype.element_ty)
    m = b * per_image  # masks are shared (per_image = 0) or per image (per_image = 1)
    for p in range(P):
        slot = m * P + p
        r = tl.load(rows_ptr + slot * H + hs, mask=h_ok, other=0)
        k = tl.load(cols_ptr + slot * W + ws, mask=w_ok, other=0)
        keep = (r[:, None] != 0) & (k[None, :] != 0)
        if HAS_TILES:
            th = hs // tile_h
            tw = ws // tile_w
            t_ok = (th[:, None] < TH) & (tw[None, :] < TW) & inside
            t = tl.load(tiles_ptr + (slot * TH + th[:, None]) * TW + tw[None, :], mask=t_ok, other=0)
            keep = keep & (t != 0)
        at = (b * P + p) * out_sn + c * out_sc + hs[:, None] * out_sh + ws[None, :] * out_sw
        tl.store(out_ptr + at, tl.where(keep, value, zero), mask=inside)
        tl.store(out_ptr + at + C * out_sc, tl.where(keep, complement, zero), mask=inside)


def ablate_triton(
    x: torch.Tensor,
    masks: KeepMasks,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    P = masks.count
    x = x.contiguous()
    if out is None:
        out = torch.empty(B * P, 2 * C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_w = triton.next_power_of_2(W)
    block_h = max(1, min(triton.next_power_of_2(H), 4096 // block_w))
    tiles = masks.tiles if masks.tiles is not None else masks.rows
    TH, TW = (masks.tiles.shape[2], masks.tiles.shape[3]) if masks.tiles is not None else (1, 1)
    grid = (B * C, triton.cdiv(H, block_h))
    _ablate_kernel[grid](
        x, out, masks.rows, masks.cols, tiles,
        mean if mean is not None else x, std if std is not None else x,
        C, H, W, P, int(masks.rows.shape[0] != 1), TH, TW, masks.tile_h, masks.tile_w,
        *out.stride(),
        NORMALIZE=mean is not None, HAS_TILES=masks.tiles is not None,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32,
        BLOCK_H=block_h, BLOCK_W=block_w,
    )
    return out
