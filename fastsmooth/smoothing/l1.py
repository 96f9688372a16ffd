"""l1 smoothers: DSSN (deterministic, exact certificates) and the randomized SSN / uniform baselines.

- :class:`DSSN` (semantics.md §3): L = int(2 lambda q) deterministic evaluations per image,
  hard argmax votes, exact radius floor((n_c - n_r - [r < c]) / 2) / q. No abstain.
- :class:`SSN`, :class:`UniformSmoothing` (semantics.md §4): n0 samples pick the class, n
  samples bound its probability (Clopper-Pearson), radius 2 lambda (p_lower - 1/2).

All of them implement ``evaluate_batch(x) -> Certified`` for ``fastsmooth.evaluate``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real
from fastsmooth.certificates.counts import top_two
from fastsmooth.certificates.l1 import dssn_radius, randomized_l1_radius
from fastsmooth.ops.splitting import dssn_levels, dssn_split, ssn_noise, uniform_noise
from fastsmooth.engine import Everything, Margins, Segment, Sequential, TwoStage, runs, spread
from fastsmooth.engine.works import SeededWork, top1_votes
from fastsmooth.ops._philox import seed_from
from fastsmooth.engine.compiled import Compile
from fastsmooth.smoothing.base import BaseSmoother, Certified, Decided, MemoryFormat
from fastsmooth.smoothing.sequential import decide_sequentially
from fastsmooth.stats import clopper_pearson_lower

__all__ = ["DSSN", "SSN", "UniformSmoothing"]


class DSSN(BaseSmoother):
    """Deterministic Smoothing with Splitting Noise (Levine & Feizi): exact l1 certificates.

    Args:
        model: base classifier, receives the split images x~ in [0, 1] (its own normalization inside).
        num_classes: number of classes.
        sigma, lam: noise level, exactly one of them (lam = sigma / 3 ** -0.5, as the authors compute it).
        seed: seed of the offset vector v; part of the model (the one used at training time).
        q: quantization of the data (255 for image files).
        batch_size: most split images per forward pass.
        quantize: round input that is off the 1/q grid instead of rejecting it.
        tolerance: largest accepted |x q - round(x q)|, in levels (see :meth:`prepare`).
        backend, autocast, memory_format: as in :class:`BaseSmoother`.
    """

    certificate_name = "radius"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        sigma: float | None = None,
        lam: float | None = None,
        seed: int = 0,
        q: int = 255,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        quantize: bool = False,
        tolerance: float = 1e-3,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, batch_size, backend, autocast, memory_format, compile=compile)
        self.lam, self.levels = dssn_levels(sigma, lam, q)
        self.sigma = self.lam * 3**-0.5 if sigma is None else check_real(sigma, "sigma")
        self.seed = check_int(seed, "seed", 0, 2**32 - 1)
        self.q = check_int(q, "q", 1)
        self.quantize = bool(quantize)
        self.tolerance = check_real(tolerance, "tolerance (in levels)", 0, 0.5, high_open=True)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """x on the model's device, checked to lie on the grid {0, 1/q, .., 1}.

        The certificate only holds for quantized input. x is accepted when every
        |x q - round(x q)| <= tolerance (default 1e-3 of a level, computed in float64): float32
        or float64 images k / q pass (their rounding error is ~1e-5 levels) and split exactly
        as the exact k / q would. Otherwise, or for values outside [0, 1], a ValueError says how
        far off x is, unless ``quantize=True``: then x is rounded to the nearest level in
        [0, 1] (in float32 for float16 / bfloat16 input, which cannot hold most levels).
        Non-finite values and values outside [0, 1] are refused either way (the input contract).
        """
        check_image_batch(x)
        x = x.detach().to(self.device)
        scaled = x.to(torch.float64) * self.q
        levels = scaled.round()
        off = (scaled - levels).abs()
        worst = float(off.max()) if off.numel() else 0.0
        if worst <= self.tolerance:
            return x
        if not self.quantize:
            flat = int(off.reshape(-1).argmax())
            raise ValueError(
                f"x is not quantized to multiples of 1/q = 1/{self.q}: |x*q - round(x*q)| reaches {worst:.4g} "
                f"levels (flat index {flat}, x = {float(x.reshape(-1)[flat])!r}), above tolerance={self.tolerance}; "
                "the DSSN certificate only holds on the grid. Pass quantize=True to round x to it."
            )
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return (levels.clamp(0, self.q) / self.q).to(dtype)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """Votes [B, num_classes] (int64) over all L evaluations of every image."""
        x = self.prepare(x)
        work = _DSSNWork(self, x, range(self.levels))
        return self.run_work(work, Everything(self.levels), [(b, b) for b in range(x.shape[0])], x.device).counts

    def decide_batch(self, x: torch.Tensor, levels: Sequence[float], predict: bool = True) -> Decided:
        """Certified or not at each l1 radius of ``levels``, with the fewest evaluations that decide it.

        Exact early exit (``fastsmooth.engine.Margins``): the answers equal those of
        :meth:`certify` on the full counts (radius >= level), bit for bit; offsets are evaluated
        in the spread order of ``fastsmooth.engine.spread``. ``predict=False`` stops as soon as
        the levels are decided, leaving the prediction -1 where it was not.
        """
        x = self.prepare(x)
        B = x.shape[0]
        votes = [2 * _dssn_steps(float(t), self.q) for t in levels]
        decider = Margins(self.levels, votes, B, predict)
        work = _DSSNWork(self, x, spread(self.levels))
        units = self.run_work(work, decider, [(b, b) for b in range(B)], x.device).units
        return Decided(decider.prediction, decider.certified, units)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions [B] (int64): the most voted class, smallest index on ties. Never abstains."""
        return top_two(self.counts(x))[0]

    def certify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction [B] int64, radius [B] float64): the exact l1 radius of semantics.md §3.

        The prediction provably holds for every quantized x' with ||x - x'||_1 <= radius.
        """
        return dssn_radius(self.counts(x).cpu(), self.q)

    def evaluate_batch(self, x: torch.Tensor) -> Certified:
        prediction, radius = self.certify(x)
        return Certified(prediction, radius)


def _dssn_steps(radius: float, q: int) -> int:
    """The least k >= 0 with k / q >= radius (DSSN radii are multiples of 1/q): certified at
    ``radius`` iff the margin D of the leader is >= 2k."""
    k = max(0, math.ceil(radius * q))
    while k > 0 and (k - 1) / q >= radius:
        k -= 1
    while k / q < radius:
        k += 1
    return k


class _DSSNWork:
    """Units = DSSN offsets k, in ``order``; ``dssn_split`` writes each run of images."""

    granule = 1

    def __init__(self, smoother: DSSN, x: torch.Tensor, order: range | torch.Tensor) -> None:
        self.smoother, self.x, self.order = smoother, x, order
        self.votes = top1_votes(smoother.num_classes)

    def build(self, segments: Sequence[Segment]) -> torch.Tensor:
        s = self.smoother
        parts = [
            dssn_split(self.x[lo:hi], lam=s.lam, offsets=self.order[a:b], seed=s.seed, q=s.q, backend=s.backend)
            for lo, hi, a, b, _ in runs(segments)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.smoother.logits(inputs[start:stop])


class _RandomizedL1(BaseSmoother):
    """Shared CERTIFY of the randomized l1 baselines; subclasses choose the noise."""

    certificate_name = "radius"
    randomized = True  # fastsmooth.evaluate seeds it per image (evaluate_batch's generator)

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        sigma: float | None = None,
        lam: float | None = None,
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        n0: int = 64,
        n: int = 100000,
        alpha: float = 0.001,
        sided: str = "two",
        generator: torch.Generator | None = None,
        compile: Compile = False,
    ) -> None:
        super().__init__(model, num_classes, batch_size, backend, autocast, memory_format, compile=compile)
        if (sigma is None) == (lam is None):
            raise ValueError(f"give exactly one of sigma and lam, got sigma={sigma!r}, lam={lam!r}")
        if lam is not None:
            self.lam = check_real(lam, "lam", 0, low_open=True)
            self.sigma = self.lam / math.sqrt(3)
        else:
            self.sigma = check_real(sigma, "sigma", 0, low_open=True)
            self.lam = self.sigma * math.sqrt(3)
        self.sided = _sided(sided)
        self.n0, self.n = check_int(n0, "n0", 1), check_int(n, "n", 1)
        self.alpha = _check_alpha(alpha, self.sided)
        self.generator = generator

    def _noise(self, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def _work(self, x: torch.Tensor, generator: torch.Generator | None) -> SeededWork:
        generator = generator if generator is not None else self.generator

        def op(image: torch.Tensor, n: int, seed: int) -> torch.Tensor:
            return self._noise(image, n, seed)

        return SeededWork(x, op, seed_from(generator, None), self.logits, self.num_classes)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return x.detach().to(self.device)

    def counts(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Votes [B, num_classes] (int64) of n noised copies of every image."""
        x = self._images(x)
        n = check_int(n, "n", 1)
        slots = [(b, b) for b in range(x.shape[0])]
        return self.run_work(self._work(x, generator), Everything(n), slots, x.device).counts

    def _selected(
        self, x: torch.Tensor, n0: int, n: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(class chosen by n0 samples [B], its count among the next n samples [B]), on the CPU."""
        x = self._images(x)
        B = x.shape[0]
        decider = TwoStage(n0, n, B, self.num_classes)
        counts = self.run_work(self._work(x, generator), decider, [(b, b) for b in range(B)], x.device).counts.cpu()
        selection = decider.selection.cpu()
        prediction = top_two(selection)[0]
        hits = (counts - selection).gather(1, prediction[:, None])[:, 0]
        return prediction, hits

    def certify(
        self,
        x: torch.Tensor,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        sided: str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction [B] int64, radius [B] float64) with radius = 2 lambda (p_lower - 1/2).

        n0 samples (default 64) choose the class c (argmax, smallest index on ties); n samples
        (default 100000) count it, n_c, and p_lower is the Clopper-Pearson lower bound of n_c / n.
        ``alpha`` (default 0.001) is a **two-sided** level by default (``sided="two"``), as the
        authors pass it to ``proportion_confint``: p_lower is then the one-sided bound at
        alpha / 2 = 0.0005. ``sided="one"`` uses alpha as the one-sided level. A negative
        radius means nothing is certified (the prediction is still returned).
        Defaults come from the constructor.
        """
        sided = _sided(self.sided if sided is None else sided)
        n0 = self.n0 if n0 is None else check_int(n0, "n0", 1)
        n = self.n if n is None else check_int(n, "n", 1)
        alpha = _check_alpha(self.alpha if alpha is None else alpha, sided)
        one_sided = alpha / 2 if sided == "two" else alpha
        prediction, hits = self._selected(x, n0, n, generator)
        p_lower = clopper_pearson_lower(hits.numpy(), n, one_sided)
        return prediction, randomized_l1_radius(p_lower, self.lam)

    def evaluate_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Certified:
        prediction, radius = self.certify(x, generator=generator)
        return Certified(prediction, radius)

    def decide_batch(
        self,
        x: torch.Tensor,
        levels: Sequence[float],
        n0: int | None = None,
        n_max: int | None = None,
        alpha: float | None = None,
        sided: str | None = None,
        generator: torch.Generator | None = None,
    ) -> Decided:
        """Certified or not at each l1 radius of ``levels`` (radius 2 lambda (p_lower - 1/2) >= level),
        each image stopping as soon as it is decided (``fastsmooth.smoothing.sequential``).
        ``alpha`` / ``sided`` as in :meth:`certify`; defaults from the constructor (n_max: n)."""
        sided = _sided(self.sided if sided is None else sided)
        n0 = self.n0 if n0 is None else check_int(n0, "n0", 1)
        n_max = self.n if n_max is None else check_int(n_max, "n_max", 1)
        alpha = _check_alpha(self.alpha if alpha is None else alpha, sided)
        one_sided = alpha / 2 if sided == "two" else alpha
        x = self._images(x)
        work = self._work(x, generator)
        slots = [(b, b) for b in range(x.shape[0])]

        def execute(decider: Sequential) -> torch.Tensor:
            return self.run_work(work, decider, slots, x.device).units

        def radius(p: np.ndarray) -> np.ndarray:
            return randomized_l1_radius(p, self.lam).numpy()

        return decide_sequentially(execute, x.shape[0], levels, n0, n_max, one_sided, radius, abstains=False)


def _check_alpha(alpha: object, sided: str) -> float:
    """alpha as the level it is: two-sided in (0, 1), one-sided in (0, 0.5) (before any halving)."""
    high = 1.0 if sided == "two" else 0.5
    return check_real(alpha, f"alpha ({sided}-sided)", 0, high, low_open=True, high_open=True)


def _sided(sided: str) -> str:
    if sided not in ("one", "two"):
        raise ValueError(f"sided must be 'one' or 'two', got {sided!r}")
    return sided


class SSN(_RandomizedL1):
    """Smoothing with independent Splitting Noise: s_i ~ U(0, 2 lambda) per element and sample.

    Args as :class:`UniformSmoothing`; see :meth:`certify` for the statistics.
    """

    def _noise(self, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        return ssn_noise(x, self.lam, n, seed=seed, backend=self.backend)


class UniformSmoothing(_RandomizedL1):
    """Uniform additive noise x + U(-lambda, lambda) (Yang et al. 2020), the l1 baseline.

    Args:
        model, num_classes, batch_size, backend, autocast, memory_format: as in :class:`BaseSmoother`.
        sigma, lam: noise level, exactly one (lam = sigma * sqrt(3)).
        n0, n, alpha, sided: defaults of :meth:`certify` (64, 100000, 0.001, "two").
        generator: CPU generator the per-batch Philox seeds are drawn from (reproducibility).
    """

    def _noise(self, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        return uniform_noise(x, self.lam, n, seed=seed, backend=self.backend)
