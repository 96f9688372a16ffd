"""Runs one op on the backend chosen for its input tensor; the single place where an op's
backend is resolved, and so where the compiled backends' self-check hooks in."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from fastsmooth._backend import resolve_backend
from fastsmooth.ops import _selfcheck


class OpTable(dict):
    """An op's implementations by backend name, with the op's name (for the self-check)."""

    def __init__(self, op: str, impls: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__(impls)
        self.op = op


def kernel_for(impls: OpTable, backend: str, device: torch.device) -> Callable[..., Any]:
    """The implementation of ``impls.op`` for ``backend`` on ``device``, self-checked against
    the reference on its first use in this process (see fastsmooth.ops._selfcheck)."""
    name = resolve_backend(backend, device)
    _selfcheck.verify(impls.op, name, device)
    return impls[name]


def dispatch(impls: OpTable, backend: str, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """Call the implementation of ``impls.op`` for the backend resolved from ``backend`` and x's device."""
    return kernel_for(impls, backend, x.device)(x, *args, **kwargs)
