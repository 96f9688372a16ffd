"""Argument checks shared by the public ops. Every error names the argument and its value."""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """x must be a 4-D (B, C, H, W) floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {x.dtype}")
    return x


def check_int(value: object, name: str, low: int, high: int) -> int:
    """An integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) and not (
        isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()
    ):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic type of the kernels: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_stats(
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    x: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-channel normalization constants as contiguous accumulation-dtype tensors on x's device."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
    channels = x.shape[1]
    out = []
    for name, value in (("mean", mean), ("std", std)):
        # Checked on the host, then moved: no device synchronization when x is on a GPU.
        t = torch.as_tensor(value, dtype=accumulation_dtype(x.dtype), device="cpu").reshape(-1)
        if t.numel() != channels:
            raise ValueError(f"{name} must have one entry per channel (C = {channels}), got {t.numel()}: {value!r}")
        if name == "std" and bool((t == 0).any()):
            raise ValueError(f"std must be nonzero, got {value!r}")
        out.append(t.to(x.device).contiguous())
    return out[0], out[1]


def check_out(
    out: torch.Tensor | None, shape: tuple[int, ...], x: torch.Tensor, *, channels_last_ok: bool = False
) -> None:
    """An out= tensor must have the result's shape, x's dtype and device, and be contiguous
    (or, where the op can write it, channels-last contiguous)."""
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be {x.dtype} on {x.device}, got {out.dtype} on {out.device}")
    if out.is_contiguous() or (channels_last_ok and out.is_contiguous(memory_format=torch.channels_last)):
        return
    layouts = "contiguous or channels-last contiguous" if channels_last_ok else "contiguous"
    raise ValueError(f"out must be {layouts}, got strides {out.stride()}")


def check_index_tensor(values: object, name: str, high: int, device: torch.device) -> torch.Tensor:
    """Integer indices in [0, high) as an int64 tensor (any shape)."""
    t = torch.as_tensor(values, device="cpu") if not isinstance(values, torch.Tensor) else values.detach().cpu()
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
        bad = t[(t < 0) | (t >= high)][0].item()
        raise ValueError(f"{name} must lie in [0, {high}), got {bad}")
    return t
