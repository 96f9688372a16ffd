"""ART's own certification against the same ART estimator certified through fastsmooth.

One script, one call changed: ``estimator.eval_and_certify(x, y, size_to_certify=5)`` versus
``fastsmooth.integrations.art.eval_and_certify(estimator, x, y, size_to_certify=5)`` (and
``estimator.certify(x, n)`` versus ``...art.certify(estimator, x, n)`` for Gaussian smoothing),
on the same estimator, model, images and batch size; whole calls interleaved round by round.

- Column (s = 2) and block (s = 4) smoothing, levine2020, theta = 0.3, on the papers' MNIST CNN
  with 28 x 28 images: ART runs one forward per ablation position for all images of a batch;
  fastsmooth fills every forward with up to ``batch_size`` ablated images.
- Gaussian smoothing (sigma = 0.25, n0 = 100, n = 1000) on a small CIFAR-sized CNN: ART draws
  the noise with NumPy on the host, one image at a time.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("art")
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing  # noqa: E402
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing  # noqa: E402

from conftest import quick, run, sync  # noqa: E402
from fastsmooth.integrations import art as fs_art  # noqa: E402
from fastsmooth.models import build  # noqa: E402

DEVICE = "gpu" if torch.cuda.is_available() else "cpu"
PATCH_IMAGES = {"column": 64 if quick() else 1000, "block": 4 if quick() else 100}
SIZES = {"column": 2, "block": 4}
BATCH = 128


def _mnist(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (count, 1, 28, 28)) / 255).astype(np.float32), rng.integers(0, 10, count)


@pytest.mark.parametrize("ablation", ["column", "block"])
def test_art_patch_certification(benchmark, ablation) -> None:
    torch.manual_seed(0)
    model = build("mnist_cnn", in_channels=2, num_classes=10)
    estimator = PyTorchDeRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
        ablation_size=SIZES[ablation], algorithm="levine2020", ablation_type=ablation, threshold=0.3, logits=True,
        device_type=DEVICE, verbose=False,
    )
    x, y = _mnist(PATCH_IMAGES[ablation])

    def art_own():
        result = estimator.eval_and_certify(x, y, size_to_certify=5, batch_size=BATCH, verbose=False)
        sync()
        return result

    def fastsmooth_path():
        result = fs_art.eval_and_certify(estimator, x, y, size_to_certify=5, batch_size=BATCH, verbose=False)
        sync()
        return result

    group = (f"ART {ablation} smoothing (s={SIZES[ablation]}, 5x5 patch), MNIST, MNIST CNN, "
             f"batch {BATCH}, {len(x)} images")
    ours = run(benchmark, fastsmooth_path, group=group, role="fastsmooth (ART estimator)", rounds=3, primary=True,
               images=len(x), interleaved={"ART 1.20 eval_and_certify": art_own})
    theirs = art_own()
    assert ours[0].item() == theirs[0].item()  # same predictions: same counts


def test_art_gaussian_certification(benchmark) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )
    n = 1000 if quick() else 100_000
    estimator = PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10, device_type=DEVICE,
        sample_size=100, scale=0.25, alpha=0.001,
    )
    x = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)

    def art_own():
        return estimator.certify(x, n=n, batch_size=BATCH)

    def fastsmooth_path():
        result = fs_art.certify(estimator, x, n=n, batch_size=BATCH, seed=0)
        sync()
        return result

    group = f"ART Gaussian (sigma=0.25, n0=100, n={n}), CIFAR 3x32x32, small CNN, batch {BATCH}, {len(x)} images"
    prediction, _ = run(benchmark, fastsmooth_path, group=group, role="fastsmooth (ART estimator)", rounds=3,
                        primary=True, images=len(x), interleaved={"ART 1.20 certify": art_own})
    assert prediction.shape == (len(x),)
