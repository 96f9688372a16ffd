"""Smoothed classifiers: run a base model on ablated / noised batches and certify."""
from fastsmooth.smoothing.base import BaseSmoother, Certified

__all__ = ["BaseSmoother", "Certified"]

# l0 randomized ablation.
from fastsmooth.smoothing.l0 import RandomizedAblation  # noqa: E402

__all__ += ["RandomizedAblation"]
