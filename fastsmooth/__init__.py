"""fastsmooth: a fast certification engine for smoothing-based certified robustness.

Tensor ops live in :mod:`fastsmooth.ops`, base networks in :mod:`fastsmooth.models`, smoothed
classifiers in :mod:`fastsmooth.smoothing` (the main ones re-exported here), certificates on
vote counts in :mod:`fastsmooth.certificates`; :func:`backends` reports which kernels run here.
:func:`report` plots and tabulates results files; :mod:`fastsmooth.integrations` certifies
other libraries' estimators (ART) on fastsmooth's path.
"""
from fastsmooth._backend import BACKENDS, BackendInfo, FastsmoothWarning, backends, warn_if_degraded
from fastsmooth import ops
from fastsmooth import models
from fastsmooth.certificates import l0_delta, l0_radius
from fastsmooth.engine import NonFiniteLogitsError
from fastsmooth.evaluate import EvaluationSummary, evaluate
from fastsmooth.reporting import Report, report
from fastsmooth.smoothing import (
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    DSSN,
    PatchCleanser,
    SSN,
    RandomizedAblation,
    RandomizedBandSmoothing,
    RowSmoothing,
    Smooth,
    UniformSmoothing,
    ViTBlockSmoothing,
    ViTColumnSmoothing,
    ViTMultiBandSmoothing,
    ViTMultiBlockSmoothing,
    ViTRowSmoothing,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "FastsmoothWarning",
    "NonFiniteLogitsError",
    "backends",
    "ops",
    "models",
    "evaluate",
    "EvaluationSummary",
    "report",
    "Report",
    "ColumnSmoothing",
    "RowSmoothing",
    "BlockSmoothing",
    "MultiBandSmoothing",
    "MultiBlockSmoothing",
    "RandomizedBandSmoothing",
    "PatchCleanser",
    "Smooth",
    "RandomizedAblation",
    "DSSN",
    "SSN",
    "UniformSmoothing",
    "ViTColumnSmoothing",
    "ViTRowSmoothing",
    "ViTBlockSmoothing",
    "ViTMultiBandSmoothing",
    "ViTMultiBlockSmoothing",
    "l0_delta",
    "l0_radius",
    "__version__",
]

warn_if_degraded()

