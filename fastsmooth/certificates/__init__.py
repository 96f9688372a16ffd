"""Certificates: pure, vectorized functions on vote counts (no model)."""
from fastsmooth.certificates.counts import top_two

__all__ = ["top_two"]

from fastsmooth.certificates.l1 import dssn_radius, randomized_l1_radius  # noqa: E402

__all__ += ["dssn_radius", "randomized_l1_radius"]
