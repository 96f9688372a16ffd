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

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real, check_single_image
from fastsmooth.ops.gaussian import draw_seed, gaussian_noise
from fastsmooth.engine import Decider, Everything, Run, Segment, TwoStage
from fastsmooth.engine.works import top1_votes
from fastsmooth.engine.compiled import Compile
from fastsmooth.smoothing.base import BaseSmoother, Certified, Decided, MemoryFormat
from fastsmooth.smoothing.sequential import decide_sequentially, predict_fixed, predict_sequentially
from fastsmooth.stats import clopper_pearson_lower

__all__ = ["Smooth"]


def _positive_int(value: object, name: str) -> int:
    return check_int(value, name, 1)


def _batch(value: object) -> int | str:
    return "auto" if value == "auto" else _positive_int(value, "batch_size")


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
        batch_size: int | str = "auto",
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        compile: Compile = False,
    ) -> None:
        super().__init__(
            base_classifier, num_classes, batch_size=batch_size, backend=backend, autocast=autocast, memory_format=memory_format,
            compile=compile,
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
        sequential: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> int:
        """Predict g(x) for one image x [C, H, W], or Smooth.ABSTAIN.

        With n noised samples, the top two classes hold n1 and n2 votes; the prediction is
        returned unless the two-sided binomial test of n1 out of n1 + n2 at p = 1/2 has
        p-value > alpha. The probability of returning a class other than g(x) is at most alpha.
        ``sequential=True``: the same test at looks 64, 96, 144, ... up to n (see
        :meth:`predict_batch`), stopping at the first that passes.
        """
        self._check_image(x)
        result = self.predict_batch(
            x.unsqueeze(0), n, alpha, batch_size, sequential=sequential, generator=generator, seed=seed
        )
        return int(result.prediction[0])

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
        from scipy.stats import norm  # imported on use: see fastsmooth.stats

        radius = torch.from_numpy(self.sigma * norm.ppf(p_lower)).to(torch.float64)  # -inf where p_lower = 0
        prediction = torch.where(abstain, torch.full_like(c_a, Smooth.ABSTAIN), c_a)
        return Certified(prediction, torch.where(abstain, torch.zeros_like(radius), radius))

    def evaluate_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Certified:
        """Certify a batch with this smoother's n0, n, alpha and batch_size (for ``fastsmooth.evaluate``)."""
        return self.certify_batch(x, self.n0, self.n, self.alpha, self.batch_size, generator=generator)

    def decide_batch(
        self,
        xs: torch.Tensor,
        levels: Sequence[float],
        n0: int | None = None,
        n_max: int | None = None,
        alpha: float | None = None,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        predict: bool = True,
    ) -> Decided:
        """Certified or not at each l2 radius of ``levels``, stopping each image as soon as it is decided.

        Up to n0 samples (default ``self.n0``; adaptive selection may stop at 16, 32 or 64 when a
        sign test shows the leader ahead) choose c_A; estimation samples follow up to ``n_max``
        (default ``self.n``), and an image retires once every level r is decided: certified when
        an anytime-valid test shows p_A > Phi(r / sigma) (the radius sigma Phi^-1(p_A) >= r, as
        :meth:`certify_batch` computes it from its bound), given up when it rules r out
        (``fastsmooth.engine.Sequential``, the hybrid rule: P(a false certification at r) <=
        alpha). Abstains (prediction -1) when p_A >= 1/2 is not shown; ``predict=False`` does not
        decide that (prediction -1 also where no level is certified; fewer samples: see
        ``fastsmooth.smoothing.sequential.decide_sequentially``). ``forwards`` counts selection
        samples too. With a seed the samples are those of :meth:`certify_batch` (the same noise
        stream).
        """
        n0 = self.n0 if n0 is None else _positive_int(n0, "n0")
        n_max = self.n if n_max is None else _positive_int(n_max, "n_max")
        alpha = self.alpha if alpha is None else _alpha(alpha, 0.5)
        batch = self.batch_size if batch_size is None else _batch(batch_size)
        check_image_batch(xs, "xs")
        work = _NoiseWork(self, xs, n0 + n_max, draw_seed(generator, seed))
        slots = [(b, b) for b in range(xs.shape[0])]

        def radius(p: np.ndarray) -> np.ndarray:
            from scipy.stats import norm

            return np.where(p < 0.5, -np.inf, self.sigma * norm.ppf(p))

        def execute(decider: Decider) -> torch.Tensor:
            return self._run(work, decider, slots, xs.device, batch).units

        return decide_sequentially(execute, xs.shape[0], levels, n0, n_max, alpha, radius, abstains=True,
                                   predict=predict)

    def predict_batch(
        self,
        xs: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int | None = None,
        *,
        sequential: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> Decided:
        """``predict`` for every image of xs [B, C, H, W]: ``Decided(prediction, certified [B, 0],
        forwards)``, prediction -1 where it abstains.

        ``sequential=False``: Cohen et al.'s PREDICT with n samples per image. ``sequential=True``:
        n is the budget; the binomial test runs at looks 64, 96, 144, ... (x 1.5) up to n, look k
        at alpha_k (half of alpha at n, the rest split evenly: ``fastsmooth.engine.SequentialPredict``),
        so P(returning a class other than g(x)) <= alpha still holds; an image stops at the first
        look that passes (abstaining at n). With a seed the samples are a prefix of
        the fixed-n stream.
        """
        n = _positive_int(n, "n")
        alpha = _alpha(alpha, 1.0)
        if not sequential:
            return predict_fixed(self.sample_counts(xs, n, batch_size, generator=generator, seed=seed), alpha, n)
        check_image_batch(xs, "xs")
        batch = self.batch_size if batch_size is None else _batch(batch_size)
        work = _NoiseWork(self, xs, n, draw_seed(generator, seed))
        slots = [(b, b) for b in range(xs.shape[0])]
        return predict_sequentially(
            lambda decider: self._run(work, decider, slots, xs.device, batch).units, xs.shape[0], n, alpha
        )

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
        batch = self.batch_size if batch_size is None else _batch(batch_size)
        B = xs.shape[0]
        work = _NoiseWork(self, xs, n, draw_seed(generator, seed))
        slots = [(b, b) for b in range(B)]
        if split is None:
            return self._run(work, Everything(n), slots, xs.device, batch).counts
        decider = TwoStage(split, n - split, B, self.num_classes)
        counts = self._run(work, decider, slots, xs.device, batch).counts
        selection = decider.selection.to(xs.device)
        return torch.stack([selection, counts - selection], dim=1)

    def _run(self, work: _NoiseWork, decider: Decider, slots: list, device: torch.device, batch: int | str) -> Run:
        return self.run_work(work, decider, slots, device, batch_size=None if batch == "auto" else batch)

    @staticmethod
    def _check_image(x: object) -> None:
        check_single_image(x)

class _NoiseWork:
    """Units = noise samples: unit j of image b is copy j of ``gaussian_noise(xs, sigma, n, seed)``
    (Philox counter (b, j)), whichever forward it lands in. Segments that are consecutive in
    that flat (b * n + j) order are written by one call, into one reused buffer."""

    granule = 1

    def __init__(self, smooth: Smooth, xs: torch.Tensor, n: int, seed: int) -> None:
        self.smooth, self.xs, self.n, self.seed = smooth, xs, n, seed
        self.votes = top1_votes(smooth.num_classes)
        self.buffer: torch.Tensor | None = None

    def build(self, segments: Sequence[Segment]) -> torch.Tensor:
        rows = sum(s.rows for s in segments)
        if self.buffer is None or self.buffer.shape[0] < rows:
            self.buffer = torch.empty((rows, *self.xs.shape[1:]), dtype=self.xs.dtype, device=self.xs.device)
        out = self.buffer[:rows]
        row, i = 0, 0
        while i < len(segments):  # flat runs: one kernel call each
            first = segments[i].image * self.n + segments[i].first
            end, last = segments[i].image * self.n + segments[i].end, segments[i].image
            i += 1
            while i < len(segments) and segments[i].image * self.n + segments[i].first == end:
                end, last = segments[i].image * self.n + segments[i].end, segments[i].image
                i += 1
            # images 0 .. last: the op indexes the flat grid; only the samples asked for are computed
            gaussian_noise(
                self.xs[: last + 1], self.smooth.sigma, self.n, seed=self.seed, start=first, count=end - first,
                out=out[row : row + end - first], backend=self.smooth.backend,
            )
            row += end - first
        return out

    def forward(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.smooth.logits(inputs[start:stop])
