"""Pure-PyTorch reference of the l1 splitting ops: the readable spec the kernels match bit for bit.

All arithmetic is float32 (whatever x's dtype), one torch op per step in the order of
semantics.md §3, rounded once to x's dtype at the end. Scalars that enter a division are float32
tensors on x's device (never Python numbers): CUDA would otherwise multiply by a reciprocal.
"""
from __future__ import annotations

import numpy as np
import torch

from fastsmooth.ops._philox import philox4x32, uniform_open1

SSN_STREAM = 1
UNIFORM_STREAM = 2


def _f32(value: float, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32, device=device)


def split_formula(x: torch.Tensor, s: torch.Tensor, scale: torch.Tensor, period: torch.Tensor, step: torch.Tensor,
                  general: bool) -> torch.Tensor:
    """x~ for float32 x and split values s (broadcast). DSSN: scale q, period L, step L / q; SSN: 1, 2 lambda, 2 lambda."""
    if not general:
        return ((x > s).to(torch.float32) + torch.clamp(s, max=1.0)) / 2
    t = torch.ceil(scale * (x - s) / period) * period / scale + s
    return (torch.clamp(t, max=1.0) + torch.clamp(t - step, min=0.0)) / 2


def dssn_split_reference(
    x: torch.Tensor, offsets: torch.Tensor, template: torch.Tensor, levels: int, q: int, general: bool
) -> torch.Tensor:
    """(B, C, H, W) -> (B * K, C, H, W): sample b * K + j is image b at evaluation k = offsets[b or 0, j]."""
    B, C, H, W = x.shape
    K = offsets.shape[1]
    dev = x.device
    qf, lf = _f32(q, dev), _f32(levels, dev)
    m = (offsets.to(dev, torch.int64)[:, :, None] + template.to(dev, torch.int64).reshape(1, 1, -1)) % levels
    s = (m.to(torch.float32) + 0.5) / qf  # [M, K, d]
    xf = x.to(torch.float32).reshape(B, 1, -1)
    out = split_formula(xf, s, qf, lf, lf / qf, general)
    return out.reshape(B * K, C, H, W).to(x.dtype)


def noise_uniforms(shape: tuple[int, int, int], seed: int, stream: int, device: torch.device) -> torch.Tensor:
    """float32 [B, n, d] in [0, 1): element i of sample b * n + j from word i % 4 of Philox(i // 4, sample, stream, sample >> 32)."""
    B, n, d = shape
    sample = np.arange(B * n, dtype=np.uint64)[:, None]
    element = np.arange(d, dtype=np.uint64)[None, :]
    words = philox4x32(seed, element >> np.uint64(2), sample & np.uint64(0xFFFFFFFF), stream, sample >> np.uint64(32))
    stacked = np.stack(words, axis=0)  # [4, B * n, d]
    pick = np.broadcast_to((element & np.uint64(3)).astype(np.int64), (B * n, d))
    chosen = np.take_along_axis(stacked, pick[None], axis=0)[0]
    return uniform_open1(chosen).reshape(B, n, d).to(device)


def ssn_noise_reference(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    """SSN: s ~ U(0, 2 lambda) per element and sample (s = u * 2 lambda), then the split formula."""
    B, C, H, W = x.shape
    two_lam = _f32(2.0 * lam, x.device)
    u = noise_uniforms((B, n, C * H * W), seed, SSN_STREAM, x.device)
    xf = x.to(torch.float32).reshape(B, 1, -1)
    out = split_formula(xf, u * two_lam, _f32(1.0, x.device), two_lam, two_lam, not lam >= 0.5)
    return out.reshape(B * n, C, H, W).to(x.dtype)


def uniform_noise_reference(x: torch.Tensor, lam: float, n: int, seed: int) -> torch.Tensor:
    """x + U(-lambda, lambda) per element and sample: x + (u * 2 lambda - lambda)."""
    B, C, H, W = x.shape
    u = noise_uniforms((B, n, C * H * W), seed, UNIFORM_STREAM, x.device)
    xf = x.to(torch.float32).reshape(B, 1, -1)
    out = xf + (u * _f32(2.0 * lam, x.device) - _f32(lam, x.device))
    return out.reshape(B * n, C, H, W).to(x.dtype)
