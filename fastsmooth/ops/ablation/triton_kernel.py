"""Triton kernel of the structured-ablation op (beside its reference in reference.py).

One program owns a tile of BLOCK_PIX pixels x all channels of one image and a chunk of
consecutive ablations (the grid spans pixel tiles x ablation chunks, so one image fills a GPU:
``launch_plans.triton_ablate``). It loads and encodes the tile once, then writes it, masked,
into each ablation of its chunk (value and complement channels). Stores go through the
output's strides: the compiler coalesces them along the pixels of an NCHW ``out`` and along
the channels of a channels-last one.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.masks import KeepMasks
from fastsmooth.ops.launch_plans import triton_ablate


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
    B, C, H, W, P, chunk, per_image, TH, TW, tile_h, tile_w,
    out_sn, out_sc, out_sp,
    NORMALIZE: tl.constexpr, HAS_TILES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_PIX: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Program (ablation chunk, image b, pixel tile), tiles fastest: see launch_plans.triton_ablate.
    pid = tl.program_id(0).to(tl.int64)
    plane = H * W
    tiles = tl.cdiv(plane, BLOCK_PIX)
    tile = pid % tiles
    b = (pid // tiles) % B
    p0 = (pid // (tiles * B)) * chunk
    pix = tile * BLOCK_PIX + tl.arange(0, BLOCK_PIX)
    cs = tl.arange(0, BLOCK_C)
    pix_ok = pix < plane
    inside = pix_ok[:, None] & (cs[None, :] < C)
    hs = pix // W
    ws = pix % W
    x = tl.load(x_ptr + (b * C + cs[None, :]) * plane + pix[:, None], mask=inside, other=0.0).to(ACC_DTYPE)
    if NORMALIZE:
        c_ok = cs < C
        x = (x - tl.load(mean_ptr + cs, mask=c_ok, other=0.0)[None, :]) / tl.load(std_ptr + cs, mask=c_ok, other=1.0)[None, :]
    value = _to_output(x, out_ptr.dtype.element_ty)
    complement = _to_output(1.0 - x, out_ptr.dtype.element_ty)
    zero = tl.zeros([BLOCK_PIX, BLOCK_C], dtype=out_ptr.dtype.element_ty)
    m = b * per_image  # masks are shared (per_image = 0) or per image (per_image = 1)
    # Output offsets: pixel h * W + w sits at pix * out_sp in both NCHW and channels-last.
    at_pix = cs[None, :] * out_sc + pix[:, None] * out_sp
    for p in range(p0, tl.minimum(p0 + chunk, P)):
        slot = m * P + p
        r = tl.load(rows_ptr + slot * H + hs, mask=pix_ok, other=0)
        k = tl.load(cols_ptr + slot * W + ws, mask=pix_ok, other=0)
        keep = (r != 0) & (k != 0)
        if HAS_TILES:
            th = hs // tile_h
            tw = ws // tile_w
            t_ok = (th < TH) & (tw < TW) & pix_ok
            t = tl.load(tiles_ptr + (slot * TH + th) * TW + tw, mask=t_ok, other=0)
            keep = keep & (t != 0)
        at = (b * P + p) * out_sn + at_pix
        tl.store(out_ptr + at, tl.where(keep[:, None], value, zero), mask=inside)
        tl.store(out_ptr + at + C * out_sc, tl.where(keep[:, None], complement, zero), mask=inside)


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
    sn, sc, sh, sw = out.stride()
    # NCHW and channels-last both place pixel (h, w) at (h * W + w) * sw: one pixel stride.
    assert sh == W * sw or H == 1, f"out must be NCHW or channels-last contiguous, got strides {out.stride()}"
    plan = triton_ablate(B, C, H, W, P)
    tiles = masks.tiles if masks.tiles is not None else masks.rows
    TH, TW = (masks.tiles.shape[2], masks.tiles.shape[3]) if masks.tiles is not None else (1, 1)
    _ablate_kernel[plan.grid](
        x, out, masks.rows, masks.cols, tiles,
        mean if mean is not None else x, std if std is not None else x,
        B, C, H, W, P, plan.chunk, int(masks.rows.shape[0] != 1), TH, TW, masks.tile_h, masks.tile_w,
        sn, sc, sw,
        NORMALIZE=mean is not None, HAS_TILES=masks.tiles is not None,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32,
        **plan.meta,
    )
    return out
