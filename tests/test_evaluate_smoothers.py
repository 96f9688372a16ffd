"""fastsmooth.evaluate works with every kind of smoother, through the shared
``evaluate_batch`` / ``certificate_name`` protocol, and its rows are that protocol's output."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import fastsmooth
from fastsmooth.evaluate import read_results


def _net(in_channels: int) -> nn.Module:
    torch.manual_seed(int(torch.randint(1 << 30, ())))
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 6 * 7, 4)).eval()


SMOOTHERS = {
    "dssn": lambda: fastsmooth.DSSN(_net(2), 4, sigma=0.1, batch_size=64),
    "ablation": lambda: fastsmooth.RandomizedAblation(
        _net(4), 4, keep=5, n0=20, n=100, generator=torch.Generator().manual_seed(3)),
    "ssn": lambda: fastsmooth.SSN(_net(2), 4, sigma=0.5, n0=16, n=100, generator=torch.Generator().manual_seed(3)),
    "gaussian": lambda: fastsmooth.Smooth(_net(2), 4, 0.25, n0=16, n=100, alpha=0.01, batch_size=64),
    "column": lambda: fastsmooth.ColumnSmoothing(_net(4), 4, size=2, threshold=0.3),
}


@pytest.mark.parametrize("name", SMOOTHERS)
def test_evaluate_tabulates_evaluate_batch(name, tmp_path):
    smoother = SMOOTHERS[name]()
    images = torch.randint(0, 256, (5, 2, 6, 7)).float() / 255  # quantized, as DSSN requires
    labels = torch.randint(4, (5,))
    path = tmp_path / f"{name}.tsv"
    summary = fastsmooth.evaluate(smoother, TensorDataset(images, labels), levels=(0.0, 0.01), output=path, progress=False)
    rows = read_results(path).rows
    assert [r.index for r in rows] == list(range(5)) and summary.count == 5
    header = path.read_text().splitlines()[1].split("\t")
    assert header[3] == smoother.certificate_name
    if name in ("dssn", "column"):  # deterministic: the file holds exactly evaluate_batch's output
        direct = smoother.evaluate_batch(images)
        assert [r.prediction for r in rows] == direct.prediction.tolist()
        assert [r.certificate for r in rows] == pytest.approx(direct.certificate.tolist(), abs=1e-9)
    correct = [r.prediction == r.label for r in rows]
    assert summary.clean_accuracy == pytest.approx(sum(correct) / 5)
    for level in (0.0, 0.01):
        want = sum(c and r.certificate >= level for c, r in zip(correct, rows)) / 5
        assert summary.certified_accuracy[level] == pytest.approx(want)
