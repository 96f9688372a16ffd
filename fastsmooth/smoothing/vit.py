"""Smoothed vision transformers: column / row / block smoothing with token dropping (semantics.md §10).

The ablations, votes and certificates are those of the patch smoothers (``smoothing/patch.py``);
what changes is the base classifier's input. A :class:`~fastsmooth.models.vit.TokenViT` gets
only the tokens whose patch holds a retained pixel, written by the fused op
``fastsmooth.ops.ablate_tokens`` straight from the image batch (ablation, normalization and
patch extraction in one pass), and embeds them with one matmul.

How forwards are formed: the kept tokens of every ablation follow from its band / block start
(``ops.tokens.geometry``); ablations are grouped by their number of kept tokens K (column
smoothing, s = 19, 16 x 16 patches on 224 x 224: K = 28 or 42). The smoothers run on the
shared engine (``fastsmooth.engine``): the units of an image are its ablations ordered group
by group, and the group key (K) keeps every forward a dense [N, K, E] batch, filled up to
``batch_size`` rows with units of as many images as needed. The cost of grouping: one
partly filled forward more per group at the end of a call (two groups for bands, up to four
for blocks), nothing per image.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch import nn

from fastsmooth.models.vit import TokenViT
from fastsmooth.ops.ablation.masks import (
    KeepMasks,
    all_combinations,
    band_masks,
    block_masks,
    multi_band_masks,
    multi_block_masks,
    random_subsets,
)
from fastsmooth.ops.tokens import NORMALIZE_MODES, ablate_tokens, tokens_kernel
from fastsmooth.ops.tokens.geometry import (
    TokenSets,
    band_tokens,
    block_tokens,
    group_by_count,
    multi_band_tokens,
    multi_block_tokens,
)
from fastsmooth._validation import check_stats
from fastsmooth.engine import Everything, Margins, Segment, runs
from fastsmooth.smoothing.base import Decided
from fastsmooth.smoothing.patch import (
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    RowSmoothing,
)

Stats = Sequence[float] | torch.Tensor | None

__all__ = [
    "ViTColumnSmoothing", "ViTRowSmoothing", "ViTBlockSmoothing", "ViTMultiBandSmoothing", "ViTMultiBlockSmoothing",
    "TokenGroup", "token_training_noise",
]



class TokenGroup:
    """Ablations of one kept-token count K: their indices in the smoother's order, their masks
    and their kept tokens [P_k, K] (on the model's device)."""

    def __init__(self, members: torch.Tensor, masks: KeepMasks, tokens: torch.Tensor) -> None:
        self.members, self.masks, self.tokens = members, masks, tokens

    @property
    def count(self) -> int:
        return self.tokens.shape[0]

    def slice(self, first: int, end: int) -> TokenGroup:
        """Ablations first .. end - 1 of the group."""
        return TokenGroup(self.members[first:end], self.masks.select(slice(first, end)), self.tokens[first:end])


class _TokenWork:
    """The engine's view of a ViT smoother (``fastsmooth.engine.Work``): units are ablations,
    group by group; ``build`` writes kept-token pixels with the fused op, ``forward`` runs
    ``TokenViT.forward_tokens``."""

    granule = 1

    def __init__(self, smoother: _ViTTokens, x: torch.Tensor, groups: list[TokenGroup]) -> None:
        self.smoother, self.x, self.groups_ = smoother, x, groups
        self.mean, self.std = check_stats(smoother.mean, smoother.std, x)  # once per call, not per forward
        self.kernel = tokens_kernel(smoother.backend, x.device)
        self.patch = smoother.model.patch
        self.starts = [0]
        for g in groups:
            self.starts.append(self.starts[-1] + g.count)
        self.votes = smoother._votes

    @property
    def total(self) -> int:
        return self.starts[-1]

    def groups(self, image: int, first: int, end: int) -> list[tuple[int, int, int]]:
        """Runs of units with the same kept-token count (the group index is the key)."""
        runs_ = []
        for key, (lo, hi) in enumerate(zip(self.starts, self.starts[1:])):
            a, b = max(first, lo), min(end, hi)
            if a < b:
                runs_.append((key, a, b))
        return runs_

    def _part(self, first: int, end: int) -> TokenGroup:
        key = bisect.bisect_right(self.starts, first) - 1
        lo = self.starts[key]
        return self.groups_[key].slice(first - lo, end - lo)

    def build(self, segments: Sequence[Segment]) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept-token pixels [N, K, E], token indices [N, K]) of the segments' rows, one group."""
        rows = sum(seg.rows for seg in segments)
        K = self._part(segments[0].first, segments[0].first + 1).tokens.shape[1]
        E = self.x.shape[1] * self.patch[0] * self.patch[1]
        pixels = self.smoother._token_buffer(rows * K * E, self.x).view(rows, K, E)
        index = torch.empty(rows, K, dtype=torch.int64, device=self.x.device)
        for lo, hi, first, end, row in runs(segments):
            part = self._part(first, end)
            n = (hi - lo) * part.count
            self.kernel(self.x[lo:hi], part.masks, part.tokens[None], self.patch, self.mean, self.std,
                        self.smoother.normalize == "after", out=pixels[row : row + n])
            index[row : row + n] = part.tokens.repeat(hi - lo, 1)
        return pixels, index

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor], start: int, stop: int) -> torch.Tensor:
        pixels, index = inputs
        return self.smoother.token_logits(pixels[start:stop], index[start:stop])


