"""fastsmooth: a fast certification engine for smoothing-based certified robustness.

Tensor ops live in :mod:`fastsmooth.ops`; :func:`backends` reports which kernels run here.
"""
from fastsmooth._backend import BACKENDS, BackendInfo, FastsmoothWarning, backends, warn_if_degraded
from fastsmooth import ops

__version__ = "0.1.0"

__all__ = ["BACKENDS", "BackendInfo", "FastsmoothWarning", "backends", "ops", "__version__"]

warn_if_degraded()

from fastsmooth.smoothing.l1 import DSSN, SSN, UniformSmoothing  # noqa: E402

__all__ += ["DSSN", "SSN", "UniformSmoothing"]
