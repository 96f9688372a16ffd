"""Triton kernel of l0 pixel ablation (beside its reference in reference.py).

One program owns one output sample (its num_warps grow when the samples are few:
``launch_plans.triton_ablate_pixels``). It finds the keep-th smallest pixel key by a most
significant digit first radix selection (4-bit digits, each pass a 16-bin histogram of the
keys that share the digits chosen so far, until the chosen bin holds one key), then writes the
encoded image under the mask ``key <= threshold``. Keys are recomputed from Philox in every pass rather than stored,
except when the whole image fits one block (then they stay in registers).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.triton_kernel import _to_output
from fastsmooth.ops.launch_plans import triton_ablate_pixels
from fastsmooth.ops.pixel_ablation.reference import TAG, index_bits


@triton.jit
def _keys(seed, s_lo, s_hi, p, IDX_BITS: tl.constexpr):
    """uint64 keys of pixels p (an int64 block) of one sample: see csrc/ops/common/pixel_ablation.h."""
    q = (p >> 1).to(tl.uint32)
    zero = tl.zeros_like(q)
    r0, r1, r2, r3 = tl.philox(seed, q, zero + s_lo, zero + s_hi, zero + TAG)
    odd = (p & 1) == 1
    hi = tl.where(odd, r2, r0).to(tl.uint64)
    lo = tl.where(odd, r3, r1).to(tl.uint64)
    random = (hi << 32) | lo
    return ((random >> IDX_BITS) << IDX_BITS) | p.to(tl.uint64)


@triton.jit
def _digit_histogram(keys, valid, prefix, shift):
    """Counts [16] of the 4-bit digit at ``shift`` among valid keys whose higher digits equal prefix's."""
    match = valid & ((((keys ^ prefix) >> shift) >> 4) == 0)
    digit = ((keys >> shift) & 15).to(tl.int32)
    bins = tl.arange(0, 16)
    return tl.sum(((digit[:, None] == bins[None, :]) & match[:, None]).to(tl.int32), axis=0)


@triton.jit
def _min_matching(keys, valid, prefix, last):
    """Smallest valid key whose digits from bit ``last`` up equal prefix's."""
    match = valid & ((((keys ^ prefix) >> (last - 4)) >> 4) == 0)
    return tl.min(tl.where(match, keys, 0xFFFFFFFFFFFFFFFF), axis=0)


@triton.jit
def _ablate_pixels_kernel(
    x_ptr, out_ptr, mean_ptr, std_ptr, seed,
    C, d, n, keep,
    SHARED: tl.constexpr, NORMALIZE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    IDX_BITS: tl.constexpr, BLOCK: tl.constexpr, ONE_BLOCK: tl.constexpr,
):
    s_out = tl.program_id(0).to(tl.int64)
    b = s_out // n
    if SHARED:
        sample = s_out % n  # one subset per draw j, shared by every image
    else:
        sample = s_out
    s_lo = (sample & 0xFFFFFFFF).to(tl.uint32)
    s_hi = (sample >> 32).to(tl.uint32)
    offs = tl.arange(0, BLOCK).to(tl.int64)
    bins = tl.arange(0, 16)
    if ONE_BLOCK:
        cached = _keys(seed, s_lo, s_hi, offs, IDX_BITS)
    # Radix selection of the keep-th smallest key (keep >= 1; keep = 0 is masked below). `last`
    # is the lowest digit fixed so far; once the chosen bin holds a single key (usually after
    # log16(d) + 1 passes, not 16) that key is the threshold and the loop stops.
    prefix = tl.zeros([], dtype=tl.uint64)
    rank = tl.maximum(keep, 1)  # 1-based rank still to find among keys matching prefix
    count = d  # keys matching prefix on the digits fixed so far
    last = 64
    while (count > 1) & (last > 0):
        shift = last - 4
        if ONE_BLOCK:
            hist = _digit_histogram(cached, offs < d, prefix, shift)
        else:
            hist = tl.zeros([16], dtype=tl.int32)
            for start in range(0, d, BLOCK):
                p = start + offs
                hist += _digit_histogram(_keys(seed, s_lo, s_hi, p, IDX_BITS), p < d, prefix, shift)
        cum = tl.cumsum(hist, axis=0)
        digit = tl.sum((cum < rank).to(tl.int32), axis=0)
        rank -= tl.sum(tl.where(bins < digit, hist, 0), axis=0)
        count = tl.sum(tl.where(bins == digit, hist, 0), axis=0)
        prefix = prefix | (digit.to(tl.uint64) << shift)
        last = shift
    # The threshold: the one key whose digits from `last` up equal prefix's (two shifts: last
    # may be 64).
    threshold = tl.full([], 0xFFFFFFFFFFFFFFFF, dtype=tl.uint64)
    if ONE_BLOCK:
        threshold = _min_matching(cached, offs < d, prefix, last)
    else:
        for start in range(0, d, BLOCK):
            p = start + offs
            threshold = tl.minimum(threshold, _min_matching(_keys(seed, s_lo, s_hi, p, IDX_BITS), p < d, prefix, last))
    # Write: kept pixels get the encoded values, the others NULL.
    out_base = s_out * 2 * C * d
    for start in range(0, d, BLOCK):
        p = start + offs
        valid = p < d
        if ONE_BLOCK:
            keys = cached
        else:
            keys = _keys(seed, s_lo, s_hi, p, IDX_BITS)
        kept = (keys <= threshold) & (keep > 0)
        for c in range(C):
            v = tl.load(x_ptr + (b * C + c) * d + p, mask=valid, other=0.0).to(ACC_DTYPE)
            if NORMALIZE:
                v = (v - tl.load(mean_ptr + c)) / tl.load(std_ptr + c)
            value = _to_output(v, out_ptr.dtype.element_ty)
            complement = _to_output(1.0 - v, out_ptr.dtype.element_ty)
            zero = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
            tl.store(out_ptr + out_base + c * d + p, tl.where(kept, value, zero), mask=valid)
            tl.store(out_ptr + out_base + (C + c) * d + p, tl.where(kept, complement, zero), mask=valid)


def ablate_pixels_triton(
    x: torch.Tensor,
    keep: int,
    n: int,
    seed: int,
    shared: bool,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    d = H * W
    x = x.contiguous()
    if out is None:
        out = torch.empty(B * n, 2 * C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    plan = triton_ablate_pixels(B * n, C, d)
    block = plan.meta["BLOCK"]
    _ablate_pixels_kernel[plan.grid](
        x, out, mean if mean is not None else x, std if std is not None else x, seed,
        C, d, n, keep,
        SHARED=shared, NORMALIZE=mean is not None,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32,
        IDX_BITS=index_bits(d), ONE_BLOCK=d <= block, **plan.meta,
    )
    return out
