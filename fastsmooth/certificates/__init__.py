"""Certificates: pure, vectorized functions on vote counts (no model)."""
from fastsmooth.certificates.counts import top_two
from fastsmooth.certificates.l1 import dssn_radius, randomized_l1_radius
from fastsmooth.certificates.l0 import l0_delta, l0_delta_exact, l0_radius
from fastsmooth.certificates.patch import (
    band_delta,
    block_delta,
    band_starts,
    bands_touched,
    strided_band_delta,
    strided_block_delta,
    certify_counts,
    largest_certified_patch,
    multi_band_delta,
    multi_block_delta,
    patch_deltas,
    randomized_band_certified,
    randomized_band_patch_size,
)

__all__ = [
    "top_two",
    "band_delta",
    "block_delta",
    "band_starts",
    "bands_touched",
    "strided_band_delta",
    "strided_block_delta",
    "multi_band_delta",
    "multi_block_delta",
    "patch_deltas",
    "certify_counts",
    "largest_certified_patch",
    "randomized_band_certified",
    "randomized_band_patch_size",
    "l0_delta",
    "l0_delta_exact",
    "l0_radius",
    "dssn_radius",
    "randomized_l1_radius",
]
