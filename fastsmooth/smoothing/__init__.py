"""Smoothed classifiers: run a base model on ablated / noised batches and certify."""
from fastsmooth.smoothing.base import BaseSmoother, Certified
from fastsmooth.smoothing.gaussian import Smooth

__all__ = ["BaseSmoother", "Certified", "Smooth"]
