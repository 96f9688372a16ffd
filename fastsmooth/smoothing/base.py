"""What every smoother shares: running the base model in bounded batches, and the result type
that ``fastsmooth.evaluate`` tabulates."""
from __future__ import annotations

import weakref
from typing import Literal, NamedTuple, Union

import torch
from torch import nn

from fastsmooth._validation import check_int
from fastsmooth.engine import Decider, Run, Segment, Work, run
from fastsmooth.engine.autobatch import auto_batch_size

MemoryFormat = Union[Literal["auto"], torch.memory_format]
_FORMATS = (torch.contiguous_format, torch.channels_last)
# model -> {(device type, input shape, dtype): its auto memory format}, probed once.
_probed: weakref.WeakKeyDictionary[nn.Module, dict[tuple, torch.memory_format]] = weakref.WeakKeyDictionary()


def auto_memory_format(
    model: object, device: torch.device, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.memory_format:
    """The layout ``memory_format="auto"`` feeds ``model`` its (N, *shape) inputs in.

    Channels-last on the CPU for a model with 2-D convolutions: oneDNN convolves channels-last
    batches 9-21% faster (ResNet-18 / WRN / ResNet-110, measured on the project's 2-core CPU;
    see README). The first such call runs the model (in its current train / eval mode) once
    on a one-image channels-last batch of zeros: a model whose forward rejects that layout
    (``.view`` of a channels-last activation) keeps NCHW. Elsewhere NCHW (GPUs were not
    measured; pass ``torch.channels_last`` to try).
    """
    if device.type != "cpu" or not isinstance(model, nn.Module):
        return torch.contiguous_format
    key = (device.type, tuple(shape), dtype)
    known = _probed.setdefault(model, {})
    if key not in known:  # once per model and input shape: this walks the model
        known[key] = torch.contiguous_format
        if any(isinstance(m, nn.Conv2d) for m in model.modules()):
            probe = torch.zeros((1, *shape), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
            try:
                with torch.inference_mode():
                    model(probe)
                known[key] = torch.channels_last
            except RuntimeError:
                pass
    return known[key]


class Certified(NamedTuple):
    """Per-image outcome of a certification.

    prediction: int64 [B], -1 where the smoother abstains.
    certificate: float64 [B], the largest certified patch size (patch smoothers) or radius
    (l0 / l1 / l2 smoothers); an image is certified at level t when ``certificate >= t`` and
    it does not abstain. Negative values mean nothing is certified.
    """

    prediction: torch.Tensor
    certificate: torch.Tensor


class Decided(NamedTuple):
    """Per-image answers at given levels (``decide_batch``).

    prediction: int64 [B] (-1: abstain, or not decided when the prediction was not asked for).
    certified: bool [B, L], certified at each level (patch size or radius; prediction != -1).
    forwards: int64 [B], base-model evaluations the image used (selection samples included).
    """

    prediction: torch.Tensor
    certified: torch.Tensor
    forwards: torch.Tensor


class BaseSmoother:
    """Holds the base model and runs it in inference mode over chunks of at most ``batch_size``.

    ``batch_size``: ``"auto"`` (the default of every smoother but the smoothed ViTs): the fastest
    per row among a few sizes up to 1024 rows and up to the rows the call runs, timed on the
    first call per model and input shape (``fastsmooth.engine.autobatch``); or a number: every
    forward holds at most that many rows (it bounds the memory of a forward's inputs and
    activations).

    ``autocast`` (None, torch.bfloat16 or torch.float16) runs the base model under
    ``torch.autocast``: that changes the base classifier, so certificates are then those of
    the reduced-precision model.

    ``memory_format`` is the layout of the batches the base model gets: ``"auto"`` (see
    :func:`auto_memory_format`: channels-last for convolutional models on the CPU),
    ``torch.contiguous_format`` (NCHW) or ``torch.channels_last``. The layout changes only
    the float rounding order inside the base model's convolutions, as a batch size does.
    """

    certificate_name = "certificate"  # "patch_size" or "radius" in subclasses
    doubles_channels = False  # the ablation smoothers feed the model [x, 1 - x]: 2C channels

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
    ) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or callable, got {type(model).__name__}")
        num_classes = check_int(num_classes, "num_classes", 2)
        if isinstance(batch_size, str):
            if batch_size != "auto":
                raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        else:
            batch_size = check_int(batch_size, "batch_size", 1)
        if autocast not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}")
        if memory_format != "auto" and memory_format not in _FORMATS:
            raise ValueError(
                f"memory_format must be 'auto', torch.contiguous_format or torch.channels_last, got {memory_format!r}"
            )
        self.model = model
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.backend = backend
        self.autocast = autocast
        self.memory_format = memory_format

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a parameterless callable)."""
        if isinstance(self.model, nn.Module):
            for p in self.model.parameters():
                if p.device.type == "meta":
                    raise ValueError("the base model's parameters are on the meta device (they hold no values): "
                                     "materialize and load its weights (model.to_empty(device=...), then "
                                     "load_state_dict) before certifying")
                return p.device
        return torch.device("cpu")

    def _check_input_dtype(self, inputs: torch.Tensor) -> None:
        """Without autocast, the model's batches must have its parameters' dtype (else torch
        fails inside the first layer with a message about biases). Called when a forward
        fails, not before every forward: walking the parameters costs a few microseconds, a
        measurable share of a small model's forward at batch 1."""
        if self.autocast is not None or not isinstance(self.model, nn.Module):
            return
        p = next(self.model.parameters(), None)
        if p is not None and p.is_floating_point() and p.dtype != inputs.dtype:
            raise TypeError(f"the images are {inputs.dtype} but the base model's parameters are {p.dtype}: convert "
                            f"one of them (x.to({p.dtype}) or model.to({inputs.dtype}))")

    def _check_input_channels(self, inputs: torch.Tensor) -> None:
        """Names the channels the model's first layer takes and the ones its inputs have (else
        torch fails inside that layer with a matmul or weight-shape message). Called when a
        forward fails."""
        if not isinstance(self.model, nn.Module) or inputs.dim() != 4:
            return
        first = next((m for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        given = inputs.shape[1]
        if isinstance(first, nn.Conv2d) and first.in_channels != given:
            expected = f"{first.in_channels} input channels"
        elif isinstance(first, nn.Linear) and first.in_features != inputs[0].numel():
            if first.in_features % (inputs.shape[2] * inputs.shape[3]):
                return  # not a flattened image of this size: nothing sure to say
            expected = f"{first.in_features // (inputs.shape[2] * inputs.shape[3])} input channels"
        else:
            return
        encoded = " (ablation gives it 2C channels: [x, 1 - x] of C-channel images)" if self.doubles_channels else ""
        raise ValueError(f"the base model takes {expected} but gets {given}{encoded}: certify images with the "
                         "channels it was trained on, or build it for these")

    def _eval(self) -> None:
        # eval() walks every submodule: once per certification, not once per chunk.
        if isinstance(self.model, nn.Module) and self.model.training:
            self.model.eval()

    def input_format(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.memory_format:
        """The memory format the base model gets its (N, *shape) batches in."""
        if isinstance(self.memory_format, str):
            self._eval()
            return auto_memory_format(self.model, device, shape, dtype)
        return self.memory_format

    def logits(self, inputs: torch.Tensor, memory_format: torch.memory_format | None = None) -> torch.Tensor:
        """The base model's logits [N, num_classes] for a batch that fits in one forward pass,
        given to the model in ``memory_format`` (default: :meth:`input_format`'s)."""
        self._eval()
        if inputs.dim() == 4:  # a no-op for batches already written in that layout
            if memory_format is None:
                memory_format = self.input_format(inputs.shape[1:], inputs.dtype, inputs.device)
            inputs = inputs.contiguous(memory_format=memory_format)
        try:
            with torch.inference_mode():
                if self.autocast is None:
                    out = self.model(inputs)
                else:
                    with torch.autocast(inputs.device.type, dtype=self.autocast):
                        out = self.model(inputs)
        except RuntimeError:
            self._check_input_dtype(inputs)  # names a dtype mismatch, the usual cause, if it is one
            self._check_input_channels(inputs)  # or a channel count the model was not built for
            raise
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the base model returned a {type(out).__name__}, expected one logits tensor "
                            f"[N, num_classes]; wrap it so that it returns the logits (e.g. lambda x: model(x)[0])")
        if out.dim() != 2 or out.shape[0] != inputs.shape[0] or out.shape[1] != self.num_classes:
            raise ValueError(
                f"the base model returned shape {tuple(out.shape)} for {inputs.shape[0]} inputs, expected "
                f"(N={inputs.shape[0]}, num_classes={self.num_classes})"
            )
        return out.float()

    def forward_batch(self, work: Work, image: int = 0, pending: int | None = None) -> int:
        """The forward batch size: ``batch_size``, or for ``batch_size="auto"`` the fastest per row
        among sizes up to ``pending`` (the rows the call will run, at most 1024), timed on copies
        of unit 0 of ``image`` once per model and input (``fastsmooth.engine.autobatch``)."""
        if self.batch_size != "auto":
            return self.batch_size
        row = work.build([Segment(0, image, 0, 1)])
        if not isinstance(row, torch.Tensor):
            raise ValueError("batch_size='auto' needs tensor model inputs; pass an integer batch_size")
        fmt = self.input_format(tuple(row.shape[1:]), row.dtype, row.device) if row.dim() == 4 else None
        key = (tuple(row.shape[1:]), row.dtype, str(row.device), str(fmt), self.autocast)
        return auto_batch_size(self.model, key, row, lambda batch: self.logits(batch, fmt), pending)

    def run_work(
        self, work: Work, decider: Decider, slots: list, device: torch.device, forwards_per_write: int = 1,
        batch_size: int | None = None,
    ) -> Run:
        """Run ``work`` through the engine (``fastsmooth.engine.run``) in forwards of <= batch_size
        (default :meth:`forward_batch`). ``last_units`` keeps the units (forward rows) each slot
        used, int64 [slots]."""
        if batch_size is None:
            batch_size = self.forward_batch(work, slots[0][1], decider.rows_hint(len(slots))) if slots else 1
        result = run(work, decider, slots, self.num_classes, device, batch_size, forwards_per_write)
        self._last_units = result.units
        return result

    @property
    def last_units(self) -> torch.Tensor | None:
        """The units (forward rows) each image used in the last engine run, int64 [images]; None
        before any run. State, not a hyperparameter: kept out of the run's fingerprint."""
        return getattr(self, "_last_units", None)
