"""Triton kernel of the fused Gaussian-noise op (beside its reference in reference.py).

One program owns BLOCK consecutive (sample, quad) pairs of the output, a quad being four
consecutive elements of a sample, so small images fill whole blocks
(``launch_plans.triton_gaussian_noise``: 256 quads and 4 warps, 8 outputs per lane). One ``tl.philox`` call per
quad gives the four words of two Box-Muller pairs; the [BLOCK, 4] tile is stored contiguously.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastsmooth.ops._philox_triton import uniform_open0, uniform_open1
from fastsmooth.ops.ablation.triton_kernel import _to_output
from fastsmooth.ops.gaussian.reference import STREAM
from fastsmooth.ops.launch_plans import triton_gaussian_noise


@triton.jit
def _box_muller(w_radius, w_angle, ACC_DTYPE: tl.constexpr):
    u1 = uniform_open0(w_radius).to(ACC_DTYPE)
    u2 = uniform_open1(w_angle).to(ACC_DTYPE)
    if ACC_DTYPE == tl.float64:
        r = tl.sqrt(-2.0 * tl.log(u1))
    else:
        r = tl.sqrt_rn(-2.0 * tl.log(u1))  # tl.sqrt of float32 is approximate on the GPU
    t = 6.283185307179586 * u2
    return r * tl.cos(t), r * tl.sin(t)


@triton.jit
def _gaussian_noise_kernel(
    x_ptr, out_ptr, sigma_ptr, seed, D, Q, n, start, total,
    STREAM_ID: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # flat (sample row, quad) index
    valid = i < total
    r = i // Q
    q = i % Q
    sample = start + r
    b = sample // n
    j = sample % n
    w0, w1, w2, w3 = tl.philox(
        seed, q.to(tl.uint32), j.to(tl.uint32), b.to(tl.uint32), tl.full([BLOCK], STREAM_ID, tl.uint32)
    )
    z0, z1 = _box_muller(w0, w1, ACC_DTYPE)
    z2, z3 = _box_muller(w2, w3, ACC_DTYPE)
    k = tl.arange(0, 4)[None, :]
    z = tl.where(k == 0, z0[:, None], tl.where(k == 1, z1[:, None], tl.where(k == 2, z2[:, None], z3[:, None])))
    e = 4 * q[:, None] + k
    inside = valid[:, None] & (e < D)
    x = tl.load(x_ptr + b[:, None] * D + e, mask=inside, other=0.0).to(ACC_DTYPE)
    noised = x + tl.load(sigma_ptr).to(ACC_DTYPE) * z
    tl.store(out_ptr + r[:, None] * D + e, _to_output(noised, out_ptr.dtype.element_ty), mask=inside)


def gaussian_noise_triton(
    x: torch.Tensor,
    sigma: float,
    n: int,
    seed: int,
    start: int,
    count: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, C, H, W = x.shape
    x = x.contiguous()
    if out is None:
        out = torch.empty(count, C, H, W, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    D = C * H * W
    Q = math.ceil(D / 4)
    total = count * Q
    plan = triton_gaussian_noise(count, D)
    # sigma travels as a one-element tensor of the accumulation dtype so float64 images keep a double sigma.
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    sigma_t = torch.tensor([sigma], dtype=acc, device=x.device)
    _gaussian_noise_kernel[plan.grid](
        x, out, sigma_t, seed, D, Q, n, start, total,
        STREAM_ID=STREAM, ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32, **plan.meta,
    )
    return out
