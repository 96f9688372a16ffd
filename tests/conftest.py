"""Test setup: Triton kernels run under its interpreter on a machine without a GPU.

TRITON_INTERPRET must be set before triton compiles any kernel, so it is set here, before
fastsmooth is imported. FASTSMOOTH_REQUIRE_BACKENDS=cpu,triton (set by CI) turns a skipped
backend into a failure, so a broken build cannot pass by skipping its tests.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fastsmooth  # noqa: E402

KERNEL_BACKENDS = ("cpu", "triton", "cuda")


def require_backend(name: str, device: str = "cpu") -> None:
    """Skip (or fail, if CI requires it) when backend `name` cannot run on `device`."""
    info = fastsmooth.backends()[name]
    if info.available and device in info.devices:
        return
    required = {b for b in os.environ.get("FASTSMOOTH_REQUIRE_BACKENDS", "").split(",") if b}
    message = f"backend {name!r} unavailable on {device}: {info.reason or 'other device'}"
    if name in required:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request) -> str:
    """Every compiled / Triton backend that can run here (CUDA tensors for 'cuda')."""
    device = "cuda" if request.param == "cuda" else "cpu"
    require_backend(request.param, device)
    return request.param


def device_of(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu")


def timm_or_skip():
    """timm (the optional extra ``vit``), imported through fastsmooth's torchvision shim; skips without it."""
    from fastsmooth.models.vit import import_timm

    try:
        return import_timm()
    except ImportError as err:
        pytest.skip(f"timm unavailable: {err}")
