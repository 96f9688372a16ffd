"""Self-check of the compiled backends: the first use of an op on a backend and device is
compared with the reference.

The cpu, cuda and triton kernels are tested against the reference in the test suite, but a
kernel can still be wrong where it runs: a CUDA build for another architecture, a Triton or
compiler version that miscompiles, a driver bug. So the first time a process runs an op on
one of those backends on a device, :func:`verify` runs the op once on a small random input
with that backend and with ``reference`` and compares the two. A mismatch raises
:class:`SelfCheckError` naming the op, the backend and the device (never a silent fallback to
another backend). ``FASTSMOOTH_SELF_CHECK=0`` turns the check off.

:func:`check_all` runs every op on every available backend and device (``fastsmooth info
--check``).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Callable

import torch

__all__ = ["SelfCheckError", "CheckResult", "OPS", "verify", "check_all", "enabled", "reset"]


class SelfCheckError(RuntimeError):
    """A compiled backend computed something other than the reference."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One op on one backend and device: ``ok``, and otherwise what went wrong."""

    op: str
    backend: str
    device: str
    ok: bool
    detail: str
    seconds: float


def enabled() -> bool:
    """False when ``FASTSMOOTH_SELF_CHECK=0``."""
    return os.environ.get("FASTSMOOTH_SELF_CHECK", "1") != "0"


# (op, backend, device) already checked in this process (or being checked: the check runs the
# op itself, which must not check again).
_verified: set[tuple[str, str, str]] = set()
_suspended = False  # True while check_all compares ops itself


def reset() -> None:
    """Forget which ops were checked (the next use of each checks again)."""
    _verified.clear()


def _images(seed: int, device: torch.device, shape: tuple[int, ...] = (2, 3, 6, 7)) -> torch.Tensor:
    """Random images on the 1/255 grid (DSSN needs quantized input), with exact 0 and 1 in them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, shape, generator=g).float() / 255
    x.view(-1)[:2] = torch.tensor([0.0, 1.0])
    return x.to(device)


def _ablation(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    return torch.cat([
        ops.ablate_bands(x, 3, mean=mean, std=std, backend=backend).flatten(),
        ops.ablate_blocks(x, 2, backend=backend).flatten(),
    ])


def _pixel_ablation(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    return ops.ablate_pixels(x, keep=9, n=5, seed=seed, backend=backend)


def _dssn_split(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    # both branches of the split formula: lambda < 0.5 and lambda >= 0.5
    return torch.cat([
        ops.dssn_split(x, sigma=0.1, offsets=range(0, 90, 7), seed=seed % 1000, backend=backend).flatten(),
        ops.dssn_split(x, sigma=0.5, offsets=range(0, 441, 37), seed=seed % 1000, backend=backend).flatten(),
    ])


def _ssn_noise(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    return ops.ssn_noise(x, 0.3, 4, seed=seed, backend=backend)


def _uniform_noise(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    return ops.uniform_noise(x, 0.3, 4, seed=seed, backend=backend)


def _gaussian_noise(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth import ops

    return ops.gaussian_noise(x, 0.25, 4, seed=seed, backend=backend)


def _mask_pairs(backend: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    from fastsmooth.ops.mask_pairs import mask_pairs

    g = torch.Generator().manual_seed(seed)
    R = 9
    images = torch.randint(0, x.shape[0], (R,), generator=g)
    corners = torch.randint(-2, 8, (R, 2, 2), generator=g)
    rects = torch.cat([corners, corners + torch.randint(0, 5, (R, 2, 2), generator=g)], dim=2)
    return torch.cat([
        mask_pairs(x, images, rects, 0.0, backend=backend).flatten(),
        mask_pairs(x, images, rects, 0.5, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], backend=backend).flatten(),
    ])


#: op name -> (run(backend, x, seed), absolute tolerance). Gaussian noise goes through
#: log / cos / sin, which differ by a few ulps between math libraries (README, Limitations).
OPS: dict[str, tuple[Callable[[str, torch.Tensor, int], torch.Tensor], float]] = {
    "ablation": (_ablation, 0.0),
    "pixel_ablation": (_pixel_ablation, 0.0),
    "dssn_split": (_dssn_split, 0.0),
    "ssn_noise": (_ssn_noise, 0.0),
    "uniform_noise": (_uniform_noise, 0.0),
    "gaussian_noise": (_gaussian_noise, 1e-5 * 0.25),
    "mask_pairs": (_mask_pairs, 0.0),
}


def _compare(op: str, backend: str, device: torch.device) -> str | None:
    """None when ``op`` on ``backend`` matches the reference on a fresh random input, else why not."""
    run, tolerance = OPS[op]
    seed = secrets.randbits(31)
    x = _images(seed, device)
    got = run(backend, x, seed)
    want = run("reference", x, seed)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"returned {tuple(got.shape)} {got.dtype}, the reference {tuple(want.shape)} {want.dtype} (input seed {seed})"
    diff = (got.double() - want.double()).abs()
    bad = ~(diff <= tolerance)  # NaN counts as a mismatch
    if bool(bad.any()):
        return (f"{int(bad.sum())} of {bad.numel()} values differ from the reference, by up to "
                f"{float(diff[bad].nan_to_num(nan=float('inf')).max()):.3g} (tolerance {tolerance:g}; input seed {seed})")
    return None


def verify(op: str, backend: str, device: torch.device) -> None:
    """Check ``op`` on ``backend`` and ``device`` against the reference, once per process.

    Called by the ops' dispatch (fastsmooth.ops._dispatch) every time a backend is chosen;
    only the first call per (op, backend, device) does any work."""
    if backend == "reference" or op not in OPS:
        return
    key = (op, backend, str(device))
    if key in _verified or _suspended or not enabled() or torch.compiler.is_compiling():
        return  # (while torch.compile traces, tensors hold no values: the first eager call checks)
    _verified.add(key)
    try:
        problem = _compare(op, backend, device)
    except Exception:
        _verified.discard(key)
        raise
    if problem is not None:
        _verified.discard(key)  # it fails again next time: never a silent fallback
        raise SelfCheckError(
            f"self-check failed: op {op!r} on backend {backend!r} on device {device} {problem}. Its results "
            f"cannot be trusted here: choose another backend (backend='reference' always works), rebuild the "
            f"extension, and report this (`fastsmooth info --check` checks every op); FASTSMOOTH_SELF_CHECK=0 "
            f"skips this check"
        )


def check_all(backends: list[str] | None = None) -> list[CheckResult]:
    """Every op on every available compiled backend and device, against the reference."""
    global _suspended
    from fastsmooth._backend import backends as available

    results = []
    _suspended, was = True, _suspended
    try:
        results = _check_every(available(), backends)
    finally:
        _suspended = was
    return results


def _check_every(available: dict, backends: list[str] | None) -> list[CheckResult]:
    results = []
    for name, info in available.items():
        if name == "reference" or not info.available or (backends is not None and name not in backends):
            continue
        for device_type in info.devices:
            device = torch.device(device_type)
            for op in OPS:
                start = time.perf_counter()
                try:
                    problem = _compare(op, name, device)
                    ok, detail = problem is None, problem or "matches the reference"
                except Exception as err:  # an op that cannot even run is a failure too
                    ok, detail = False, f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                results.append(CheckResult(op, name, str(device), ok, detail, time.perf_counter() - start))
    return results
