"""Column ablation written like the papers' released code: for every position a zero tensor,
slice copies of x and 1 - x (two slices at the wraparound), and a channel concatenation."""
from __future__ import annotations

import torch


def naive_column_batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    W = x.shape[3]
    batches = []
    for pos in range(W):
        out_c1 = torch.zeros_like(x)
        out_c2 = torch.zeros_like(x)
        if pos + size > W:
            out_c1[:, :, :, pos:] = x[:, :, :, pos:]
            out_c2[:, :, :, pos:] = 1.0 - x[:, :, :, pos:]
            out_c1[:, :, :, : pos + size - W] = x[:, :, :, : pos + size - W]
            out_c2[:, :, :, : pos + size - W] = 1.0 - x[:, :, :, : pos + size - W]
        else:
            out_c1[:, :, :, pos : pos + size] = x[:, :, :, pos : pos + size]
            out_c2[:, :, :, pos : pos + size] = 1.0 - x[:, :, :, pos : pos + size]
        batches.append(torch.cat((out_c1, out_c2), 1))
    return batches
