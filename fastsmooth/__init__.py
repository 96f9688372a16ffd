"""fastsmooth: a fast certification engine for smoothing-based certified robustness.

Tensor ops live in :mod:`fastsmooth.ops`; :func:`backends` reports which kernels run here.
"""
from fastsmooth._backend import BACKENDS, BackendInfo, FastsmoothWarning, backends, warn_if_degraded
from fastsmooth import ops
from fastsmooth.evaluate import EvaluationSummary, evaluate
from fastsmooth.smoothing import (
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    RandomizedBandSmoothing,
    RowSmoothing,
)

__version__ = "0.1.0"

__all__ = ["BACKENDS", "BackendInfo", "FastsmoothWarning", "backends", "ops", "__version__"]
__all__ += [
    "evaluate",
    "EvaluationSummary",
    "ColumnSmoothing",
    "RowSmoothing",
    "BlockSmoothing",
    "MultiBandSmoothing",
    "MultiBlockSmoothing",
    "RandomizedBandSmoothing",
]

warn_if_degraded()
