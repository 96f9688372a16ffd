"""Smoothed classifiers: run a base model on ablated / noised batches and certify."""
from fastsmooth.smoothing.base import BaseSmoother, Certified

__all__ = ["BaseSmoother", "Certified"]
