"""Compiled forwards of the base model (``compile=`` of every smoother, ``evaluate``, the ART
adapter and ``fastsmooth certify --compile``).

The engine runs the base model on forwards of a fixed size (``batch_size`` rows) except the
last of a run. :func:`forward` compiles the model with ``torch.compile(dynamic=False)`` for that
one static shape and pads a shorter batch to it with copies of its first row, dropping the
padded rows' outputs, so one graph serves a whole run. Every op of a base classifier in eval
mode is row-wise, so padding never changes a real row's logits beyond float rounding.

- One compiled wrapper per (model, entry point, autocast dtype, device type, mode) in the
  process (a weak dictionary on the model); torch.compile keeps one graph per input shape,
  dtype, device and layout under it. The first forward of each such key compiles: its time is
  recorded (:func:`compile_records`, :func:`compile_seconds`) and later calls reuse the graph.
- ``compile=True`` picks the mode: ``"reduce-overhead"`` (CUDA graphs: one replay per forward,
  no per-kernel launch cost, which dominates small networks) on CUDA, ``"default"`` elsewhere.
  A mode string is passed to torch.compile as is, except that the CUDA-graph modes fall back to
  their graph-free counterparts off CUDA (CUDA graphs exist only there).
- Under CUDA graphs the outputs of a replay live in memory the next replay overwrites: each
  forward starts a new step (``torch.compiler.cudagraph_mark_step_begin``) and its logits are
  copied out.

Semantics: the compiled network is the base classifier. Its logits may differ from eager's in
the last bits (fused kernels round in another order, as another batch size or layout does), so
votes, counts and certificates can differ only where the top logits nearly tie
(docs/compiled.md, docs/semantics.md §12).
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import NamedTuple, Union

import torch
from torch import nn

__all__ = [
    "Compile",
    "CompileRecord",
    "MODES",
    "check_compile",
    "compile_records",
    "compile_seconds",
    "forward",
    "pad_rows",
    "resolve_mode",
]

#: ``compile=``: False (eager), True (the device's mode) or a torch.compile mode.
Compile = Union[bool, str]
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


class CompileRecord(NamedTuple):
    """One compilation: the model's class, its entry point, the input shapes, dtype, device,
    mode, autocast dtype and the seconds of the first forward (compiling and running it)."""

    model: str
    entry: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    device: str
    mode: str
    autocast: str | None
    seconds: float


# model -> {(entry, autocast, device type, mode): compiled callable}. The compiled callable
# holds the model, so an entry lives as long as the process (as torch.compile's own caches do).
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Callable]] = weakref.WeakKeyDictionary()
_SEEN: weakref.WeakKeyDictionary[nn.Module, set[tuple]] = weakref.WeakKeyDictionary()
_RECORDS: list[CompileRecord] = []


def check_compile(value: object, name: str = "compile") -> Compile:
    """``value`` if it is a valid ``compile=`` option, else a ValueError naming it and the fix."""
    if isinstance(value, bool) or (isinstance(value, str) and value in MODES):
        return value
    raise ValueError(f"{name} must be False, True or one of {', '.join(repr(m) for m in MODES)}, got {value!r}")


def resolve_mode(option: Compile, device: torch.device) -> str | None:
    """The torch.compile mode of ``option`` on ``device`` (None: eager)."""
    if option is False:
        return None
    cuda = device.type == "cuda"
    if option is True:
        return "reduce-overhead" if cuda else "default"
    return option if cuda else _CUDA_GRAPH_MODES.get(option, option)


def pad_rows(t: torch.Tensor, rows: int, memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """``t`` [N, ...] with rows N .. rows - 1 copies of its first row (a real input, so padding
    never feeds the model values it was not built for), in ``memory_format`` (4-D inputs; the
    layout full forwards get, so that the padded one matches their graph's strides)."""
    n = t.shape[0]
    if n >= rows:
        return t
    out = torch.cat([t, t[:1].expand(rows - n, *t.shape[1:])])
    return out.contiguous(memory_format=memory_format) if memory_format is not None and t.dim() == 4 else out


def _compiled(model: nn.Module, entry: str, autocast: torch.dtype | None, device: torch.device, mode: str) -> Callable:
    per_model = _COMPILED.setdefault(model, {})
    key = (entry, autocast, device.type, mode)
    if key not in per_model:
        target = model if entry == "forward" else getattr(model, entry)
        if autocast is None:
            fn = target
        else:  # autocast inside the graph: the compiled network is the reduced-precision one
            def fn(*args: torch.Tensor, _target: Callable = target) -> torch.Tensor:
                with torch.autocast(device.type, dtype=autocast):
                    return _target(*args)
        per_model[key] = torch.compile(fn, dynamic=False, mode=mode)
    return per_model[key]


def forward(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    rows: int | None,
    option: Compile,
    autocast: torch.dtype | None = None,
    entry: str = "forward",
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """``model.<entry>(*inputs)`` through the compiled graph of the static shape with ``rows``
    rows (None: the inputs' own): inputs with fewer rows are padded (:func:`pad_rows`) and the
    padded rows' outputs dropped. Runs under the caller's grad mode (the smoothers call it in
    inference mode). The first call per model, entry, shapes, dtype, device, layout, mode and
    autocast compiles; its time goes to :func:`compile_records`."""
    device = inputs[0].device
    mode = resolve_mode(option, device)
    if mode is None:
        raise ValueError("forward() needs compile=True or a mode; the eager path calls the model itself")
    n = inputs[0].shape[0]
    rows = n if rows is None else max(rows, n)
    padded = tuple(pad_rows(t, rows, memory_format) for t in inputs)
    fn = _compiled(model, entry, autocast, device, mode)
    graphs = mode in _CUDA_GRAPH_MODES and device.type == "cuda"
    key = (entry, mode, str(autocast), str(device),
           tuple((tuple(t.shape), str(t.dtype), tuple(t.stride())) for t in padded))
    seen = _SEEN.setdefault(model, set())
    first = key not in seen
    start = time.perf_counter()
    if graphs:  # a new step: the previous replay's outputs may be overwritten from here on
        torch.compiler.cudagraph_mark_step_begin()
    out = fn(*padded)
    if graphs:
        out = out.clone()  # out of the CUDA graph's memory pool, which the next replay reuses
    if first:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seen.add(key)
        _RECORDS.append(CompileRecord(type(model).__name__, entry, tuple(tuple(t.shape) for t in padded),
                                      str(padded[0].dtype), str(device), mode,
                                      None if autocast is None else str(autocast), time.perf_counter() - start))
    return out[:n] if rows > n else out


def compile_records() -> list[CompileRecord]:
    """Every compilation of this process, in order (a copy)."""
    return list(_RECORDS)


def compile_seconds(since: int = 0) -> float:
    """Seconds spent on first (compiling) forwards, over the records from index ``since``."""
    return sum(r.seconds for r in _RECORDS[since:])
