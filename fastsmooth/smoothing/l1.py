"""l1 smoothers: DSSN (deterministic, exact certificates) and the randomized SSN / uniform baselines.

- :class:`DSSN` (semantics.md §3): L = int(2 lambda q) deterministic evaluations per image,
  hard argmax votes, exact radius floor((n_c - n_r - [r < c]) / 2) / q. No abstain.
- :class:`SSN`, :class:`UniformSmoothing` (semantics.md §4): n0 samples pick the class, n
  samples bound its probability (Clopper-Pearson), radius 2 lambda (p_lower - 1/2).

All of them implement ``evaluate_batch(x) -> Certified`` for ``fastsmooth.evaluate``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real
from fastsmooth.certificates.counts import top_two
from fastsmooth.certificates.l1 import dssn_radius, randomized_l1_radius
from fastsmooth.ops.splitting import dssn_levels, dssn_split, ssn_noise, uniform_noise
from fastsmooth.smoothing.base import BaseSmoother, Certified, MemoryFormat
from fastsmooth.stats import clopper_pearson_lower

__all__ = ["DSSN", "SSN", "UniformSmoothing"]


def _add_votes(counts: torch.Tensor, logits: torch.Tensor, images: int) -> None:
    """counts [images, classes] += hard argmax votes of logits [images * per_image, classes] (image-major)."""
    votes = logits.argmax(dim=1).reshape(images, -1)  # first maximal index: smallest class on ties
    counts.scatter_add_(1, votes, torch.ones_like(votes))


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
        batch_size: int = 1000,
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        quantize: bool = False,
        tolerance: float = 1e-3,
    ) -> None:
        super().__init__(model, num_classes, batch_size, backend, autocast, memory_format)
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
        B, L = x.shape[0], self.levels
        counts = torch.zeros(B, self.num_classes, dtype=torch.int64, device=x.device)
        for images in self.chunks(B, L):  # several images per pass when L <= batch_size ...
            xs = x[images.start : images.stop]
            for k0 in range(0, L, self.batch_size):  # ... else one image, its evaluations in chunks
                ks = range(k0, min(L, k0 + self.batch_size))
                batch = dssn_split(xs, lam=self.lam, offsets=ks, seed=self.seed, q=self.q, backend=self.backend)
                _add_votes(counts[images.start : images.stop], self.logits(batch), len(images))
        return counts

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
        batch_size: int = 1000,
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        n0: int = 64,
        n: int = 100000,
        alpha: float = 0.001,
        sided: str = "two",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, num_classes, batch_size, backend, autocast, memory_format)
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

    def _noise(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def counts(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Votes [B, num_classes] (int64) of n noised copies of every image."""
        check_image_batch(x)
        n = check_int(n, "n", 1)
        generator = generator if generator is not None else self.generator
        x = x.detach().to(self.device)
        counts = torch.zeros(x.shape[0], self.num_classes, dtype=torch.int64, device=x.device)
        for images in self.chunks(x.shape[0], n):
            xs = x[images.start : images.stop]
            for j0 in range(0, n, self.batch_size):  # every call draws a fresh Philox seed
                batch = self._noise(xs, min(n, j0 + self.batch_size) - j0, generator)
                _add_votes(counts[images.start : images.stop], self.logits(batch), len(images))
        return counts

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
        prediction = top_two(self.counts(x, n0, generator).cpu())[0]
        hits = self.counts(x, n, generator).cpu().gather(1, prediction[:, None])[:, 0]
        p_lower = clopper_pearson_lower(hits.numpy(), n, one_sided)
        return prediction, randomized_l1_radius(p_lower, self.lam)

    def evaluate_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Certified:
        prediction, radius = self.certify(x, generator=generator)
        return Certified(prediction, radius)


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

    def _noise(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return ssn_noise(x, self.lam, n, generator, backend=self.backend)


class UniformSmoothing(_RandomizedL1):
    """Uniform additive noise x + U(-lambda, lambda) (Yang et al. 2020), the l1 baseline.

    Args:
        model, num_classes, batch_size, backend, autocast, memory_format: as in :class:`BaseSmoother`.
        sigma, lam: noise level, exactly one (lam = sigma * sqrt(3)).
        n0, n, alpha, sided: defaults of :meth:`certify` (64, 100000, 0.001, "two").
        generator: CPU generator the per-batch Philox seeds are drawn from (reproducibility).
    """

    def _noise(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return uniform_noise(x, self.lam, n, generator, backend=self.backend)
