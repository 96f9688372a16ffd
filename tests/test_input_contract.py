"""The input contract of every smoother's public entry point (docs/semantics.md §6): finite
images in [0, 1], 4-D batches (one [C, H, W] image only where an API takes one image), labels
in [0, num_classes), empty batches alike everywhere, any real / integral number type."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastsmooth
from fastsmooth.smoothing import Certified


def _net(in_channels: int, k: int = 4, h: int = 6, w: int = 7) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * h * w, k))


# name -> (smoother on [B, 2, 6, 7] images, the call that certifies a batch)
SMOOTHERS = {
    "column": lambda: fastsmooth.ColumnSmoothing(_net(4), 4, size=2, threshold=0.3),
    "block": lambda: fastsmooth.BlockSmoothing(_net(4), 4, size=2),
    "multi-band": lambda: fastsmooth.MultiBandSmoothing(_net(4), 4, size=2, keep=2),
    "randomized-band": lambda: fastsmooth.RandomizedBandSmoothing(_net(4), 4, size=2, n0=5, n=20),
    "ablation": lambda: fastsmooth.RandomizedAblation(_net(4), 4, keep=5, n0=5, n=20),
    "dssn": lambda: fastsmooth.DSSN(_net(2), 4, sigma=0.1),
    "ssn": lambda: fastsmooth.SSN(_net(2), 4, sigma=0.25, n0=5, n=20),
    "uniform": lambda: fastsmooth.UniformSmoothing(_net(2), 4, sigma=0.25, n0=5, n=20),
    "gaussian": lambda: fastsmooth.Smooth(_net(2), 4, 0.25, n0=5, n=20),
}


def _images(b: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (b, 2, 6, 7), generator=torch.Generator().manual_seed(1)).float() / 255


@pytest.mark.parametrize("name", SMOOTHERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_images_are_refused(name, bad):
    """Item 2: NaN / Inf images got the largest certificates; now every smoother refuses them."""
    x = _images()
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"xs?\[1, 0, 2, 3\] = .*finite"):
        SMOOTHERS[name]().evaluate_batch(x)


@pytest.mark.parametrize("name", SMOOTHERS)
def test_pixels_outside_unit_interval_are_refused(name):
    """Item 3: images in [0, 255] and negative values were accepted."""
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by 255"):
        SMOOTHERS[name]().evaluate_batch(_images() * 255)
    x = _images()
    x[0, 1, 0, 0] = -0.5
    with pytest.raises(ValueError, match=r"xs?\[0, 1, 0, 0\] = -0.5"):
        SMOOTHERS[name]().evaluate_batch(x)


def test_nan_specific_entry_points_of_the_issue():
    nan = torch.full((1, 1, 28, 28), math.nan)
    col = fastsmooth.ColumnSmoothing(_net(2, 10, 28, 28), 10, size=2)
    with pytest.raises(ValueError, match="finite"):
        col.certified_patch_size(nan)
    with pytest.raises(ValueError, match="finite"):
        fastsmooth.RandomizedAblation(_net(2, 10, 28, 28), 10, keep=45).certify(nan, 10, 20)
    with pytest.raises(ValueError, match="finite"):
        fastsmooth.Smooth(_net(1, 10, 28, 28), 10, 0.25).certify(nan[0], 10, 20, 0.001, 10)
    dssn = fastsmooth.DSSN(_net(1, 10, 28, 28), 10, sigma=0.25, quantize=True)
    with pytest.raises(ValueError, match="finite") as err:
        dssn.certify(nan)
    assert "quantize" not in str(err.value)  # NaN is not a quantization problem


@pytest.mark.parametrize("name", SMOOTHERS)
def test_empty_batch_gives_empty_results(name):
    """Item 7: the patch smoothers crashed with IndexError on an empty batch."""
    result = SMOOTHERS[name]().evaluate_batch(_images(0))
    assert result.prediction.shape == (0,) and result.certificate.shape == (0,)


@pytest.mark.parametrize("name", SMOOTHERS)
def test_three_d_input_is_refused_alike_by_batch_apis(name):
    """Item 11: ColumnSmoothing accepted [C, H, W], DSSN / l0 / SSN refused it."""
    with pytest.raises(ValueError, match=r"4-D.*xs?\[None\]"):
        SMOOTHERS[name]().evaluate_batch(_images(1)[0])


def test_smooth_keeps_the_single_image_api():
    smooth = SMOOTHERS["gaussian"]()
    label, radius = smooth.certify(_images(1)[0], 5, 20, 0.001, 10, seed=0)
    assert isinstance(label, int) and isinstance(radius, float)
    with pytest.raises(ValueError, match=r"single image tensor \[C, H, W\]"):
        smooth.certify(_images(2), 5, 20, 0.001, 10)


def test_labels_out_of_range_are_refused_by_evaluate():
    """Item 4: labels 10, 99, -1 passed; -1 (the abstain value) counted abstentions as correct."""
    smoother = SMOOTHERS["gaussian"]()
    for bad in (4, 99, -1):
        labels = torch.tensor([0, bad, 1])
        with pytest.raises(ValueError, match=rf"label of image 1 = {bad}: labels must lie in \[0, num_classes\)"):
            fastsmooth.evaluate(smoother, TensorDataset(_images(), labels), progress=False)


def test_evaluate_refuses_grayscale_batches_without_channel_axis():
    """Item 11: evaluate on [N, 28, 28] images treated N as channels."""
    images = torch.rand(6, 6, 7)
    smoother = SMOOTHERS["column"]()
    with pytest.raises(ValueError, match=r"image 0 .* shape \(6, 7\), expected \[C, H, W\]"):
        fastsmooth.evaluate(smoother, TensorDataset(images, torch.zeros(6, dtype=torch.long)), progress=False)
    loader = DataLoader(TensorDataset(images, torch.zeros(6, dtype=torch.long)), batch_size=3)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        fastsmooth.evaluate(smoother, loader, progress=False)


def test_model_output_and_dtype_errors():
    """Item 11: raw torch errors for a tuple output, the wrong number of rows, another dtype, a meta model."""
    x = _images()
    tuple_model = lambda inputs: (inputs.flatten(1)[:, :4], None)  # noqa: E731
    with pytest.raises(TypeError, match="returned a tuple"):
        fastsmooth.DSSN(tuple_model, 4, sigma=0.1).certify(x)
    rows_model = lambda inputs: inputs.flatten(1)[:1, :4]  # noqa: E731
    with pytest.raises(ValueError, match=r"returned shape \(1, 4\)"):
        fastsmooth.DSSN(rows_model, 4, sigma=0.1).certify(x)
    with pytest.raises(TypeError, match=r"float64 but the base model's parameters are torch.float32"):
        fastsmooth.DSSN(_net(2), 4, sigma=0.1).certify(x.double())
    with torch.device("meta"):
        meta = _net(2)
    with pytest.raises(ValueError, match="meta device"):
        fastsmooth.DSSN(meta, 4, sigma=0.1).certify(x)


def test_ssn_alpha_is_checked_before_halving_and_everywhere():
    """Item 8: --alpha 2 reported 'got 1.0'; SSN.certify(alpha=0.9) and SSN(n=0, alpha=5) were accepted."""
    with pytest.raises(ValueError, match=r"alpha \(two-sided\) must be .* \(0, 1\), got 2.0"):
        fastsmooth.SSN(_net(2), 4, sigma=0.25, alpha=2)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        fastsmooth.SSN(_net(2), 4, sigma=0.25, n=0)
    ssn = fastsmooth.SSN(_net(2), 4, sigma=0.25, n0=5, n=20, sided="one")
    with pytest.raises(ValueError, match=r"alpha \(one-sided\) must be .* \(0, 0.5\), got 0.9"):
        ssn.certify(_images(), alpha=0.9)


def test_numbers_of_any_real_or_integral_type():
    """Item 14: np.float32 / 0-d tensor sigma and np.int64 num_classes raised ValueError in Smooth."""
    for sigma in (np.float32(0.25), torch.tensor(0.25), np.float64(0.25), 0.25):
        smooth = fastsmooth.Smooth(_net(2), np.int64(4), sigma)
        assert smooth.sigma == pytest.approx(0.25) and smooth.num_classes == 4
    smooth = fastsmooth.Smooth(_net(2), torch.tensor(4), 0.25)
    label, _ = smooth.certify(_images(1)[0], np.int64(5), torch.tensor(20), np.float32(0.01), np.int32(10), seed=0)
    assert isinstance(label, int)
    col = fastsmooth.ColumnSmoothing(_net(4), np.int64(4), size=np.int32(2), threshold=np.float32(0.3),
                                     batch_size=torch.tensor(7))
    assert col.certify(_images(), patch_size=np.int64(1))[0].shape == (3,)
    assert fastsmooth.DSSN(_net(2), 4, sigma=np.float32(0.1), seed=np.int64(3)).levels > 0
    with pytest.raises(TypeError, match="sigma must be a real number"):
        fastsmooth.Smooth(_net(2), 4, "0.25")
    with pytest.raises(TypeError, match="num_classes must be an integer"):
        fastsmooth.Smooth(_net(2), 4.0, 0.25)


def test_range_messages_are_readable():
    """Item 12: 'n must be in [1, 4611686018427387904]'."""
    with pytest.raises(ValueError) as err:
        fastsmooth.ops.ablate_pixels(_images(1), keep=3, n=2**62 + 1)
    assert "4611686018427387904" not in str(err.value) and "2**" in str(err.value)


def test_evaluate_max_zero_is_an_error_not_a_table_of_nan():
    with pytest.raises(ValueError, match="max must be a positive integer, got 0"):
        fastsmooth.evaluate(SMOOTHERS["column"](), TensorDataset(_images(), torch.zeros(3, dtype=torch.long)), max=0,
                            progress=False)


def test_valid_input_passes_unchanged():
    x = _images()
    result = SMOOTHERS["column"]().evaluate_batch(x)
    assert isinstance(result, Certified) and result.prediction.shape == (3,)
