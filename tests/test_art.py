"""fastsmooth.integrations.art against the real ART package (adversarial-robustness-toolbox 1.20)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

pytest.importorskip("art")
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing  # noqa: E402
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing  # noqa: E402

from fastsmooth.certificates.counts import top_two  # noqa: E402
from fastsmooth.certificates.patch import band_delta, block_delta, certify_counts  # noqa: E402
from fastsmooth.integrations import art as fs_art  # noqa: E402
from fastsmooth.smoothing import BlockSmoothing, ColumnSmoothing, RowSmoothing  # noqa: E402

SIDE, CLASSES = 12, 10


def cnn(in_channels: int, probabilities: bool = False) -> nn.Module:
    """A small CNN with weights large enough that softmax outputs often pass the threshold."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * (SIDE // 2) ** 2, CLASSES),
    )
    with torch.no_grad():
        net[-1].weight.mul_(30)
    return nn.Sequential(net, nn.Softmax(dim=1)) if probabilities else net


def derandomized(ablation: str, size: int, threshold: float = 0.2, logits: bool = True, **kwargs) -> PyTorchDeRandomizedSmoothing:
    model = cnn(2, probabilities=not logits)
    return PyTorchDeRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, SIDE, SIDE), nb_classes=CLASSES,
        ablation_size=size, algorithm="levine2020", ablation_type=ablation, threshold=threshold, logits=logits,
        device_type="cpu", verbose=False, **kwargs,
    )


def images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, size=(count, 1, SIDE, SIDE)) / 255).astype(np.float32)
    return x, rng.integers(0, CLASSES, size=count)


def exact_gap_images(counts: torch.Tensor, delta: int) -> torch.Tensor:
    """Images whose gap between winner and (smallest-index) runner-up is exactly 2 Delta: the
    only ones where ART's certificate may differ from the spec's."""
    top, second = top_two(counts)
    gap = counts.gather(1, top[:, None])[:, 0] - counts.gather(1, second[:, None])[:, 0]
    return gap == 2 * delta


@pytest.mark.parametrize(
    ("ablation", "size", "expected"),
    [("column", 3, ColumnSmoothing), ("row", 2, RowSmoothing), ("block", 4, BlockSmoothing)],
)
def test_counts_equal_arts(ablation, size, expected) -> None:
    estimator = derandomized(ablation, size)
    smoother = fs_art.smoother(estimator, batch_size=50)
    assert type(smoother) is expected and smoother.size == size and smoother.threshold == 0.2
    x, _ = images(6, seed=1)
    theirs = estimator.predict(x, batch_size=50)  # ART: cumulative votes over every ablation
    ours = smoother.counts(torch.from_numpy(x))
    assert ours.sum() > 0 and (ours > 0).sum(dim=1).max() > 1  # the votes are not trivial
    np.testing.assert_array_equal(ours.numpy(), theirs.astype(np.int64))


def votes_through_arts_ablator(estimator: PyTorchDeRandomizedSmoothing, x: np.ndarray) -> np.ndarray:
    """The votes ART's eval_and_certify sums for a column estimator on x (already through its
    preprocessing): ART's ablator at every position, the model, softmax (when logits=True),
    ``>= threshold``. (ART's ``predict`` cannot serve here: with logits=False it adds boolean
    arrays, so its "counts" saturate at 1; with preprocessing it normalizes the ablated,
    encoded batch once more.)"""
    counts = np.zeros((len(x), CLASSES), dtype=np.int64)
    with torch.no_grad():
        for position in range(x.shape[-1]):
            outputs = estimator.model(estimator.ablator.forward(np.copy(x), column_pos=position))
            if estimator.logits:
                outputs = torch.nn.functional.softmax(outputs, dim=1)
            counts += (outputs >= estimator.threshold).numpy()
    return counts


def test_counts_on_probabilities() -> None:
    """logits=False: the model returns probabilities, compared to the threshold as they are."""
    estimator = derandomized("column", 3, threshold=0.3, logits=False)
    x, _ = images(5, seed=2)
    ours = fs_art.smoother(estimator).counts(torch.from_numpy(x))
    assert (ours > 1).any()
    np.testing.assert_array_equal(ours.numpy(), votes_through_arts_ablator(estimator, x))


