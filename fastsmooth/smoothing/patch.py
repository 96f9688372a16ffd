"""Patch smoothers: column / row / block / multi-band / multi-block and randomized band smoothing.

Each smoother runs the base model on every structured ablation of an image (semantics.md §1),
counts the votes and certifies the prediction against m x m adversarial patches.

How the work is batched (the engine should cost little beside the base model's forwards):
ablated images are written by the fused ablation kernel straight into one reused buffer;
every forward is filled with ``batch_size`` ablations of as many images as needed (the
engine's batch former, ``fastsmooth.engine``). The buffer holds one forward's batch, or several when
they are small (up to ``_WRITE_BYTES``: one kernel call for many forwards of a few images).
Votes are counted on the model's device and read back once per call (or at the looks of an
early-exit decision).
"""
from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real, check_stats
from fastsmooth.certificates.patch import (
    band_delta,
    band_starts,
    certify_counts,
    largest_certified_patch,
    multi_band_delta,
    multi_block_delta,
    patch_deltas,
    randomized_band_patch_size,
    strided_band_delta,
    strided_block_delta,
)
from fastsmooth.engine import Decider, Everything, Margins, Segment, Sequential, runs, spread
from fastsmooth.engine.compiled import Compile
from fastsmooth.ops.ablation import ablation_kernel
from fastsmooth.ops.ablation.masks import KeepMasks, cached_masks, strided_corners
from fastsmooth.smoothing.base import BaseSmoother, Certified, Decided, MemoryFormat
from fastsmooth.smoothing.sequential import decide_sequentially
from fastsmooth.stats import clopper_pearson_lower

Stats = Sequence[float] | torch.Tensor | None
# masks_for(first_image, end_image, first_ablation, end_ablation) -> the masks of that block
MaskSource = Callable[[int, int, int, int], KeepMasks]
_WRITE_BYTES = 1 << 20  # ablated images one kernel call writes, when forwards are smaller

__all__ = [
    "PatchSmoother",
    "ColumnSmoothing",
    "RowSmoothing",
    "BlockSmoothing",
    "MultiBandSmoothing",
    "MultiBlockSmoothing",
    "RandomizedBandSmoothing",
]


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    return check_real(threshold, "threshold (None for top-1 votes)", 0, 1, low_open=True)


def _check_positive(value: object, name: str) -> int:
    return check_int(value, name, 1)


