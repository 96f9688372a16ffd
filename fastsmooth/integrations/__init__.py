"""Bridges from other libraries' estimators to fastsmooth's certification path.

- :mod:`fastsmooth.integrations.art`: IBM's Adversarial Robustness Toolbox (ART 1.20):
  ``PyTorchDeRandomizedSmoothing`` (levine2020) and ``PyTorchRandomizedSmoothing`` (Gaussian).

Each bridge imports its library only when used, so ``import fastsmooth`` never needs it.
"""