@pytest.mark.parametrize(
    ("ablation", "size", "delta", "count", "patches"),
    [("column", 3, band_delta, 16, (1, 2, 3)), ("block", 4, block_delta, 6, (2,))],  # ART's block loop is slow
)
def test_eval_and_certify_equals_art(ablation, size, delta, count, patches) -> None:
    estimator = derandomized(ablation, size)
    x, y = images(count, seed=3)
    counts = fs_art.smoother(estimator).counts(torch.from_numpy(x))
    prediction = certify_counts(counts, 0)[0].numpy()
    y[::2] = prediction[::2]  # half the labels right, so certified accuracy is not trivially 0
    for patch in patches:
        accuracy, certified = fs_art.eval_and_certify(estimator, x, y, size_to_certify=patch, batch_size=count - 1,
                                                      verbose=False)  # two batches of images, the last short
        art_accuracy, art_certified = estimator.eval_and_certify(x, y, size_to_certify=patch,
                                                                 batch_size=count - 1, verbose=False)
        assert accuracy.dtype == art_accuracy.dtype == torch.float32
        assert accuracy.item() == art_accuracy.item()
        expected = certify_counts(counts, delta(patch, size))[1].numpy() & (prediction == y)
        assert certified.item() == pytest.approx(expected.mean())
        # ART's rule can differ only on correct images whose gap is exactly 2 Delta
        ties = (exact_gap_images(counts, delta(patch, size)).numpy() & (prediction == y)).sum()
        assert abs(certified.item() - art_certified.item()) * len(y) <= ties + 1e-4
        if ties == 0:
            assert certified.item() == art_certified.item()


def test_preprocessing_is_the_estimators() -> None:
    """ART normalizes x with its preprocessing before the [x, 1 - x] encoding; the smoother
    gets it as mean / std, applied in its kernel."""
    estimator = derandomized("column", 2, preprocessing=(0.25, 0.5))
    smoother = fs_art.smoother(estimator)
    assert smoother.mean == [0.25] and smoother.std == [0.5]
    x, y = images(8, seed=4)
    counts = smoother.counts(torch.from_numpy(x))
    np.testing.assert_array_equal(counts.numpy(), votes_through_arts_ablator(estimator, (x - 0.25) / 0.5))
    y[:4] = certify_counts(counts, 0)[0].numpy()[:4]
    ours = fs_art.eval_and_certify(estimator, x, y, size_to_certify=1, verbose=False)
    theirs = estimator.eval_and_certify(x, y, size_to_certify=1, verbose=False)
    assert ours[0].item() == theirs[0].item() > 0
    ties = (exact_gap_images(counts, band_delta(1, 2)).numpy() & (certify_counts(counts, 0)[0].numpy() == y)).sum()
    assert abs(ours[1].item() - theirs[1].item()) * len(y) <= ties + 1e-4


def test_arts_tie_rule_is_unsound_and_ours_is_not() -> None:
    """Winner 1 leads classes 0 and 3 by exactly 2 Delta. The runner-up is class 0 (the
    smallest index among the second-largest counts): a patch moving Delta votes makes 0 tie
    with 1, and the tie goes to 0, so the image is not certified. ART reads the runner-up from
    kthvalue, and certifies whenever that index is one of the larger ones."""
    estimator = derandomized("column", 2)
    delta = band_delta(1, 2)  # m = 1, s = 2: Delta = 2
    unsound = 0
    for order in range(20):  # kthvalue's index among equal counts depends on the layout
        counts = torch.zeros(1, CLASSES, dtype=torch.float64)
        counts[0, 1] = 10 + order
        counts[0, 0] = counts[0, 3] = 10 + order - 2 * delta
        counts[0, 5 + order % 5] = order % 3  # vary the rest
        cert, _, _ = estimator.ablator.certify(counts.numpy(), size_to_certify=1, label=np.array([1]))
        ours = certify_counts(counts.long(), delta)[1]
        assert not ours.item()
        unsound += int(cert.item())
    assert unsound > 0, "ART's kthvalue returned the smallest runner-up every time: this test shows nothing"


