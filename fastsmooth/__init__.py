"""fastsmooth: a fast certification engine for smoothing-based certified robustness.

Tensor ops live in :mod:`fastsmooth.ops`; :func:`backends` reports which kernels run here.
"""
from fastsmooth._backend import BACKENDS, BackendInfo, FastsmoothWarning, backends, warn_if_degraded
from fastsmooth import ops

__version__ = "0.1.0"

__all__ = ["BACKENDS", "BackendInfo", "FastsmoothWarning", "backends", "ops", "__version__"]

warn_if_degraded()

# l0 randomized ablation.
from fastsmooth.certificates.l0 import l0_delta, l0_radius  # noqa: E402
from fastsmooth.smoothing.l0 import RandomizedAblation  # noqa: E402

__all__ += ["RandomizedAblation", "l0_delta", "l0_radius"]
