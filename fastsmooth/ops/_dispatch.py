"""Runs one op on the backend chosen for its input tensor."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from fastsmooth._backend import resolve_backend


def dispatch(impls: Mapping[str, Callable[..., Any]], backend: str, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """Call ``impls[name]`` for the backend resolved from ``backend`` and x's device."""
    return impls[resolve_backend(backend, x.device)](x, *args, **kwargs)