def test_block_certified_accuracy_counts_tie_break_images() -> None:
    """ART's block certify computes cert_and_correct before adding the tie-break certificates."""
    estimator = derandomized("block", 2)
    counts = torch.zeros(1, CLASSES, dtype=torch.float64)
    delta = block_delta(1, 2)  # (1 + 2 - 1)^2 = 4
    counts[0, 2], counts[0, 7] = 30 + 2 * delta, 30  # winner 2 < runner-up 7, gap exactly 2 Delta
    cert, cert_and_correct, _ = estimator.ablator.certify(counts.numpy(), size_to_certify=1, label=np.array([2]))
    assert cert.item() and not cert_and_correct.item()  # certified, yet not counted by ART
    assert certify_counts(counts.long(), delta)[1].item()  # counted by fastsmooth


def test_refuses_salman2021_on_a_cnn_and_other_estimators() -> None:
    estimator = derandomized("column", 2)
    estimator.algorithm = "salman2021"  # a CNN under salman2021 (ViT estimators: tests/test_vit_art.py)
    with pytest.raises(ValueError, match="salman2021.*CNN"):
        fs_art.smoother(estimator)
    with pytest.raises(TypeError, match="PyTorchDeRandomizedSmoothing"):
        fs_art.eval_and_certify(object(), np.zeros((1, 1, 4, 4)), np.zeros(1), 1)
    with pytest.raises(TypeError, match="PyTorchRandomizedSmoothing"):
        fs_art.certify(derandomized("column", 2), np.zeros((1, 1, SIDE, SIDE)), n=10)


class Threshold(nn.Module):
    """Class 1 iff the (preprocessed) single pixel exceeds ``cut``: under N(0, sigma^2) noise on
    the raw pixel x, P(class 1) = Phi((x - cut_raw) / sigma), known exactly."""

    def __init__(self, cut: float) -> None:
        super().__init__()
        self.cut = cut
        self.scale = nn.Parameter(torch.tensor(1000.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1)[:, :1] - self.cut) * self.scale
        return torch.cat([-z, z], dim=1)


def test_gaussian_certificates_agree_with_art_statistically() -> None:
    sigma, n0, n, alpha = 0.1, 100, 2000, 0.001  # images stay in [0, 1]
    # preprocessing (0.1, 2): the model sees z = (x - 0.1) / 2, so z > 0.2 iff x > 0.5
    estimator = PyTorchRandomizedSmoothing(
        model=Threshold(0.2), loss=nn.CrossEntropyLoss(), input_shape=(1, 1, 1), nb_classes=2,
        preprocessing=(0.1, 2.0), device_type="cpu", sample_size=n0, scale=sigma, alpha=alpha,
    )
    x = np.array([0.5 + sigma * norm.ppf(p) for p in (0.01, 0.1, 0.25, 0.8, 0.93, 0.999)], dtype=np.float32)
    true_p = norm.cdf((x.astype(np.float64) - 0.5) / sigma)
    x = x.reshape(-1, 1, 1, 1)
    prediction, radius = fs_art.certify(estimator, x, n=n, batch_size=500, seed=0)
    np.random.seed(0)
    art_prediction, art_radius = estimator.certify(x, n=n, batch_size=500)
    assert prediction.dtype == np.int64 and radius.dtype == np.float64 and radius.shape == (6,)
    np.testing.assert_array_equal(prediction, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(art_prediction, prediction)
    p_class = np.where(prediction == 1, true_p, 1 - true_p)
    ours, theirs = norm.cdf(radius / sigma), norm.cdf(art_radius / sigma)  # p_lower of each
    # both lower bounds lie below the true probability, and within sampling noise of each other
    assert (ours <= p_class).all() and (theirs <= p_class).all()
    spread = np.sqrt(2 * p_class * (1 - p_class) / n)
    assert (np.abs(ours - theirs) <= 5 * spread + 2e-3).all()
    # radius within the exact CP bound's reach: sigma * Phi^-1(p_lower) with p_lower < p
    assert (radius < sigma * norm.ppf(p_class) + 1e-9).all()
