"""Importing timm where torchvision's compiled ops cannot load.

timm imports torchvision. A torchvision wheel built for CUDA torch cannot load its compiled
ops next to a CPU-only torch (its ``_C`` links ``libc10_cuda``); torchvision then still
registers fake kernels for ``torchvision::nms`` / ``qnms`` at import and fails with
"operator torchvision::nms does not exist", so timm cannot be imported at all. This happens
when only PyPI's (CUDA) torchvision exists for the installed CPU torch.

:func:`import_timm` imports timm; if torchvision fails that way, it declares the schemas of
those two ops (no kernels: timm's ViTs never call them, and calling them would raise) so that
torchvision's import completes, then imports timm again. Any other import error is raised.
"""
from __future__ import annotations

import sys
from typing import Any

import torch

_schemas: torch.library.Library | None = None  # kept alive: the declared ops live as long as it does
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def import_timm() -> Any:
    """timm, importable even when torchvision's compiled ops do not load (see the module docstring)."""
    global _schemas
    try:
        import timm
    except RuntimeError as err:
        if "torchvision::" not in str(err) or _schemas is not None:
            raise
        _forget("timm")
        _forget("torchvision")
        _schemas = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _schemas.define(schema)
        import timm
    return timm
