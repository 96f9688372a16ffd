"""PatchCleanser (Xiang et al., USENIX Security 2022): certified patch robustness by double masking.

The base model sees the image with one or two masks of an R-covering mask set
(``fastsmooth.ops.mask_pairs.mask_set``) set to ``fill`` (0, in the model's input space, as
the authors). An image is certified against every patch of at most ``patch_size`` iff every
one- and two-mask prediction equals its label; the prediction is the paper's double-masking
inference (semantics.md §15).

How the work runs: on the engine (``fastsmooth.engine``). An image's units are mask pairs,
appended look by look by the :class:`~fastsmooth.engine.double_masking.DoubleMasking` decider
(the second round depends on the first); the fused op ``mask_pairs`` writes the masked inputs
of many pairs of many images into one reused buffer from the mask rectangles, and every
forward is filled with pairs of as many images as needed. An image stops at the first look
that sees a disagreement (exact: see the decider), and ``last_units`` reports the forwards
each image used.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fastsmooth._validation import accumulation_dtype, check_image_batch, check_int, check_real, check_stats
from fastsmooth.engine.compiled import Compile
from fastsmooth.engine.double_masking import DoubleMasking, PairLog
from fastsmooth.engine.items import Segment
from fastsmooth.engine.works import top1_votes
from fastsmooth.engine.autobatch import auto_batch_size
from fastsmooth.models.vit import TokenViT
from fastsmooth.ops.mask_pairs import MaskSet, mask_pairs_kernel, mask_set
from fastsmooth.ops.mask_pairs.geometry import covered_tokens, misaligned
from fastsmooth.ops.mask_pairs.repeats import blank_pixels, input_keys
from fastsmooth.smoothing.base import BaseSmoother, Certified, Decided, MemoryFormat
from fastsmooth.smoothing.vit import _ViTTokens

Stats = Sequence[float] | torch.Tensor | None

__all__ = ["PatchCleanser"]


def _size_pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return check_int(value[0], f"{name}[0]", 1), check_int(value[1], f"{name}[1]", 1)
    v = check_int(value, name, 1)
    return v, v


class _PairWork:
    """Units = mask pairs from the log; the fused op writes each forward's rows in one call."""

    granule = 1

    def __init__(self, smoother: PatchCleanser, x: torch.Tensor, masks: MaskSet, log: PairLog) -> None:
        self.smoother, self.x, self.log = smoother, x, log
        self.rects = masks.rects.numpy()
        self.mean, self.std = check_stats(smoother.mean, smoother.std, x)
        self.kernel = mask_pairs_kernel(smoother.backend, x.device)
        self.memory_format = smoother.input_format(tuple(x.shape[1:]), x.dtype, x.device)
        self.votes = top1_votes(smoother.num_classes)
        self.flat = torch.zeros(0, dtype=torch.int64, device=x.device)

    def input_keys(self, masks: MaskSet) -> np.ndarray:
        """int64 [B, M, M]: pairs of an image with equal keys write the identical input
        (``repeats.input_keys``), judged on the pixels as this Work's kernel writes them."""
        B, C, H, W = self.x.shape
        device = self.x.device
        rects = torch.zeros(B + 1, 2, 4, dtype=torch.int64)
        rects[B, :, 2:] = torch.tensor([H, W])  # row B: image 0 wholly masked, for the written fill
        images = torch.cat([torch.arange(B), torch.zeros(1, dtype=torch.int64)]).to(device)
        written = torch.empty(B + 1, C, H, W, dtype=self.x.dtype, device=device)
        self.kernel(self.x, images, rects.to(device), self.smoother.fill, self.mean, self.std, out=written)
        return input_keys(blank_pixels(written[:B], written[B, 0, 0, 0]), masks)

    def build(self, segments: Sequence[Segment]) -> torch.Tensor:
        images, flat, pairs = self.log.rows_of(segments)
        device = self.x.device
        self.flat = torch.from_numpy(flat).to(device)
        rects = torch.from_numpy(np.ascontiguousarray(self.rects[pairs])).to(device)
        out = self.smoother._out(len(images), self.x, self.memory_format)
        return self.kernel(self.x, torch.from_numpy(images).to(device), rects, self.smoother.fill, self.mean,
                           self.std, out=out)

    def forward(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        logits = self.smoother.logits(inputs[start:stop], self.memory_format)
        self.log.record(self.flat[start:stop], logits)
        return logits


def image_tokens(x: torch.Tensor, patch: tuple[int, int], mean: torch.Tensor | None,
                 std: torch.Tensor | None) -> torch.Tensor:
    """Every token's normalized pixels [B, G, C * p_h * p_w] (row-major grid, rows flattened as
    (c, dy, dx), the layout of ``TokenViT.forward_tokens``); arithmetic in float32 (float64 for
    float64 input), rounded once, as ``ops.ablate_tokens``."""
    B, C, H, W = x.shape
    ph, pw = patch
    v = x.to(accumulation_dtype(x.dtype))
    if mean is not None:
        v = (v - mean.view(1, C, 1, 1).to(v.dtype)) / std.view(1, C, 1, 1).to(v.dtype)
    v = v.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return v.reshape(B, (H // ph) * (W // pw), C * ph * pw).to(x.dtype)


class _TokenPairWork:
    """Units = mask pairs from the log, as :class:`_PairWork`; a unit's input is the tokens
    outside both of its masks (aligned masks: every token wholly masked or wholly kept). Units
    are grouped by their kept-token count K so that every forward is one [N, K, E] batch."""

    granule = 1

    def __init__(self, smoother: PatchCleanser, x: torch.Tensor, masks: MaskSet, log: PairLog) -> None:
        self.smoother, self.log = smoother, log
        mean, std = check_stats(smoother.mean, smoother.std, x)
        # a call's images are cut into tokens once (x-sized); each forward gathers its kept rows
        self.patches = image_tokens(x, smoother.model.patch, mean, std)
        covered = covered_tokens(masks, smoother.model.patch)  # [M, G]
        self.M = masks.count
        keep = ~(covered[:, None, :] | covered[None, :, :])  # [M, M, G]: pair (i, j) keeps these tokens
        self.keep = keep.reshape(self.M * self.M, -1).to(x.device)
        self.kept = keep.sum(dim=2).reshape(-1).numpy()  # K of each pair, on the host (the group keys)
        self.votes = top1_votes(smoother.num_classes)
        self.flat = torch.zeros(0, dtype=torch.int64, device=x.device)

    def groups(self, image: int, first: int, end: int) -> list[tuple[int, int, int]]:
        """Runs of units with the same kept-token count (the key). The decider appends an image's
        pairs before the engine asks (image = slot: one slot per image)."""
        pairs = self.log.pairs[image, first:end]
        keys = self.kept[pairs[:, 0] * self.M + pairs[:, 1]]
        bounds = [0, *(np.flatnonzero(np.diff(keys)) + 1).tolist(), len(keys)]
        return [(int(keys[a]), first + a, first + b) for a, b in zip(bounds, bounds[1:])]

    def build(self, segments: Sequence[Segment]) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept-token pixels [N, K, E], token indices [N, K]) of the segments' rows (one K)."""
        images, flat, pairs = self.log.rows_of(segments)
        device = self.patches.device
        self.flat = torch.from_numpy(flat).to(device)
        code = pairs[:, 0] * self.M + pairs[:, 1]
        K = int(self.kept[code[0]])
        # nonzero is row-major: each row's kept tokens, increasing
        index = self.keep[torch.from_numpy(code).to(device)].nonzero()[:, 1].view(len(code), K)
        pixels = self.patches[torch.from_numpy(images).to(device)[:, None], index]
        return pixels, index

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor], start: int, stop: int) -> torch.Tensor:
        pixels, index = inputs
        logits = self.smoother.token_logits(pixels[start:stop], index[start:stop])
        self.log.record(self.flat[start:stop], logits)
        return logits


