"""l1 certificates: DSSN's exact radius and the randomized (SSN / uniform) radius.

DSSN (semantics.md §3): with L evaluations, every quantized x' with ||x - x'||_1 <= D / q
changes at most D evaluations (each element's split point falls between x_i and x'_i for
q |x_i - x'_i| of the L values of k), so n_c - n_r moves by at most 2 D. The prediction c
survives while the margin stays positive, or zero with c winning the tie (c < r):
D = floor((n_c - n_r - [r < c]) / 2), radius D / q (inclusive, exact, never negative).
"""
from __future__ import annotations

import numpy as np
import torch

from fastsmooth._validation import check_int
from fastsmooth.certificates.counts import top_two


def dssn_radius(counts: torch.Tensor, q: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction int64 [B], radius float64 [B]) from DSSN vote counts [B, num_classes].

    prediction = argmax (smallest index on ties), r = runner-up (semantics.md §0),
    radius = floor((n_c - n_r - [r < c]) / 2) / q.
    """
    q = check_int(q, "q", 1)
    if counts.is_floating_point() or counts.is_complex():
        raise TypeError(f"counts must hold integers, got dtype {counts.dtype}")
    c, r = top_two(counts)
    counts = counts.to(torch.int64)
    n_c = counts.gather(1, c[:, None])[:, 0]
    n_r = counts.gather(1, r[:, None])[:, 0]
    margin = n_c - n_r - (r < c).to(torch.int64)  # >= 0: r < c forces n_c > n_r
    return c, torch.div(margin, 2, rounding_mode="floor").to(torch.float64) / q


def randomized_l1_radius(p_lower: np.ndarray | torch.Tensor | float, lam: float) -> torch.Tensor:
    """2 lambda (p_lower - 1/2), float64: the SSN / uniform-noise radius; negative = not certified."""
    p = torch.as_tensor(np.asarray(p_lower, dtype=np.float64) if not isinstance(p_lower, torch.Tensor) else p_lower)
    return 2.0 * float(lam) * (p.to(torch.float64) - 0.5)
