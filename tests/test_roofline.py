"""The roofline table (benchmarks/roofline.py): its multiply-add counter and its arithmetic."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import roofline  # noqa: E402


def test_multiply_adds_counts_convolutions_and_linear_layers_by_hand():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 4 x 5 x 6 outputs, each 2 * 3 * 3 multiply-adds
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # 4 x 5 x 6 outputs, each 2 * 3 * 3
        nn.Flatten(),
        nn.Linear(4 * 5 * 6, 7),  # 7 outputs, each 120
    )
    assert roofline.multiply_adds(net, (2, 5, 6)) == 120 * 18 + 120 * 18 + 7 * 120


def test_known_network_sizes():
    from fastsmooth.models import build

    # ResNet-18 on 32 x 32 CIFAR-10 is the well-known 0.56 G multiply-adds (6 input channels add
    # 64 * 3 * 9 * 1024 to the first convolution's 3-channel count).
    macs = roofline.multiply_adds(build("cifar_resnet18"), (6, 32, 32))
    assert 0.55e9 < macs < 0.57e9


def test_row_arithmetic():
    (f,) = roofline.table(only=["column, MNIST"])
    assert f["forwards"] == 28
    assert f["created_bytes"] == 28 * 2 * 28 * 28 * 4  # float32, 2C = 2 channels
    assert f["create_s"] == pytest.approx(f["created_bytes"] / 4.8e12)
    assert f["model_s"] == pytest.approx(2 * f["macs"] / (989e12 * roofline.MATMUL_FRACTION))
    assert f["engine_share"] == pytest.approx(f["create_s"] / (f["create_s"] + f["model_s"]))
    table = roofline.markdown([f])
    assert table.splitlines()[2].startswith("| column, MNIST (s=2) | 28 | 176 kB | 36.6 ns |")


def test_gpu_check_refuses_a_cpu_device():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        roofline.gpu_check("cpu")
