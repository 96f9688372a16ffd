"""Which backends can run, and which one an op uses.

Four backends implement every op: ``reference`` (pure PyTorch, the readable spec), ``cpu``
(C++ kernels of the compiled extension ``fastsmooth._C``), ``triton`` and ``cuda`` (CUDA
kernels of the extension). ``backend="auto"`` picks the fastest one available for the
tensor's device. When the compiled extension cannot be loaded the package still works on the
reference and Triton backends and says so once, with the reason, when it is imported.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")


class FastsmoothWarning(UserWarning):
    """Raised once per process for a degraded setup (for example a missing extension)."""


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """Availability of one backend: ``available`` and, if not, ``reason``; ``devices`` it runs on."""

    name: str
    available: bool
    devices: tuple[str, ...]
    reason: str = ""


@functools.cache
def _load_extension() -> tuple[ModuleType | None, str]:
    if os.environ.get("FASTSMOOTH_DISABLE_EXTENSION") == "1":
        return None, "disabled by FASTSMOOTH_DISABLE_EXTENSION=1"
    try:
        module = importlib.import_module("fastsmooth._C")
    except ImportError as exc:  # not built, or built against another torch
        return None, f"the compiled extension fastsmooth._C could not be imported ({exc})"
    # Fake (meta) kernels so torch.compile can trace code that calls the compiled ops.
    importlib.import_module("fastsmooth.ops._fake")
    return module, ""


def extension() -> ModuleType | None:
    """The compiled extension module, or None when it is unavailable."""
    return _load_extension()[0]


def warn_if_degraded() -> None:
    """Warn (once per process) when the compiled extension is missing."""
    module, reason = _load_extension()
    if module is None and not getattr(warn_if_degraded, "_done", False):
        warn_if_degraded._done = True  # type: ignore[attr-defined]
        warnings.warn(
            f"fastsmooth: {reason}; CPU tensors use the slower 'reference' backend. "
            "Rebuild with `pip install --no-build-isolation -e .` to get the C++/CUDA kernels.",
            FastsmoothWarning,
            stacklevel=3,
        )


@functools.cache
def _triton_status() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc})"
    return True, ""


def triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def backends() -> dict[str, BackendInfo]:
    """Report every backend: whether it is available here, on which devices, and why not."""
    return dict(_backends(triton_interpreted()))


@functools.cache
def _backends(interpreted: bool) -> tuple[tuple[str, BackendInfo], ...]:
    # Cached: ops resolve their backend on every call, and probing CUDA each time costs
    # more than a small kernel. Keyed on TRITON_INTERPRET, the one input that may change.
    module, ext_reason = _load_extension()
    cuda_ok = torch.cuda.is_available()
    triton_ok, triton_reason = _triton_status()
    info = {"reference": BackendInfo("reference", True, ("cpu", "cuda"))}
    info["cpu"] = BackendInfo("cpu", module is not None, ("cpu",), ext_reason)
    if not triton_ok:
        info["triton"] = BackendInfo("triton", False, (), triton_reason)
    elif cuda_ok:
        info["triton"] = BackendInfo("triton", True, ("cuda",) + (("cpu",) if interpreted else ()))
    elif interpreted:
        info["triton"] = BackendInfo("triton", True, ("cpu",), "")
    else:
        info["triton"] = BackendInfo("triton", False, (), "no CUDA device (set TRITON_INTERPRET=1 to run it on the CPU)")
    if module is None:
        info["cuda"] = BackendInfo("cuda", False, (), ext_reason)
    elif not getattr(module, "WITH_CUDA", 0):
        info["cuda"] = BackendInfo("cuda", False, (), "fastsmooth._C was built without CUDA kernels")
    elif not cuda_ok:
        info["cuda"] = BackendInfo("cuda", False, (), "no CUDA device is visible to torch")
    else:
        info["cuda"] = BackendInfo("cuda", True, ("cuda",))
    return tuple(info.items())


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend an op runs on for a tensor on ``device``; raises if ``backend`` cannot run there."""
    if backend not in BACKENDS and backend != "auto":
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    info = backends()
    kind = device.type
    if backend == "auto":
        order = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}.get(kind, ("reference",))
        for name in order:
            if info[name].available and kind in info[name].devices:
                return name
        return "reference"
    chosen = info[backend]
    if not chosen.available:
        raise RuntimeError(f"backend={backend!r} is unavailable: {chosen.reason}")
    if kind not in chosen.devices:
        raise ValueError(f"backend={backend!r} runs on {'/'.join(chosen.devices)} tensors, but the input is on {device}")
    return backend