class PatchCleanser(BaseSmoother):
    """PatchCleanser's double masking: certify, predict, evaluate.

    Args:
        model: the undefended base model (it gets masked images of C channels).
        num_classes: K.
        patch_size: the patch certified against: an int, or (height, width) for a rectangle.
        num_mask: k, masks per axis (k x k masks; the paper's default 6), or None with ``mask_stride``.
        mask_stride: the stride s (instead of ``num_mask``), an int or (height, width).
        fill: the value of masked pixels in the model's input space (0, as the authors).
        mean, std: per-channel normalization applied to the kept pixels before the model.
        tokens: the input path for a :class:`~fastsmooth.models.vit.TokenViT` with
            ``drop_tokens``: None (default) drops the masked tokens when every mask lies on the
            ViT's patch grid and masks pixels otherwise; False always masks pixels; True
            requires the token path (a one-line error says why it is not possible).
        dedupe: on the pixel path, run each distinct masked input of an image once: pairs whose
            masks cover the same pixels other than those already equal to ``fill`` write the
            identical input, and one forward answers all of them (``ops.mask_pairs.repeats``;
            digits on a black background repeat about half their pairs, natural images none).
            The answers are the same either way; False runs every pair (the plain enumeration).
        batch_size, backend, autocast, memory_format, compile: see :class:`BaseSmoother`.

    ``certify(x, labels)`` stops each image at its first disagreement with its label;
    ``predict(x)`` runs the double-masking inference; ``evaluate_batch`` / ``decide_batch``
    answer both without labels (certified: every one- and two-mask prediction equals the
    prediction). ``last_units`` holds the forwards each image used in the last call.
    ``path`` says which input the base model gets ("tokens" or "pixels", semantics.md §15).
    """

    certificate_name = "patch_size"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        patch_size: int | tuple[int, int],
        num_mask: int | tuple[int, int] | None = 6,
        mask_stride: int | tuple[int, int] | None = None,
        fill: float = 0.0,
        mean: Stats = None,
        std: Stats = None,
        tokens: bool | None = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        compile: Compile = False,
        dedupe: bool = True,
    ) -> None:
        super().__init__(model, num_classes, batch_size=batch_size, backend=backend, autocast=autocast,
                         memory_format=memory_format, compile=compile)
        self.patch_size = _size_pair(patch_size, "patch_size")
        if (num_mask is None) == (mask_stride is None):
            raise ValueError(f"give exactly one of num_mask and mask_stride, got num_mask={num_mask!r}, "
                             f"mask_stride={mask_stride!r}")
        if num_mask is not None:
            k = _size_pair(num_mask, "num_mask")
            if min(k) < 2:
                raise ValueError(f"num_mask={num_mask!r} must be >= 2 per axis (one mask would cover the whole "
                                 "image): use num_mask=2 or more (the paper uses 6)")
            self.num_mask: tuple[int, int] | None = k
        else:
            self.num_mask = None
        self.mask_stride = None if mask_stride is None else _size_pair(mask_stride, "mask_stride")
        self.fill = check_real(fill, "fill")
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        self.mean, self.std = mean, std
        if tokens is not None and not isinstance(tokens, bool):
            raise TypeError(f"tokens must be None (drop tokens when the masks align), True or False, got {tokens!r}")
        # public: a results file's fingerprint records it (with the model's hash it fixes the path)
        self.tokens = tokens
        if not isinstance(dedupe, bool):
            raise TypeError(f"dedupe must be True (run each distinct masked input once per image) or False (run "
                            f"every pair), got {dedupe!r}")
        self.dedupe = dedupe
        self._buffer: torch.Tensor | None = None
        if tokens and isinstance(model, TokenViT):
            self.path_for(*model.image_size)  # raises now, with the reason, when the masks cannot drop tokens
        elif tokens:
            raise ValueError(f"tokens=True needs a fastsmooth.models.vit.TokenViT base model, got "
                             f"{type(model).__name__}: pass tokens=None or False to mask pixels")

    # -- the input path ---------------------------------------------------------------------------
    token_logits = _ViTTokens.token_logits  # one forward of the TokenViT on kept tokens (eager, autocast or compiled)

    def token_obstacle(self, height: int, width: int) -> str | None:
        """Why ``height`` x ``width`` images cannot take the token path (one line), or None when they do."""
        model = self.model
        if self.tokens is False:
            return "tokens=False masks pixels"
        if not isinstance(model, TokenViT):
            return f"the model is a {type(model).__name__}, not a fastsmooth.models.vit.TokenViT"
        if not model.drop_tokens:
            return "the TokenViT has drop_tokens=False (it sees every token)"
        if (height, width) != model.image_size:
            return (f"the ViT takes {model.image_size[0]} x {model.image_size[1]} images, got {height} x {width}")
        return misaligned(self.masks(height, width), model.patch)

    def path_for(self, height: int, width: int) -> str:
        """"tokens" or "pixels": the base model's input on ``height`` x ``width`` images (raises
        with the reason when ``tokens=True`` and the token path is not possible)."""
        why = self.token_obstacle(height, width)
        if why is not None and self.tokens:
            raise ValueError(f"tokens=True but the masks cannot drop tokens: {why}; pass tokens=None to mask "
                             "pixels instead")
        return "pixels" if why is not None else "tokens"

    @property
    def path(self) -> str:
        """"tokens" or "pixels" on the model's images (a TokenViT's image size; other models: "pixels")."""
        if isinstance(self.model, TokenViT):
            return self.path_for(*self.model.image_size)
        return "pixels"

    # -- the mask set -------------------------------------------------------------------------
    def masks(self, height: int, width: int) -> MaskSet:
        """The R-covering mask set for ``height`` x ``width`` images (the authors' gen_mask_set)."""
        key = (height, width)
        if getattr(self, "_masks_key", None) != key:
            self._masks = mask_set(height, width, self.patch_size, self.num_mask, self.mask_stride)
            self._masks_key = key
        return self._masks

    def forwards_all(self, height: int, width: int) -> int:
        """Forwards of the plain enumeration per image: M one-mask + M (M - 1) / 2 two-mask."""
        M = self.masks(height, width).count
        return M + M * (M - 1) // 2

    # -- the engine -----------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        x = x.to(self.device).contiguous()
        ph, pw = self.patch_size
        if ph > x.shape[2] or pw > x.shape[3]:
            raise ValueError(f"patch_size={self.patch_size} does not fit {x.shape[2]} x {x.shape[3]} images: use a "
                             f"patch of at most {x.shape[2]} x {x.shape[3]} pixels")
        return x

    def _out(self, n: int, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        """An (n, C, H, W) view of one buffer reused across forwards and calls, in ``memory_format``."""
        _, C, H, W = x.shape
        numel = n * C * H * W
        buf = self._buffer
        if buf is None or buf.numel() < numel or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._buffer = torch.empty(numel, dtype=x.dtype, device=x.device)
        if memory_format == torch.channels_last:
            return buf[:numel].view(n, H, W, C).permute(0, 3, 1, 2)
        return buf[:numel].view(n, C, H, W)

    def _run(self, x: torch.Tensor, labels: Sequence[int] | None, certify: bool, predict: bool) -> DoubleMasking:
        B = x.shape[0]
        masks = self.masks(x.shape[2], x.shape[3])
        M = masks.count
        log = PairLog(B, M + M * (M - 1) // 2, x.device)
        if B == 0:  # an empty batch: no work, no forward
            self._last_units = torch.zeros(0, dtype=torch.int64)
            return DoubleMasking(M, B, log, labels, certify=certify, predict=predict)
        slots = [(b, b) for b in range(B)]
        if self.path_for(x.shape[2], x.shape[3]) == "tokens":
            # a dropped token is not a fill-valued one: different pairs keep different tokens
            work: _PairWork | _TokenPairWork = _TokenPairWork(self, x, masks, log)
            decider = DoubleMasking(M, B, log, labels, certify=certify, predict=predict)
            batch = self._token_batch(work, decider.rows_hint(B))
        else:
            work = _PairWork(self, x, masks, log)
            keys = work.input_keys(masks) if self.dedupe else None
            decider = DoubleMasking(M, B, log, labels, certify=certify, predict=predict, keys=keys)
            # "auto" times the sizes on one-mask inputs: unit 0 of image 0 reads pair (0, 0), the log's initial value
            batch = self.forward_batch(work, 0, decider.rows_hint(B))
        self.run_work(work, decider, slots, x.device, 1, batch)
        return decider

    def _token_batch(self, work: _TokenPairWork, pending: int) -> int:
        """``batch_size``, or for "auto" the fastest per row, timed on one-mask token inputs
        (pair (0, 0) of image 0) as the pixel path times one-mask images."""
        if self.batch_size != "auto":
            return self.batch_size
        pixels, index = work.build([Segment(0, 0, 0, 1)])
        key = ("tokens", tuple(pixels.shape[1:]), pixels.dtype, str(pixels.device), self.autocast)
        return auto_batch_size(self.model, key, pixels,
                               lambda batch: self.token_logits(batch, index.expand(batch.shape[0], -1)), pending)

    # -- answers --------------------------------------------------------------------------------
    def certify(self, x: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """bool [B]: every one- and two-mask prediction equals the image's label (the paper's
        certification against any patch of at most ``patch_size``). Each image stops at the
        first look that sees a prediction other than its label."""
        x = self._prepare(x)
        y = torch.as_tensor(labels).reshape(-1)
        y = y.long() if y.numel() == 0 else y  # [] reads as float32
        if y.shape[0] != x.shape[0] or y.is_floating_point():
            raise ValueError(f"labels must hold one integer class per image ({x.shape[0]}), got {tuple(y.shape)} "
                             f"{y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {int(y.min())} .. {int(y.max())}")
        return self._run(x, y.tolist(), certify=True, predict=False).certified.clone()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """int64 [B]: the double-masking inference (Case I / II / III of the paper's algorithm)."""
        return self._run(self._prepare(x), None, certify=False, predict=True).prediction.clone()

    def evaluate_batch(self, x: torch.Tensor) -> Certified:
        """Prediction (double masking) and certificate: the smaller side of ``patch_size`` where
        every one- and two-mask prediction equals the prediction, else 0 (float64). With
        ``evaluate``'s ``correct`` (prediction == label) this is the paper's certified accuracy."""
        d = self._run(self._prepare(x), None, certify=True, predict=True)
        size = float(min(self.patch_size))
        return Certified(d.prediction.clone(), torch.where(d.certified, size, 0.0).to(torch.float64))

    def decide_batch(self, x: torch.Tensor, levels: Sequence[float], predict: bool = True) -> Decided:
        """Certified or not at each level (a patch size: certified iff the image is and the level is
        at most the smaller side of ``patch_size``; levels <= 0 ask for the prediction only), with
        the forwards each image used."""
        for t in levels:
            check_real(t, "levels entry")
        x = self._prepare(x)
        side = min(self.patch_size)
        need_cert = any(0 < float(t) <= side for t in levels)
        d = self._run(x, None, certify=need_cert, predict=True)
        flags = torch.tensor([0 < float(t) <= side for t in levels], dtype=torch.bool)
        certified = d.certified[:, None] & flags[None, :]
        return Decided(d.prediction.clone(), certified, self.last_units.clone())
