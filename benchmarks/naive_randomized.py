"""The randomized smoothers' loops written like the authors' code (benchmark baselines):
per batch, materialize the noised / ablated copies with repeat and temporaries, run the model,
send the predictions to the host and count them there."""
from __future__ import annotations

import math

import numpy as np
import torch
from statsmodels.stats.proportion import proportion_confint

from fastsmooth.ops import dssn_levels, dssn_template
from naive_l0 import naive_ablated_batch


def _counts(predictions: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(predictions.cpu().numpy(), minlength=num_classes)


@torch.no_grad()
def naive_dssn_certify(net, x, sigma, num_classes, batch_size, seed=0):
    """The DSSN authors' evaluation: split values as a float tensor per batch of offsets."""
    lam, levels = dssn_levels(sigma=sigma)
    v = dssn_template(seed, levels, tuple(x.shape[1:]), x.device).float().reshape(1, -1)
    results = []
    for image in x:
        counts = np.zeros(num_classes, dtype=int)
        flat = image.reshape(1, -1)
        for start in range(0, levels, batch_size):
            k = torch.arange(start, min(levels, start + batch_size), device=x.device, dtype=torch.float32)
            s = ((k[:, None] + v) % levels + 0.5) / 255
            batch = ((flat > s).float() + s.clamp(max=1.0)) / 2
            counts += _counts(net(batch.reshape(-1, *x.shape[1:])).argmax(1), num_classes)
        order = np.argsort(-counts, kind="stable")
        c, r = order[0], order[1]
        results.append((int(c), math.floor((counts[c] - counts[r] - (r < c)) / 2) / 255))
    return results


@torch.no_grad()
def _sample(net, x, num, batch_size, num_classes, make_batch):
    counts = np.zeros(num_classes, dtype=int)
    for _ in range(math.ceil(num / batch_size)):
        this = min(batch_size, num)
        num -= this
        counts += _counts(net(make_batch(this)).argmax(1), num_classes)
    return counts


def _cohen_style(net, x, n0, n, alpha, batch_size, num_classes, make_batch, radius):
    c = int(_sample(net, x, n0, batch_size, num_classes, make_batch).argmax())
    n_a = _sample(net, x, n, batch_size, num_classes, make_batch)[c]
    p = proportion_confint(int(n_a), n, alpha=2 * alpha, method="beta")[0]
    return c, radius(p)


def naive_uniform_certify(net, x, sigma, n0, n, alpha, batch_size, num_classes):
    """Uniform additive noise (the DSSN paper's baseline): repeat, add U(-lambda, lambda)."""
    lam = sigma * math.sqrt(3)
    image = x[0]

    def make(m):
        batch = image.repeat((m, 1, 1, 1))
        return batch + (torch.rand_like(batch) * 2 - 1) * lam

    return _cohen_style(net, image, n0, n, alpha, batch_size, num_classes, make, lambda p: 2 * lam * (p - 0.5))


def naive_l0_certify(net, x, keep, n0, n, alpha, batch_size, num_classes):
    """Randomized ablation (Levine & Feizi): a randperm per sample; radius search omitted (it
    is timed separately in test_l0_ablation.py)."""
    image = x[0]
    return _cohen_style(net, image, n0, n, alpha, batch_size, num_classes,
                        lambda m: naive_ablated_batch(image, keep, m), lambda p: p)
