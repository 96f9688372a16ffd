"""Triton kernel of the fused token-extraction op (beside its reference in reference.py).

The grid is (tiles of one sample's kept-token pixels) x (samples), as the CUDA kernel's
(see csrc/ops/cuda/tokens_launchers.h); a program strides over samples beyond the grid's
second dimension. Each program decodes its BLOCK output elements to (token, channel, dy, dx),
reads the pixels and writes them contiguously.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.masks import KeepMasks
from fastsmooth.ops.ablation.triton_kernel import _to_output
from fastsmooth.ops.launch_plans import triton_ablate_tokens


@triton.jit
def _ablate_tokens_kernel(
    x_ptr, out_ptr, rows_ptr, cols_ptr, tiles_ptr, tokens_ptr, mean_ptr, std_ptr,
    C, H, W, P, K, ph, pw, GW, E, per_image, samples, TH, TW, tile_h, tile_w,
    NORMALIZE: tl.constexpr, NORMALIZE_FILL: tl.constexpr, HAS_TILES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    per_sample = K * E
    valid = i < per_sample
    k = i // E
    e = i % E
    c = e // (ph * pw)
    dy = (e // pw) % ph
    dx = e % pw
    for n in range(tl.program_id(1), samples, tl.num_programs(1)):
        b = n // P
        p = n % P
        slot = b * per_image * P + p
        t = tl.load(tokens_ptr + slot * K + k, mask=valid, other=0)
        h = (t // GW) * ph + dy
        w = (t % GW) * pw + dx
        r = tl.load(rows_ptr + slot * H + h, mask=valid, other=0)
        q = tl.load(cols_ptr + slot * W + w, mask=valid, other=0)
        keep = (r != 0) & (q != 0)
        if HAS_TILES:
            th = h // tile_h
            tw = w // tile_w
            t_ok = (th < TH) & (tw < TW) & valid
            tile = tl.load(tiles_ptr + (slot * TH + th) * TW + tw, mask=t_ok, other=0)
            keep = keep & (tile != 0)
        v = tl.load(x_ptr + ((b * C + c) * H + h) * W + w, mask=valid, other=0.0).to(ACC_DTYPE)
        zero = tl.zeros([BLOCK], dtype=ACC_DTYPE)
        if NORMALIZE:
            m = tl.load(mean_ptr + c, mask=valid, other=0.0)
            s = tl.load(std_ptr + c, mask=valid, other=1.0)
            v = (v - m) / s
            if NORMALIZE_FILL:
                zero = (zero - m) / s
        tl.store(out_ptr + n * per_sample + i, _to_output(tl.where(keep, v, zero), out_ptr.dtype.element_ty),
                 mask=valid)


def ablate_tokens_triton(
    x: torch.Tensor,
    masks: KeepMasks,
    tokens: torch.Tensor,
    patch: tuple[int, int],
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    normalize_fill: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    ph, pw = patch
    P, K = masks.count, tokens.shape[2]
    E = C * ph * pw
    x = x.contiguous()
    if out is None:
        out = torch.empty(B * P, K, E, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    plan = triton_ablate_tokens(B * P, K * E)
    tiles = masks.tiles if masks.tiles is not None else masks.rows
    TH, TW = (masks.tiles.shape[2], masks.tiles.shape[3]) if masks.tiles is not None else (1, 1)
    _ablate_tokens_kernel[plan.grid[:2]](
        x, out, masks.rows, masks.cols, tiles, tokens,
        mean if mean is not None else x, std if std is not None else x,
        C, H, W, P, K, ph, pw, W // pw, E, int(masks.rows.shape[0] != 1), B * P, TH, TW, masks.tile_h, masks.tile_w,
        NORMALIZE=mean is not None, NORMALIZE_FILL=bool(normalize_fill), HAS_TILES=masks.tiles is not None,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32, **plan.meta,
    )
    return out
