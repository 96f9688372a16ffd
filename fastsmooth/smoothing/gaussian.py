"""Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, 2019): a drop-in ``Smooth``.

``Smooth`` has the constructor, methods, signatures and return values of the authors' class
(``from core import Smooth``), so replacing that import with ``from fastsmooth import Smooth``
is the only change a script needs. What differs is how the samples are made and counted:

- noise comes from the fused ``fastsmooth.ops.gaussian_noise`` op (no ``x.repeat`` plus a
  separate ``randn`` tensor), written into one reused buffer;
- votes are counted on the device with ``index_add_``, so the loop over batches never waits
  for the GPU; the counts reach the host once per call;
- ``certify_batch`` certifies many images at once and packs samples of consecutive images into
  the same forward pass, so every forward is a full ``batch_size`` batch.

The randomness is drawn from torch's global RNG by default, like the authors' code; pass
``generator=`` or ``seed=`` (keyword-only) to make a call reproducible. With a seed the result
does not depend on ``batch_size`` either: sample j of an image always receives the same noise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real, check_single_image
from fastsmooth.certificates.counts import top_two
from fastsmooth.ops.gaussian import draw_seed, gaussian_noise
from fastsmooth.smoothing.base import BaseSmoother, Certified, MemoryFormat
from fastsmooth.stats import binomial_pvalue, clopper_pearson_lower

__all__ = ["Smooth"]


def _positive_int(value: object, name: str) -> int:
    return check_int(value, name, 1)


def _alpha(alpha: object, high: float) -> float:
    return check_real(alpha, "alpha", 0, high, low_open=True, high_open=True)


class Smooth(BaseSmoother):
    """A smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I).

    Args:
        base_classifier: maps a batch [N, C, H, W] to scores [N, num_classes].
        num_classes: number of classes.
        sigma: noise level, in the pixel space of x (normalization belongs inside the model).
        batch_size: default forward batch size of ``certify_batch`` / ``evaluate_batch`` and
            of calls that pass ``batch_size=None`` (keyword-only, like everything below).
        backend: backend of the noise op ("auto", "reference", "cpu", "triton", "cuda").
        autocast: run the base classifier under torch.autocast in this dtype (changes the
            classifier being certified).
        memory_format: layout of the noised batches (see :class:`BaseSmoother`).
        n0, n, alpha: the parameters ``evaluate_batch`` certifies with (the authors'
            experiments: 100, 100000, 0.001).
    """

    ABSTAIN = -1
    certificate_name = "radius"
    randomized = True  # fastsmooth.evaluate seeds it per image (evaluate_batch's generator)

    def __init__(
        self,
        base_classifier: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        num_classes: int,
        sigma: float,
        *,
        batch_size: int = 1000,
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
    ) -> None:
        super().__init__(
            base_classifier, num_classes, batch_size=batch_size, backend=backend, autocast=autocast, memory_format=memory_format
        )
        self.base_classifier = base_classifier  # the authors' attribute name
        self.sigma = check_real(sigma, "sigma", 0, low_open=True)
        self.n0 = _positive_int(n0, "n0")
        self.n = _positive_int(n, "n")
        self.alpha = _alpha(alpha, 0.5)

    # -- the authors' API --------------------------------------------------------------------

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> tuple[int, float]:
        """Certify g around one image x [C, H, W]: (class, l2 radius), or (Smooth.ABSTAIN, 0.0).

        n0 noised samples select the class cA (most votes, smallest index on ties); n further
        samples count its votes nA; with probability at least 1 - alpha the returned class is
        g(x + delta) for every ||delta||_2 < radius = sigma * Phi^-1(pA_lower), where pA_lower
        is the one-sided Clopper-Pearson lower bound of nA / n. Abstains when pA_lower < 1/2.
        """
        self._check_image(x)
        result = self.certify_batch(x.unsqueeze(0), n0, n, alpha, batch_size, generator=generator, seed=seed)
        return int(result.prediction[0]), float(result.certificate[0])

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> int:
        """Predict g(x) for one image x [C, H, W], or Smooth.ABSTAIN.

        With n noised samples, the top two classes hold n1 and n2 votes; the prediction is
        returned unless the two-sided binomial test of n1 out of n1 + n2 at p = 1/2 has
        p-value > alpha. The probability of returning a class other than g(x) is at most alpha.
        """
        self._check_image(x)
        n = _positive_int(n, "n")
        alpha = _alpha(alpha, 1.0)
        counts = self.sample_counts(x.unsqueeze(0), n, batch_size, generator=generator, seed=seed)[0]
        top, second = top_two(counts.unsqueeze(0))
        n1, n2 = int(counts[top[0]]), int(counts[second[0]])
        if binomial_pvalue(n1, n2) > alpha:
            return Smooth.ABSTAIN
        return int(top[0])

    # -- batched API -------------------------------------------------------------------------

    def certify_batch(
        self,
        xs: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> Certified:
        """``certify`` for every image of xs [B, C, H, W], sharing forward passes across images.

        Returns ``Certified(prediction, certificate)``: int64 classes (-1 = abstain) and float64
        l2 radii (0.0 where it abstains), both [B] on the CPU.
        """
        n0, n = _positive_int(n0, "n0"), _positive_int(n, "n")
        alpha = _alpha(alpha, 0.5)
        counts = self.sample_counts(xs, n0 + n, batch_size, split=n0, generator=generator, seed=seed).cpu()
        selection, estimation = counts[:, 0], counts[:, 1]
        c_a = selection.argmax(dim=1)  # smallest index on ties, like numpy's argmax
        n_a = estimation.gather(1, c_a[:, None])[:, 0]
        p_lower = clopper_pearson_lower(n_a.numpy(), np.full(len(n_a), n), alpha)
        abstain = torch.from_numpy(p_lower < 0.5)
        radius = torch.from_numpy(self.sigma * norm.ppf(p_lower)).to(torch.float64)  # -inf where p_lower = 0
        prediction = torch.where(abstain, torch.full_like(c_a, Smooth.ABSTAIN), c_a)
        return Certified(prediction, torch.where(abstain, torch.zeros_like(radius), radius))

    def evaluate_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Certified:
        """Certify a batch with this smoother's n0, n, alpha and batch_size (for ``fastsmooth.evaluate``)."""
        return self.certify_batch(x, self.n0, self.n, self.alpha, self.batch_size, generator=generator)

    def sample_counts(
        self,
        xs: torch.Tensor,
        n: int,
        batch_size: int | None = None,
        *,
        split: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Votes of the base classifier on n noised copies of each image of xs [B, C, H, W].

        Returns int64 counts [B, num_classes] on xs's device; with ``split`` = s, counts
        [B, 2, num_classes] of copies 0 .. s - 1 and s .. n - 1 separately (certify's
        selection and estimation samples, independent noise from the same stream).
        """
        check_image_batch(xs, "xs")
        n = _positive_int(n, "n")
        batch = self.batch_size if batch_size is None else _positive_int(batch_size, "batch_size")
        s = draw_seed(generator, seed)
        B, K = xs.shape[0], self.num_classes
        groups = 1 if split is None else 2
        counts = torch.zeros(B * groups * K, dtype=torch.int64, device=xs.device)
        total = B * n
        buffer = torch.empty((min(batch, total), *xs.shape[1:]), dtype=xs.dtype, device=xs.device)
        offsets = torch.arange(buffer.shape[0], device=xs.device)
        ones = torch.ones(buffer.shape[0], dtype=torch.int64, device=xs.device)
        for start in range(0, total, batch):
            size = min(batch, total - start)
            noised = gaussian_noise(
                xs, self.sigma, n, seed=s, start=start, count=size, out=buffer[:size], backend=self.backend
            )
            votes = self.logits(noised).argmax(dim=1)
            sample = offsets[:size] + start
            group = sample // n if split is None else (sample // n) * 2 + (sample % n >= split).long()
            counts.index_add_(0, group * K + votes, ones[:size])
        return counts.view(B, groups, K) if split is not None else counts.view(B, K)

    @staticmethod
    def _check_image(x: object) -> None:
        check_single_image(x)
