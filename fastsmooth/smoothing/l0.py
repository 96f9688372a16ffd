"""l0 randomized ablation smoother (Levine & Feizi; semantics.md §2): predict and certify by sampling.

Each sample keeps ``keep`` uniformly random pixels of the image (``ablate_pixels``); the base
model sees the 2C-channel encoding and votes for its top-1 class.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fastsmooth._validation import check_image_batch, check_int, check_real
from fastsmooth.certificates.counts import top_two
from fastsmooth.certificates.l0 import l0_radius
from fastsmooth.ops.pixel_ablation import ablate_pixels
from fastsmooth.engine import Everything, Sequential, TwoStage
from fastsmooth.engine.works import SeededWork
from fastsmooth.ops._philox import seed_from
from fastsmooth.engine.compiled import Compile
from fastsmooth.smoothing.base import BaseSmoother, Certified, Decided, MemoryFormat
from fastsmooth.smoothing.sequential import decide_sequentially, predict_fixed, predict_sequentially
from fastsmooth.stats import clopper_pearson_lower

ABSTAIN = -1


def _check_alpha(alpha: float) -> float:
    return check_real(alpha, "alpha", 0, 0.5, low_open=True, high_open=True)


class RandomizedAblation(BaseSmoother):
    """Smoothed classifier over random ``keep``-pixel ablations.

    Args:
        model: base classifier taking (N, 2C, H, W) ablated encodings, returning logits.
        num_classes: number of classes.
        keep: pixels retained per sample (k of the paper: 45 MNIST, 75 CIFAR-10, 1000 ImageNet).
        batch_size: most samples per forward pass.
        mean, std: per-channel normalization applied before the [v, 1 - v] encoding.
        n0, n, alpha: the defaults of :meth:`certify`, used by :meth:`evaluate_batch`.
        generator: CPU ``torch.Generator`` the sampling seeds are drawn from (reproducibility).
        backend, autocast, memory_format: as in :class:`BaseSmoother`.
    """

    doubles_channels = True

    certificate_name = "radius"
    randomized = True  # fastsmooth.evaluate seeds it per image (evaluate_batch's generator)

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        keep: int,
        batch_size: int | str = "auto",
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        *,
        n0: int = 1000,
        n: int = 10000,
        alpha: float = 0.05,
        backend: str = "auto",
        autocast: torch.dtype | None = None,
        memory_format: MemoryFormat = "auto",
        generator: torch.Generator | None = None,
        compile: Compile = False,
    ) -> None:
        super().__init__(
            model, num_classes, batch_size=batch_size, backend=backend, autocast=autocast, memory_format=memory_format,
            compile=compile,
        )
        self.keep = check_int(keep, "keep", 0)
        self.mean, self.std = mean, std
        self.n0 = check_int(n0, "n0", 1)
        self.n = check_int(n, "n", 1)
        self.alpha = _check_alpha(alpha)
        self.generator = generator

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        check_int(self.keep, "keep", 0, x.shape[2] * x.shape[3])
        return x.to(self.device)

    def _work(self, x: torch.Tensor, generator: torch.Generator | None = None) -> SeededWork:
        generator = generator if generator is not None else self.generator

        def op(image: torch.Tensor, n: int, seed: int) -> torch.Tensor:
            return ablate_pixels(image, self.keep, n, None, self.mean, self.std, seed=seed, backend=self.backend)

        return SeededWork(x, op, seed_from(generator, None), self.logits, self.num_classes)

    def counts(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Top-1 vote counts [B, num_classes] (int64) of n random ablations of every image."""
        x = self._images(x)
        n = check_int(n, "n", 1)
        return self.run_work(self._work(x), Everything(n), [(b, b) for b in range(x.shape[0])], x.device).counts

    def predict(self, x: torch.Tensor, n: int = 10000, alpha: float = 0.05, *, sequential: bool = False) -> torch.Tensor:
        """Predictions [B] (int64), -1 where the two-sided binomial test of the top two counts
        at p = 1/2 has p-value > alpha (abstain). ``sequential=True``: see :meth:`predict_batch`."""
        return self.predict_batch(x, n, alpha, sequential=sequential).prediction

    def predict_batch(
        self, x: torch.Tensor, n: int = 10000, alpha: float = 0.05, *, sequential: bool = False,
        generator: torch.Generator | None = None,
    ) -> Decided:
        """``predict`` with the forwards each image used: ``Decided(prediction, certified [B, 0],
        forwards)``. ``sequential=True``: n is the budget, and the binomial test runs at the
        anytime-valid looks of ``fastsmooth.engine.SequentialPredict`` (64, 96, 144, ... up to
        n, alpha split over the looks), each image stopping at the first look that passes
        (abstaining at n); P(returning a class other than g(x)) <= alpha either way."""
        alpha = _check_alpha(alpha)
        n = check_int(n, "n", 1)
        x = self._images(x)
        slots = [(b, b) for b in range(x.shape[0])]
        work = self._work(x, generator)
        if not sequential:
            return predict_fixed(self.run_work(work, Everything(n), slots, x.device).counts, alpha, n)
        return predict_sequentially(
            lambda decider: self.run_work(work, decider, slots, x.device).units, x.shape[0], n, alpha
        )

    def certify(self, x: torch.Tensor, n0: int = 1000, n: int = 10000, alpha: float = 0.05) -> Certified:
        """Cohen-style CERTIFY: n0 samples pick cA, n samples bound its probability from below.

        Returns ``Certified(prediction, radius)``: radius (float64) is the largest certified
        number of changed pixels (0 = certified at the clean point only); abstentions have
        prediction -1 and radius -1, distinct from a certified radius 0.
        """
        alpha = _check_alpha(alpha)
        x = self._images(x)
        B = x.shape[0]
        decider = TwoStage(n0, n, B, self.num_classes)
        counts = self.run_work(self._work(x), decider, [(b, b) for b in range(B)], x.device).counts.cpu()
        selection = decider.selection.cpu()
        guess = top_two(selection)[0]
        n_a = (counts - selection).gather(1, guess[:, None])[:, 0].numpy()
        p_lower = clopper_pearson_lower(n_a, np.full_like(n_a, n), alpha)
        radius = torch.from_numpy(l0_radius(p_lower, x.shape[2] * x.shape[3], self.keep))
        prediction = torch.where(radius >= 0, guess.cpu(), torch.full_like(guess.cpu(), ABSTAIN))
        return Certified(prediction, radius.to(torch.float64))

    def decide_batch(
        self, x: torch.Tensor, levels: Sequence[float], n0: int | None = None, n_max: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
        predict: bool = True,
    ) -> Decided:
        """Certified or not at each l0 radius of ``levels``, each image stopping as soon as it is
        decided (``fastsmooth.smoothing.sequential``: up to n0 samples choose the class, anytime-valid
        tests on the estimation samples; false certification <= alpha at each level).
        Abstains (-1) where radius >= 0 is not shown; ``predict=False`` does not decide that
        (-1 also where no level is certified, fewer samples). Defaults: the instance's n0, n,
        alpha; ``generator``, if given, replaces the instance's for this call."""
        n0 = self.n0 if n0 is None else check_int(n0, "n0", 1)
        n_max = self.n if n_max is None else check_int(n_max, "n_max", 1)
        alpha = self.alpha if alpha is None else _check_alpha(alpha)
        x = self._images(x)
        d, work = x.shape[2] * x.shape[3], self._work(x, generator)
        slots = [(b, b) for b in range(x.shape[0])]

        def execute(decider: Sequential) -> torch.Tensor:
            return self.run_work(work, decider, slots, x.device).units

        def radius(p: np.ndarray) -> np.ndarray:
            return l0_radius(p, d, self.keep).astype(np.float64)

        return decide_sequentially(execute, x.shape[0], levels, n0, n_max, alpha, radius, abstains=True,
                                   predict=predict)

    def evaluate_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Certified:
        """``certify`` with the instance's n0, n and alpha (the protocol of ``fastsmooth.evaluate``);
        ``generator``, if given, replaces the instance's for this call."""
        if generator is None:
            return self.certify(x, self.n0, self.n, self.alpha)
        saved, self.generator = self.generator, generator
        try:
            return self.certify(x, self.n0, self.n, self.alpha)
        finally:
            self.generator = saved
