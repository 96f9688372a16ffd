"""Triton kernels of the l1 splitting ops (beside their reference in reference.py).

Bit-identity with the float32 reference needs two things Triton does not do by default:
divisions rounded to nearest (``tl.math.div_rn``; ``/`` may lower to an approximate
division on the GPU) and no fused multiply-add (launched with ``enable_fp_fusion=False``).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from fastsmooth.ops.ablation.triton_kernel import _to_output
from fastsmooth.ops._philox_triton import uniform_open1
from fastsmooth.ops.launch_plans import triton_dssn_split, triton_noise
from fastsmooth.ops.splitting.reference import SSN_STREAM, UNIFORM_STREAM


def _f32(value: float) -> float:
    """value rounded to float32, so that Triton's float32 scalar argument holds it exactly."""
    return float(np.float32(value))


@triton.jit
def _split(x, s, scale, period, step, GENERAL: tl.constexpr):
    if GENERAL:
        u = tl.math.div_rn(scale * (x - s), period)
        t = tl.math.div_rn(tl.math.ceil(u) * period, scale) + s
        return tl.math.div_rn(tl.minimum(t, 1.0) + tl.maximum(t - step, 0.0), 2.0)
    else:
        return tl.math.div_rn((x > s).to(tl.float32) + tl.minimum(s, 1.0), 2.0)


@triton.jit
def _dssn_kernel(x_ptr, v_ptr, k_ptr, out_ptr, d, K, chunks, per_image, L, L_f, q, step,
                 GENERAL: tl.constexpr, BLOCK: tl.constexpr, K_BLOCK: tl.constexpr):
    # Program (image b, chunk of BLOCK elements, K_BLOCK evaluations): x and v are loaded once.
    # L also comes as the float L_f: Triton turns an integer argument equal to 1 into a constant.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // chunks
    e = (pid % chunks) * BLOCK + tl.arange(0, BLOCK)
    ok = e < d
    x = tl.load(x_ptr + b * d + e, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + e, mask=ok, other=0).to(tl.int32)
    j0 = tl.program_id(1) * K_BLOCK
    for jj in range(K_BLOCK):
        j = j0 + jj
        if j < K:
            k = tl.load(k_ptr + b * per_image * K + j).to(tl.int32)
            m = k + v
            m = tl.where(m >= L, m - L, m)
            s = tl.math.div_rn(m.to(tl.float32) + 0.5, q)
            y = _split(x, s, q, L_f, step, GENERAL)
            tl.store(out_ptr + (b * K + j) * d + e, _to_output(y, out_ptr.dtype.element_ty), mask=ok)


def dssn_split_triton(
    x: torch.Tensor, offsets: torch.Tensor, template: torch.Tensor, levels: int, q: int, general: bool
) -> torch.Tensor:
    B, C, H, W = x.shape
    K = offsets.shape[1]
    x = x.contiguous()
    out = torch.empty(B * K, C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    d = C * H * W
    plan = triton_dssn_split(B, d, K)
    chunks = triton.cdiv(d, plan.meta["BLOCK"])
    step = np.float32(levels) / np.float32(q)
    _dssn_kernel[plan.grid](
        x, template, offsets, out, d, K, chunks, int(offsets.shape[0] != 1), levels, _f32(levels), _f32(q), float(step),
        GENERAL=general, enable_fp_fusion=False, **plan.meta,
    )
    return out


@triton.jit
def _noise_kernel(x_ptr, out_ptr, seed, d, n, two_lam, lam,
                  STREAM: tl.constexpr, SSN: tl.constexpr, GENERAL: tl.constexpr, BLOCK: tl.constexpr):
    # Program (sample b * n + j, block of elements); element i takes word i % 4 of the Philox
    # counter (i // 4, sample low word, stream, sample high word), as on every backend.
    sample = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = e < d
    x = tl.load(x_ptr + (sample // n) * d + e, mask=ok, other=0.0).to(tl.float32)
    c0 = (e >> 2).to(tl.uint32)
    zero = tl.zeros_like(c0)
    c1 = zero + (sample & 0xFFFFFFFF).to(tl.uint32)
    c3 = zero + (sample >> 32).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, zero + STREAM, c3)
    r = e & 3
    word = tl.where(r == 0, w0, tl.where(r == 1, w1, tl.where(r == 2, w2, w3)))
    u = uniform_open1(word)
    if SSN:
        y = _split(x, u * two_lam, 1.0, two_lam, two_lam, GENERAL)
    else:
        y = x + (u * two_lam - lam)
    tl.store(out_ptr + sample * d + e, _to_output(y, out_ptr.dtype.element_ty), mask=ok)


def _noise_triton(x: torch.Tensor, lam: float, n: int, seed: int, ssn: bool) -> torch.Tensor:
    B, C, H, W = x.shape
    x = x.contiguous()
    out = torch.empty(B * n, C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    d = C * H * W
    plan = triton_noise(B, d, n)
    _noise_kernel[plan.grid](
        x, out, seed, d, n, _f32(2.0 * lam), _f32(lam),
        STREAM=SSN_STREAM if ssn else UNIFORM_STREAM, SSN=ssn, GENERAL=not lam >= 0.5,
        enable_fp_fusion=False, **plan.meta,
    )
    return out


def ssn_noise_triton(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    return _noise_triton(x, lam, n, seed, ssn=True)


def uniform_noise_triton(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    return _noise_triton(x, lam, n, seed, ssn=False)