class _AblationSmoother(BaseSmoother):
    """Shared engine: votes of the base model over a set of ablations of each image."""

    certificate_name = "patch_size"
    doubles_channels = True

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        threshold: float | None,
        mean: Stats,
        std: Stats,
        batch_size: int | str,
        backend: str,
        autocast: torch.dtype | None,
        memory_format: MemoryFormat,
        compile: Compile = False,
    ) -> None:
        super().__init__(
            model, num_classes, batch_size=batch_size, backend=backend, autocast=autocast, memory_format=memory_format,
            compile=compile,
        )
        self.size = _check_positive(size, "size")
        self.threshold = _check_threshold(threshold)
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        self.mean, self.std = mean, std
        self._buffer: torch.Tensor | None = None

    # -- input ---------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """x, checked against the input contract, as a contiguous (B, C, H, W) batch on the model's device."""
        check_image_batch(x)
        return x.to(self.device).contiguous()

    # -- the engine ----------------------------------------------------------------------
    def _out(self, n: int, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        """An (n, 2C, H, W) view of one buffer reused across chunks and calls, laid out in the
        memory format the base model gets (the fused kernel writes either layout)."""
        _, C, H, W = x.shape
        numel = n * 2 * C * H * W
        buf = self._buffer
        if buf is None or buf.numel() < numel or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._buffer = torch.empty(numel, dtype=x.dtype, device=x.device)
        if memory_format == torch.channels_last:
            return buf[:numel].view(n, H, W, 2 * C).permute(0, 3, 1, 2)
        return buf[:numel].view(n, 2 * C, H, W)

    def _votes(self, logits: torch.Tensor) -> torch.Tensor:
        """Votes [N, K] (int64, 0 or 1) of N ablations' logits."""
        if self.threshold is not None:
            # softmax >= theta in float32, as the authors' scripts: 0, 1 or several votes per ablation
            return (logits.softmax(dim=1) >= self.threshold).long()
        # argmax returns the first (smallest) index on ties
        return torch.nn.functional.one_hot(logits.argmax(dim=1), self.num_classes)

    def _accumulate(
        self, x: torch.Tensor, total: int, masks_for: MaskSource, decider: Decider | None = None
    ) -> torch.Tensor:
        """Counts [B, K] on x's device over ``total`` ablations per image (all of them, or until
        ``decider`` retires the image), in forwards of <= batch_size through the engine.

        Small forwards are written several at a time: one kernel call fills up to
        ``_WRITE_BYTES`` of ablated images, then the model gets views of it, ``batch_size`` at
        a time (at batch sizes of a few images, the per-call cost of the kernel and of slicing
        the masks is otherwise a measurable share of a forward). Logits are counted a few
        megabytes at a time by the engine's tally, for the same reason.
        """
        B = x.shape[0]
        work = _AblationWork(self, x, masks_for)
        decider = Everything(total) if decider is None else decider
        slots = [(b, b) for b in range(B)]
        # An empty batch runs no forward (nothing to time a batch size on), but still goes through
        # the engine, so that counts, units and the decider's answers are empty alike.
        batch = self.forward_batch(work, 0, decider.rows_hint(B)) if B else 1
        ablated_bytes = 2 * math.prod(x.shape[1:]) * x.element_size()  # (x[0] fails on an empty batch)
        forwards_per_write = max(1, _WRITE_BYTES // (batch * ablated_bytes))
        return self.run_work(work, decider, slots, x.device, forwards_per_write, batch).counts


class _AblationWork:
    """Units = ablations (``masks_for`` says which); the fused kernel writes each run of
    segments into one reused buffer, in the memory format the base model gets."""

    granule = 1

    def __init__(self, smoother: _AblationSmoother, x: torch.Tensor, masks_for: MaskSource) -> None:
        self.smoother, self.x, self.masks_for = smoother, x, masks_for
        self.mean, self.std = check_stats(smoother.mean, smoother.std, x)  # once per call, not per chunk
        self.kernel = ablation_kernel(smoother.backend, x.device)
        self.memory_format = smoother.input_format((2 * x.shape[1], *x.shape[2:]), x.dtype, x.device)
        self.votes = smoother._votes

    def build(self, segments: Sequence[Segment]) -> torch.Tensor:
        out = self.smoother._out(sum(s.rows for s in segments), self.x, self.memory_format)
        for lo, hi, first, end, row in runs(segments):
            masks = self.masks_for(lo, hi, first, end)
            self.kernel(self.x[lo:hi], masks, self.mean, self.std, out=out[row : row + (hi - lo) * (end - first)])
        return out

    def forward(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.smoother.logits(inputs[start:stop], self.memory_format)


def _slice(masks: KeepMasks, first: int, end: int) -> KeepMasks:
    """Ablations first .. end - 1 of shared (M = 1) masks: contiguous views, no copy."""
    if first == 0 and end == masks.count:
        return masks
    return masks.select(slice(first, end))


class PatchSmoother(_AblationSmoother, abc.ABC):
    """A deterministic patch smoother: every ablation of a fixed set votes once (semantics.md §1).

    Subclasses say which ablations (``masks``) and how many of them an m x m patch can
    intersect (``delta``). Results are returned on the CPU.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)

    @abc.abstractmethod
    def masks(self, height: int, width: int, device: torch.device) -> KeepMasks:
        """Every ablation of a (height x width) image, in the spec's order."""

    @abc.abstractmethod
    def delta(self, patch_size: int | torch.Tensor, height: int, width: int) -> int | torch.Tensor:
        """The largest number of ablations an m x m patch intersects."""

    def _shape(self, x: torch.Tensor) -> tuple[int, int]:
        """(H, W) of the images the ablations are defined on (after any transpose)."""
        return x.shape[2], x.shape[3]

    def _count(self, x: torch.Tensor) -> torch.Tensor:
        """Counts [B, K] on the CPU of an already prepared batch."""
        H, W = self._shape(x)
        masks = self.masks(H, W, x.device)
        if x.shape[0] == 0:  # an empty batch: empty counts, as every smoother gives
            return torch.zeros(0, self.num_classes, dtype=torch.int64)
        return self._accumulate(x, masks.count, lambda lo, hi, first, end: _slice(masks, first, end)).cpu()

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """Votes per class, int64 [B, num_classes] on the CPU (every ablation)."""
        return self._count(self._prepare(x))

    def _decide(self, x: torch.Tensor, votes: list[int], predict: bool) -> Decided:
        """Exact early exit at margins ``votes`` (2 Delta per level), ablations in spread order."""
        H, W = self._shape(x)
        masks = self.masks(H, W, x.device)
        key = (H, W, x.device, masks.count, getattr(self, "stride", 1))  # the stride: another set of ablations
        if getattr(self, "_spread_key", None) != key:  # the spread-order copy, once per shape
            order = spread(masks.count).to(masks.rows.device)
            self._spread = masks.select(order)
            self._spread_key = key
        spread_masks = self._spread
        decider = Margins(masks.count, votes, x.shape[0], predict)
        self._accumulate(x, masks.count, lambda lo, hi, first, end: _slice(spread_masks, first, end), decider)
        return Decided(decider.prediction, decider.certified, self.last_units.clone())

    def decide_batch(self, x: torch.Tensor, levels: Sequence[int], predict: bool = True) -> Decided:
        """Certified or not against each patch size of ``levels``, with the fewest ablations
        that decide it (``fastsmooth.engine.Margins``: the answers of the full enumeration, bit
        for bit). Ablations run in the spread order of ``fastsmooth.engine.spread``;
        ``predict=False`` stops once the levels are decided (prediction -1 where it was not)."""
        x = self._prepare(x)
        H, W = self._shape(x)
        total = self.masks(H, W, x.device).count
        return self._decide(x, [self._level_votes(t, H, W, total) for t in levels], predict)

    def _level_votes(self, level: float, H: int, W: int, total: int) -> int:
        """The margin (in votes) of "largest certified m >= level": 2 Delta(ceil(level)); 0 (the
        prediction) for level <= 0; out of reach above min(H, W)."""
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level):
            raise TypeError(f"levels must hold finite numbers (patch sizes), got {level!r}")
        if level <= 0:
            return 0
        m = math.ceil(level)
        return 2 * int(self.delta(m, H, W)) if m <= min(H, W) else 2 * total + 1

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Argmax of the counts (smallest index on ties), int64 [B]. No abstain.

        Stops each image as soon as no remaining ablation can change its argmax (exact)."""
        return self._decide(self._prepare(x), [], True).prediction

    def certify(self, x: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction int64 [B], certified bool [B]) against any ``patch_size`` x ``patch_size`` patch.

        Exact early exit: each image stops once its answer is decided (:meth:`decide_batch`)."""
        x = self._prepare(x)
        H, W = self._shape(x)
        patch_size = check_int(patch_size, "patch_size", 1, min(H, W))
        decided = self._decide(x, [2 * int(self.delta(patch_size, H, W))], True)
        return decided.prediction, decided.certified[:, 0]

    def certified_patch_size(self, x: torch.Tensor) -> torch.Tensor:
        """The largest certified patch size m (0 when none), int64 [B]."""
        return self.evaluate_batch(x).certificate.to(torch.int64)

    def evaluate_batch(self, x: torch.Tensor) -> Certified:
        """Prediction and largest certified m (float64), scanning m = 1 .. min(H, W)."""
        x = self._prepare(x)
        H, W = self._shape(x)
        deltas = patch_deltas(lambda m: self.delta(m, H, W), min(H, W))
        prediction, size = largest_certified_patch(self._count(x), deltas)
        return Certified(prediction, size.to(torch.float64))


class ColumnSmoothing(PatchSmoother):
    """Column smoothing: W bands of ``size`` columns, with wraparound; Delta = m + s - 1.

    ``stride`` s > 1 keeps only the bands starting at columns 0, s, 2s, .. (ceil(W / s)
    forwards per image instead of W; Salman et al. 2022); Delta is then the largest number
    of those bands an m-wide patch meets (``certificates.bands_touched``: ceil((m + size - 1) / s)
    when s divides W, exact otherwise). Models trained with ordinary band ablation are
    certified with any stride, as the authors do.

    ``threshold`` theta: an ablation votes for every class with softmax >= theta (the authors
    use 0.2 or 0.3); ``None``: one vote for the argmax class. ``mean`` / ``std`` normalize x
    per channel before the ``[x, 1 - x]`` encoding. ``batch_size`` bounds the ablated images
    per forward. ``autocast`` (torch.bfloat16 / torch.float16) runs the base model in reduced
    precision: that changes the base classifier, and so the certificates. ``memory_format``:
    the layout the fused kernel writes the ablated batch in (see :class:`BaseSmoother`).
    """

    axis = "column"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        stride: int = 1,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)
        self.stride = _check_positive(stride, "stride")

    def _length(self, height: int, width: int) -> int:
        """The length of the bands' axis, with the size and the stride checked against it."""
        length = width if self.axis == "column" else height
        check_int(self.size, "size", 1, length)
        if self.stride > length:
            raise ValueError(f"stride={self.stride} is larger than the {length} {self.axis}s of a {height} x {width} "
                             f"image; use a stride in [1, {length}]")
        return length

    def positions(self, height: int, width: int) -> torch.Tensor:
        """The band starts this smoother retains: 0, s, 2s, .. (every start at stride 1), int64."""
        return band_starts(self._length(height, width), self.stride)

    def masks(self, height: int, width: int, device: torch.device) -> KeepMasks:
        self._length(height, width)
        return cached_masks("band", height, width, self.size, 0, self.axis, device, self.stride)

    def delta(self, patch_size: int | torch.Tensor, height: int, width: int) -> int | torch.Tensor:
        return strided_band_delta(patch_size, self.size, self.stride, self._length(height, width))


class RowSmoothing(ColumnSmoothing):
    """Row smoothing: H bands of ``size`` rows (wraparound); Delta = m + s - 1. ``stride``: as
    :class:`ColumnSmoothing`, along the rows.

    ``transposed=True`` certifies models trained on transposed images (the authors' MNIST row
    models): each image is transposed, then column bands are used, which is what those
    models saw in training.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        transposed: bool = False,
        stride: int = 1,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         stride, compile=compile)
        if not isinstance(transposed, bool):
            raise TypeError(f"transposed must be a bool, got {transposed!r}")
        self.transposed = transposed
        self.axis = "column" if transposed else "row"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = super()._prepare(x)
        return x.transpose(2, 3).contiguous() if self.transposed else x


class BlockSmoothing(PatchSmoother):
    """Block smoothing: H * W blocks of ``size`` x ``size`` (wraparound, i-major); Delta = (m + s - 1)^2.

    ``stride``: an integer, or (rows, columns): only the corners (i, j) with i in 0, s_r, 2 s_r, ..
    and j in 0, s_c, 2 s_c, .. are kept (i-major); Delta is the product of the two axes'
    ``certificates.bands_touched``. Stored as given (an integer or a tuple).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        stride: int | tuple[int, int] = 1,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)
        if isinstance(stride, (tuple, list)):
            if len(stride) != 2:
                raise ValueError(f"stride must be an integer or a pair (rows, columns), got {stride!r}; "
                                 "e.g. stride=10 or stride=(10, 5)")
            stride = (_check_positive(stride[0], "stride (rows)"), _check_positive(stride[1], "stride (columns)"))
        else:
            stride = _check_positive(stride, "stride")
        self.stride = stride

    def _pair(self, height: int, width: int) -> tuple[int, int]:
        """(row stride, column stride), checked against the image, with the size."""
        check_int(self.size, "size", 1, min(height, width))
        pair = self.stride if isinstance(self.stride, tuple) else (self.stride, self.stride)
        for value, length, what in ((pair[0], height, "rows"), (pair[1], width, "columns")):
            if value > length:
                raise ValueError(f"stride={self.stride} is larger than the {length} {what} of a {height} x {width} "
                                 f"image; use a stride in [1, {min(height, width)}] (or a pair (rows, columns))")
        return pair

    def positions(self, height: int, width: int) -> torch.Tensor:
        """The block corners i * W + j this smoother retains, i-major (all H * W at stride 1), int64."""
        return strided_corners(height, width, self._pair(height, width))

    def masks(self, height: int, width: int, device: torch.device) -> KeepMasks:
        pair = self._pair(height, width)
        return cached_masks("block", height, width, self.size, 0, "column", device, pair if pair != (1, 1) else 1)

    def delta(self, patch_size: int | torch.Tensor, height: int, width: int) -> int | torch.Tensor:
        return strided_block_delta(patch_size, self.size, self._pair(height, width), height, width)


