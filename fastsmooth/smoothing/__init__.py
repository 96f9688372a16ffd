"""Smoothed classifiers: run a base model on ablated / noised batches and certify."""
from fastsmooth.smoothing.base import BaseSmoother, Certified

__all__ = ["BaseSmoother", "Certified"]

from fastsmooth.smoothing.l1 import DSSN, SSN, UniformSmoothing  # noqa: E402

__all__ += ["DSSN", "SSN", "UniformSmoothing"]
