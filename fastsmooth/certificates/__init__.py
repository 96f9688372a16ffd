"""Certificates: pure, vectorized functions on vote counts (no model)."""
from fastsmooth.certificates.counts import top_two

__all__ = ["top_two"]

# l0 randomized ablation.
from fastsmooth.certificates.l0 import l0_delta, l0_delta_exact, l0_radius  # noqa: E402

__all__ += ["l0_delta", "l0_delta_exact", "l0_radius"]
