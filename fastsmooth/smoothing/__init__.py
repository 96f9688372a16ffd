"""Smoothed classifiers: run a base model on ablated / noised batches and certify."""
from fastsmooth.smoothing.base import BaseSmoother, Certified
from fastsmooth.smoothing.gaussian import Smooth
from fastsmooth.smoothing.l0 import RandomizedAblation
from fastsmooth.smoothing.l1 import DSSN, SSN, UniformSmoothing
from fastsmooth.smoothing.patchcleanser import PatchCleanser
from fastsmooth.smoothing.patch import (
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    PatchSmoother,
    RandomizedBandSmoothing,
    RowSmoothing,
)
from fastsmooth.smoothing.vit import (
    ViTBlockSmoothing,
    ViTColumnSmoothing,
    ViTMultiBandSmoothing,
    ViTMultiBlockSmoothing,
    ViTRowSmoothing,
)

__all__ = [
    "BaseSmoother",
    "Certified",
    "Smooth",
    "PatchSmoother",
    "ColumnSmoothing",
    "RowSmoothing",
    "BlockSmoothing",
    "MultiBandSmoothing",
    "MultiBlockSmoothing",
    "RandomizedBandSmoothing",
    "PatchCleanser",
    "RandomizedAblation",
    "DSSN",
    "SSN",
    "UniformSmoothing",
    "ViTColumnSmoothing",
    "ViTRowSmoothing",
    "ViTBlockSmoothing",
    "ViTMultiBandSmoothing",
    "ViTMultiBlockSmoothing",
]
