"""The authors' sampling loop (Cohen et al., ``core.Smooth``), transcribed as the benchmark baseline.

Kept as written there: ``x.repeat`` a batch, ``torch.randn_like`` noise, a forward pass, then the
predictions go to the host and are counted with a Python loop, once per batch. Only two
changes: noise is drawn on x's device (the original hard-codes 'cuda') and the binomial test is
``scipy.stats.binomtest`` (``binom_test`` was removed from SciPy).
"""
from __future__ import annotations

from math import ceil

import numpy as np
import torch
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint


class NaiveSmooth:
    ABSTAIN = -1

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float) -> None:
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int) -> tuple[int, float]:
        self.base_classifier.eval()
        counts_selection = self._sample_noise(x, n0, batch_size)
        c_a = counts_selection.argmax().item()
        counts_estimation = self._sample_noise(x, n, batch_size)
        n_a = counts_estimation[c_a].item()
        p_a = proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]
        if p_a < 0.5:
            return NaiveSmooth.ABSTAIN, 0.0
        return c_a, self.sigma * norm.ppf(p_a)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int) -> int:
        self.base_classifier.eval()
        counts = self._sample_noise(x, n, batch_size)
        top2 = counts.argsort()[::-1][:2]
        count1, count2 = counts[top2[0]], counts[top2[1]]
        if binomtest(int(count1), int(count1 + count2), p=0.5).pvalue > alpha:
            return NaiveSmooth.ABSTAIN
        return int(top2[0])

    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int) -> np.ndarray:
        with torch.no_grad():
            counts = np.zeros(self.num_classes, dtype=int)
            for _ in range(ceil(num / batch_size)):
                this_batch_size = min(batch_size, num)
                num -= this_batch_size
                batch = x.repeat((this_batch_size, 1, 1, 1))
                noise = torch.randn_like(batch, device=x.device) * self.sigma
                predictions = self.base_classifier(batch + noise).argmax(1)
                counts += self._count_arr(predictions.cpu().numpy(), self.num_classes)
            return counts

    def _count_arr(self, arr: np.ndarray, length: int) -> np.ndarray:
        counts = np.zeros(length, dtype=int)
        for idx in arr:
            counts[idx] += 1
        return counts
