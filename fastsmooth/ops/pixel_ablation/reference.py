"""Pure NumPy / PyTorch reference of l0 pixel ablation: the readable spec the kernels match.

Keys (csrc/ops/common/pixel_ablation.h): sample s gives pixel p the 64-bit key made of Philox
words (0, 1) (even p) or (2, 3) (odd p) of counter (p // 2, s mod 2**32, s >> 32, TAG), with
the low ``index_bits`` bits replaced by p; the sample keeps the ``keep`` pixels of smallest
key. Arithmetic of the encoding is in float32 (float64 for float64 input), rounded once.
"""
from __future__ import annotations

import numpy as np
import torch

from fastsmooth.ops._philox import philox4x32
from fastsmooth.ops.ablation.reference import ablate_kept_reference

TAG = 0x6C30AB1A  # kPixelAblationTag: the fourth counter word of this op


def index_bits(d: int) -> int:
    """Low key bits that hold the pixel index (enough for d - 1, at least 1)."""
    return max(1, (d - 1).bit_length())


def sample_ids(B: int, n: int, shared: bool) -> np.ndarray:
    """Sample id of output sample b * n + j: b * n + j, or j when one subset serves all images."""
    j = np.tile(np.arange(n, dtype=np.uint64), B)
    return j if shared else np.arange(B * n, dtype=np.uint64)


def pixel_keys(seed: int, samples: np.ndarray, d: int) -> np.ndarray:
    """uint64 keys [len(samples), d] of every pixel of every sample."""
    q = np.arange((d + 1) // 2, dtype=np.uint64)[None, :]
    s = samples.astype(np.uint64)[:, None]
    w = philox4x32(seed, q, s & np.uint64(0xFFFFFFFF), s >> np.uint64(32), TAG)
    words = [v.astype(np.uint64) for v in w]
    even = (words[0] << np.uint64(32)) | words[1]
    odd = (words[2] << np.uint64(32)) | words[3]
    random = np.stack([even, odd], axis=-1).reshape(len(samples), -1)[:, :d]
    bits = np.uint64(index_bits(d))
    return ((random >> bits) << bits) | np.arange(d, dtype=np.uint64)[None, :]


def keep_masks(seed: int, samples: np.ndarray, d: int, keep: int) -> torch.Tensor:
    """bool [len(samples), d]: the pixels each sample retains (exactly ``keep`` per row)."""
    if keep == 0 or keep == d:
        return torch.full((len(samples), d), keep == d, dtype=torch.bool)
    keys = pixel_keys(seed, samples, d)
    threshold = np.partition(keys, keep - 1, axis=1)[:, keep - 1 : keep]
    return torch.from_numpy(keys <= threshold)


def ablate_pixels_reference(
    x: torch.Tensor,
    keep: int,
    n: int,
    seed: int,
    shared: bool,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    B, _, H, W = x.shape
    mask = keep_masks(seed, sample_ids(B, n, shared), H * W, keep).to(x.device).view(B, n, H, W)
    return ablate_kept_reference(x, mask, mean, std, out)
