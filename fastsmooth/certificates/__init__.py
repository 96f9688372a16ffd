"""Certificates: pure, vectorized functions on vote counts (no model)."""
from fastsmooth.certificates.counts import top_two

__all__ = ["top_two"]