class _ViTTokens:
    """Token-dropping forwards for a patch smoother whose base model is a TokenViT."""

    def _init_vit(self, model: nn.Module, normalize: str, drop_tokens: bool | None) -> None:
        if not isinstance(model, TokenViT):
            raise TypeError(
                f"model must be a fastsmooth.models.vit.TokenViT (build one with fastsmooth.models.build('vit_...') "
                f"or TokenViT(timm_vit)), got {type(model).__name__}"
            )
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if drop_tokens is not None and not isinstance(drop_tokens, bool):
            raise TypeError(f"drop_tokens must be a bool or None (the model's setting), got {drop_tokens!r}")
        self.normalize = normalize
        self.drop_tokens = model.drop_tokens if drop_tokens is None else drop_tokens

    def token_sets(self, height: int, width: int) -> TokenSets:
        """Kept tokens of every ablation, in the smoother's ablation order."""
        raise NotImplementedError

    def _check_image(self, H: int, W: int) -> None:
        if (H, W) != self.model.image_size:
            raise ValueError(
                f"the ViT takes {self.model.image_size[0]} x {self.model.image_size[1]} images, got {H} x {W} "
                "(build it with img_size= the image size; fastsmooth does not resize)"
            )

    def groups(self, height: int, width: int, device: torch.device) -> list[TokenGroup]:
        """The ablations grouped by kept-token count (one group of all tokens without dropping)."""
        return _groups(self, height, width, device)

    def token_logits(self, pixels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] (float32) of one forward of the token ViT."""
        self._eval()
        with torch.inference_mode():
            if self.autocast is None:
                logits = self.model.forward_tokens(pixels, index)
            else:
                with torch.autocast(pixels.device.type, dtype=self.autocast):
                    logits = self.model.forward_tokens(pixels, index)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"the ViT returned shape {tuple(logits.shape)}, expected (N, num_classes={self.num_classes})")
        return logits.float()

    def _work(self, x: torch.Tensor) -> _TokenWork:
        B, _, H, W = x.shape
        self._check_image(H, W)
        if not isinstance(self.batch_size, int):
            raise ValueError(f"ViT smoothers need an integer batch_size (token batches), got {self.batch_size!r}")
        return _TokenWork(self, x, self.groups(H, W, x.device))

    def _count(self, x: torch.Tensor) -> torch.Tensor:
        """Counts [B, K] on the CPU over every ablation, forwards grouped by kept-token count."""
        work = self._work(x)
        slots = [(b, b) for b in range(x.shape[0])]
        return self.run_work(work, Everything(work.total), slots, x.device, 1, self.batch_size).counts.cpu()

    def _decide(self, x: torch.Tensor, votes: list[int], predict: bool) -> Decided:
        """Exact early exit (``fastsmooth.engine.Margins``) over the ablations in group order."""
        work = self._work(x)
        decider = Margins(work.total, votes, x.shape[0], predict)
        self.run_work(work, decider, [(b, b) for b in range(x.shape[0])], x.device, 1, self.batch_size)
        return Decided(decider.prediction, decider.certified, self.last_units.clone())

    def _token_buffer(self, numel: int, x: torch.Tensor) -> torch.Tensor:
        buf = getattr(self, "_tokens", None)
        if buf is None or buf.numel() < numel or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._tokens = torch.empty(numel, dtype=x.dtype, device=x.device)
        return buf[:numel]


def _groups(smoother: _ViTTokens, H: int, W: int, device: torch.device) -> list[TokenGroup]:
    """The smoother's ablations grouped by kept-token count, built once per geometry and device."""
    patch, drop = smoother.model.patch, smoother.drop_tokens
    key = (type(smoother).__name__, smoother.size, getattr(smoother, "keep", 0), getattr(smoother, "axis", ""), H, W,
           patch, drop, getattr(smoother, "stride", 1))
    cache = _GROUP_CACHE.setdefault(device, {})
    if key not in cache:
        masks = smoother.masks(H, W, device)
        P = masks.count
        if drop:
            pairs = group_by_count(smoother.token_sets(H, W))
        else:
            every = torch.arange((H // patch[0]) * (W // patch[1]))
            pairs = [(torch.arange(P), every.expand(P, -1).contiguous())]
        cache[key] = []
        for members, tokens in pairs:
            group_masks = masks.select(members.to(masks.rows.device))
            cache[key].append(TokenGroup(members.to(device), group_masks, tokens.to(device)))
    return cache[key]


_GROUP_CACHE: dict[torch.device, dict[tuple, list[TokenGroup]]] = {}


def _vit_init(cls):
    """Give a patch smoother class the ViT constructor: (model, num_classes, size, [keep,] ...,
    normalize, drop_tokens); ``keep`` for the multi-band / multi-block classes."""
    base = cls.__bases__[1]

    if issubclass(base, (MultiBandSmoothing, MultiBlockSmoothing)):
        def __init__(
            self,
            model: TokenViT,
            num_classes: int,
            size: int,
            keep: int,
            threshold: float | None = None,
            mean: Stats = None,
            std: Stats = None,
            batch_size: int = 1000,
            backend: str = "auto",
            autocast: torch.dtype | None = None,
            normalize: str = "after",
            drop_tokens: bool | None = None,
            **kwargs,
        ) -> None:
            base.__init__(self, model, num_classes, size, keep, threshold, mean, std, batch_size, backend, autocast,
                          torch.contiguous_format, **kwargs)
            self._init_vit(model, normalize, drop_tokens)
    else:
        def __init__(
            self,
            model: TokenViT,
            num_classes: int,
            size: int,
            threshold: float | None = None,
            mean: Stats = None,
            std: Stats = None,
            batch_size: int = 1000,
            backend: str = "auto",
            autocast: torch.dtype | None = None,
            normalize: str = "after",
            drop_tokens: bool | None = None,
            **kwargs,
        ) -> None:
            base.__init__(self, model, num_classes, size, threshold, mean, std, batch_size, backend, autocast,
                          torch.contiguous_format, **kwargs)
            self._init_vit(model, normalize, drop_tokens)

    cls.__init__ = __init__
    return cls


_DOC = """

    The base model is a :class:`~fastsmooth.models.vit.TokenViT` built at the image size; it
    sees C channels (semantics.md §10), normalized with ``mean`` / ``std`` ``"after"`` ablation
    (ablated pixels ``-mean / std``, the authors' code) or ``"before"`` it (ablated pixels 0,
    ART's salman2021 path). ``drop_tokens`` (default: the model's) runs the ViT on the kept
    tokens only; False gives it every token. ``threshold=None`` (the default) gives one vote
    to the argmax, as the papers' ViT code does. Certificates use semantics.md §1's rule.
"""


@_vit_init
class ViTColumnSmoothing(_ViTTokens, ColumnSmoothing):
    __doc__ = ("Column smoothing with a smoothed ViT: W bands of ``size`` columns; Delta = m + s - 1. ``stride``: "
               "only the bands starting at 0, stride, 2 stride, .. (see ColumnSmoothing)." + _DOC)

    def token_sets(self, height: int, width: int) -> TokenSets:
        return band_tokens(height, width, self.size, self.positions(height, width), self.model.patch, self.axis)


@_vit_init
class ViTRowSmoothing(_ViTTokens, RowSmoothing):
    __doc__ = ("Row smoothing with a smoothed ViT: H bands of ``size`` rows; Delta = m + s - 1. "
               "``transposed=True`` transposes each image and uses columns." + _DOC)

    token_sets = ViTColumnSmoothing.token_sets


@_vit_init
class ViTBlockSmoothing(_ViTTokens, BlockSmoothing):
    __doc__ = ("Block smoothing with a smoothed ViT: H * W blocks of ``size`` x ``size``; Delta = (m + s - 1)^2. "
               "``stride`` (an integer or (rows, columns)): only the corners on that grid (see BlockSmoothing)." + _DOC)

    def token_sets(self, height: int, width: int) -> TokenSets:
        return block_tokens(height, width, self.size, self.positions(height, width), self.model.patch)


@_vit_init
class ViTMultiBandSmoothing(_ViTTokens, MultiBandSmoothing):
    __doc__ = ("Multi-band smoothing with a smoothed ViT: every choice of ``keep`` of the W // s aligned bands "
               "(``axis=\"row\"``: rows); Delta = C(B, keep) - C(B - a, keep)." + _DOC)

    def token_sets(self, height: int, width: int) -> TokenSets:
        combos = all_combinations(self._bands(height, width), self.keep)
        return multi_band_tokens(height, width, self.size, combos, self.model.patch, self.axis)


@_vit_init
class ViTMultiBlockSmoothing(_ViTTokens, MultiBlockSmoothing):
    __doc__ = ("Multi-block smoothing with a smoothed ViT: every choice of ``keep`` of the aligned ``size`` x "
               "``size`` tiles; Delta = C(B, keep) - C(B - a, keep)." + _DOC)

    def token_sets(self, height: int, width: int) -> TokenSets:
        combos = all_combinations(self._tiles(height, width), self.keep)
        return multi_block_tokens(height, width, self.size, combos, self.model.patch)


#: ablation kinds of the ViT training noise
TOKEN_NOISE_KINDS = ("band", "block", "multi_band", "multi_block")


def token_training_noise(
    model: TokenViT, kind: str, size: int, *, axis: str = "column", mean: Stats = None, std: Stats = None,
    normalize: str = "after", transposed: bool = False, per: str = "batch", keep: int | None = None,
):
    """Training input of a smoothed ViT: ``noise(x, generator)`` for ``model(pixels, index)``.

    ``per="batch"``: one random band (``kind="band"``, along ``axis``) or block (``kind="block"``),
    or one random choice of ``keep`` aligned bands / tiles (``"multi_band"`` / ``"multi_block"``),
    per minibatch, as the authors' training (smoothed-vit's and ART's ablators draw one position
    per batch), so every image of the batch keeps the same K tokens; it returns (pixels, index).
    ``per="image"``: a position per image; images that keep the same number of tokens share a
    forward (two forwards per step for bands, up to four for blocks), returned as
    :class:`fastsmooth.training.Forwards`. A model that does not drop tokens gets all of them
    (one forward). The fused op writes the kept tokens' pixels, as at certification.
    """
    if kind not in TOKEN_NOISE_KINDS:
        raise ValueError(f"kind must be one of {TOKEN_NOISE_KINDS}, got {kind!r}")
    if kind.startswith("multi") and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"kind={kind!r} needs keep, the number of bands / tiles kept (a positive integer), "
                         f"got {keep!r}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if per not in ("batch", "image"):
        raise ValueError(f"per must be 'batch' or 'image', got {per!r}")
    from fastsmooth.training import Forwards

    def positions(H: int, W: int, count: int, generator: torch.Generator) -> tuple[KeepMasks, TokenSets]:
        if kind == "band":
            start = torch.randint(W if axis == "column" else H, (count,), generator=generator)
            return band_masks(H, W, size, start, axis), band_tokens(H, W, size, start, model.patch, axis)
        if kind == "block":
            start = torch.randint(H * W, (count,), generator=generator)
            return block_masks(H, W, size, start), block_tokens(H, W, size, start, model.patch)
        if kind == "multi_band":
            combos = random_subsets(count, (W if axis == "column" else H) // size, keep, generator)
            return (multi_band_masks(H, W, size, combos, axis),
                    multi_band_tokens(H, W, size, combos, model.patch, axis))
        combos = random_subsets(count, (H // size) * (W // size), keep, generator)
        return multi_block_masks(H, W, size, combos), multi_block_tokens(H, W, size, combos, model.patch)

    def pixels(x: torch.Tensor, masks: KeepMasks, tokens: torch.Tensor) -> torch.Tensor:
        """Kept-token pixels [B, K, E] of image b under ablation b (masks and tokens per image)."""
        return ablate_tokens(x, masks.per_image(), tokens[:, None], model.patch, mean, std, normalize=normalize)

    def noise(x: torch.Tensor, generator: torch.Generator):
        if transposed:
            x = x.transpose(2, 3).contiguous()
        B, _, H, W = x.shape
        masks, sets = positions(H, W, 1 if per == "batch" else B, generator)
        if not model.drop_tokens:
            every = torch.arange(model.num_tokens, device=x.device)
            if per == "batch":
                return ablate_tokens(x, masks, every[None], model.patch, mean, std, normalize=normalize), every
            return pixels(x, masks, every.expand(B, -1)), every
        if per == "batch":
            tokens = sets.index[0].to(x.device)
            return ablate_tokens(x, masks, tokens[None], model.patch, mean, std, normalize=normalize), tokens
        parts = []
        for members, tokens in group_by_count(sets):
            on = members.to(x.device)
            group = masks.select(members)
            tokens = tokens.to(x.device)
            parts.append((on, (pixels(x[on], group, tokens), tokens)))
        return Forwards(parts)

    return noise
