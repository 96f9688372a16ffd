"""fastsmooth: a fast certification engine for smoothing-based certified robustness.

Tensor ops live in :mod:`fastsmooth.ops`; :func:`backends` reports which kernels run here.
"""
from fastsmooth._backend import BACKENDS, BackendInfo, FastsmoothWarning, backends, warn_if_degraded
from fastsmooth import ops
from fastsmooth.smoothing.gaussian import Smooth

__version__ = "0.1.0"

__all__ = ["BACKENDS", "BackendInfo", "FastsmoothWarning", "backends", "ops", "__version__", "Smooth"]

warn_if_degraded()