class MultiBandSmoothing(PatchSmoother):
    """Multi-band smoothing: every choice of ``keep`` of the W // s aligned bands (no wraparound).

    Delta = C(B, keep) - C(B - a, keep) with a = ceil((m - 1) / s) + 1 and B = W // s.
    ``axis="row"`` uses rows instead.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        keep: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        axis: str = "column",
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)
        if axis not in ("column", "row"):
            raise ValueError(f"axis must be 'column' or 'row', got {axis!r}")
        self.keep = _check_positive(keep, "keep")
        self.axis = axis

    def _bands(self, height: int, width: int) -> int:
        length = width if self.axis == "column" else height
        check_int(self.size, "size", 1, length)
        n = length // self.size
        check_int(self.keep, "keep", 1, n)
        return n

    def masks(self, height: int, width: int, device: torch.device) -> KeepMasks:
        self._bands(height, width)
        return cached_masks("multi_band", height, width, self.size, self.keep, self.axis, device)

    def delta(self, patch_size: int | torch.Tensor, height: int, width: int) -> int | torch.Tensor:
        return multi_band_delta(patch_size, self.size, self._bands(height, width), self.keep)


class MultiBlockSmoothing(PatchSmoother):
    """Multi-block smoothing: every choice of ``keep`` of the aligned ``size`` x ``size`` tiles.

    Tiles are numbered row-major, B = (H // s) * (W // s); Delta = C(B, keep) - C(B - a, keep)
    with a = (ceil((m - 1) / s) + 1)^2.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        keep: int,
        threshold: float | None = None,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, threshold, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)
        self.keep = _check_positive(keep, "keep")

    def _tiles(self, height: int, width: int) -> int:
        check_int(self.size, "size", 1, min(height, width))
        n = (height // self.size) * (width // self.size)
        check_int(self.keep, "keep", 1, n)
        return n

    def masks(self, height: int, width: int, device: torch.device) -> KeepMasks:
        self._tiles(height, width)
        return cached_masks("multi_block", height, width, self.size, self.keep, "column", device)

    def delta(self, patch_size: int | torch.Tensor, height: int, width: int) -> int | torch.Tensor:
        return multi_block_delta(patch_size, self.size, self._tiles(height, width), self.keep)


class RandomizedBandSmoothing(_AblationSmoother):
    """Randomized band smoothing (the baseline of the paper's Tables 6 and 7).

    Each sample keeps one band of ``size`` columns (rows for ``axis="row"``) at a uniformly
    random position, with wraparound; top-1 votes. ``certify``: n0 samples choose the class
    c, n further samples give n_c and the one-sided Clopper-Pearson lower bound p_lower at
    level alpha; certified against m x m patches iff p_lower > 1/2 + (m + s - 1) / W.
    Positions are drawn on the CPU from ``generator`` (reproducible on any device), each
    image its own. ``n0``, ``n`` and ``alpha`` given here are the defaults of the methods.
    """

    randomized = True  # fastsmooth.evaluate seeds it per image (evaluate_batch's generator)

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        size: int,
        mean: Stats = None,
        std: Stats = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        axis: str = "column",
        n0: int = 1000,
        n: int = 10000,
        alpha: float = 0.05,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, size, None, mean, std, batch_size, backend, autocast, memory_format,
                         compile=compile)
        if axis not in ("column", "row"):
            raise ValueError(f"axis must be 'column' or 'row', got {axis!r}")
        self.axis = axis
        self.n0, self.n = _check_positive(n0, "n0"), _check_positive(n, "n")
        self.alpha = self._alpha(alpha)

    @staticmethod
    def _alpha(alpha: float) -> float:
        return check_real(alpha, "alpha", 0, 0.5, low_open=True, high_open=True)

    def _length(self, x: torch.Tensor) -> int:
        length = x.shape[3] if self.axis == "column" else x.shape[2]
        check_int(self.size, "size", 1, length)
        return length

    def _sampled_counts(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Top-1 counts [B, K] on x's device over n random bands per image."""
        return self._accumulate(x, n, self._position_masks(x, n, generator))

    def _position_masks(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> MaskSource:
        """Masks of n random band positions per image, drawn now on the CPU (unit j of image b is
        position [b, j], whatever forward it lands in)."""
        length = self._length(x)
        H, W = x.shape[2], x.shape[3]
        every = cached_masks("band", H, W, self.size, 0, self.axis, x.device)
        positions = torch.randint(length, (x.shape[0], n), generator=generator).to(x.device)

        def masks_for(lo: int, hi: int, first: int, end: int) -> KeepMasks:
            chosen = positions[lo:hi, first:end]  # per-image masks: M = number of images
            return KeepMasks(every.rows[0][chosen], every.cols[0][chosen])

        return masks_for

    def counts(self, x: torch.Tensor, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Top-1 votes of ``n`` (default ``self.n``) random bands per image, int64 [B, K] on the CPU."""
        n = self.n if n is None else _check_positive(n, "n")
        return self._sampled_counts(self._prepare(x), n, generator).cpu()

    def predict(self, x: torch.Tensor, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Argmax (smallest index on ties) of ``counts(x, n)``, int64 [B]."""
        return certify_counts(self.counts(x, n, generator), 0)[0]

    def _lower_bound(
        self, x: torch.Tensor, n0: int | None, n: int | None, alpha: float | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction from n0 samples, its Clopper-Pearson lower bound p_lower from n samples)."""
        n0 = self.n0 if n0 is None else _check_positive(n0, "n0")
        n = self.n if n is None else _check_positive(n, "n")
        alpha = self.alpha if alpha is None else self._alpha(alpha)
        selection = self._sampled_counts(x, n0, generator)
        prediction = certify_counts(selection.cpu(), 0)[0]
        estimation = self._sampled_counts(x, n, generator).cpu()
        top = estimation.gather(1, prediction[:, None])[:, 0]
        return prediction, torch.from_numpy(clopper_pearson_lower(top.numpy(), n, alpha)).reshape(-1)

    def certify(
        self,
        x: torch.Tensor,
        patch_size: int,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction int64 [B], certified bool [B]) against ``patch_size`` x ``patch_size`` patches."""
        x = self._prepare(x)
        patch_size = check_int(patch_size, "patch_size", 1, min(x.shape[2], x.shape[3]))
        prediction, p_lower = self._lower_bound(x, n0, n, alpha, generator)
        return prediction, p_lower > 0.5 + band_delta(patch_size, self.size) / self._length(x)

    def decide_batch(
        self,
        x: torch.Tensor,
        levels: Sequence[int],
        n0: int | None = None,
        n_max: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Decided:
        """Certified or not against each patch size of ``levels``, each image stopping as soon as
        it is decided (``fastsmooth.smoothing.sequential``). Positions are drawn as in
        :meth:`counts`: up to n0 selection bands (adaptive selection), then up to ``n_max`` (default n)
        estimation bands."""
        x = self._prepare(x)
        n0 = self.n0 if n0 is None else _check_positive(n0, "n0")
        n_max = self.n if n_max is None else _check_positive(n_max, "n_max")
        alpha = self.alpha if alpha is None else self._alpha(alpha)
        length, largest = self._length(x), min(x.shape[2], x.shape[3])
        sizes = [float(m) for m in levels]
        masks_for = self._position_masks(x, n0 + n_max, generator)

        def execute(decider: Sequential) -> torch.Tensor:
            self._accumulate(x, n0 + n_max, masks_for, decider)
            return self.last_units

        def patch(p: np.ndarray) -> np.ndarray:
            return randomized_band_patch_size(p, self.size, length, largest).numpy().astype(np.float64)

        return decide_sequentially(execute, x.shape[0], sizes, n0, n_max, alpha, patch, abstains=False)

    def certified_patch_size(
        self,
        x: torch.Tensor,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The largest certified patch size m (0 when none), int64 [B]."""
        return self.evaluate_batch(x, n0, n, alpha, generator).certificate.to(torch.int64)

    def evaluate_batch(
        self,
        x: torch.Tensor,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Certified:
        """Prediction and largest certified m (float64), scanning m = 1 .. min(H, W)."""
        x = self._prepare(x)
        prediction, p_lower = self._lower_bound(x, n0, n, alpha, generator)
        size = randomized_band_patch_size(p_lower, self.size, self._length(x), min(x.shape[2], x.shape[3]))
        return Certified(prediction, size.to(torch.float64))

