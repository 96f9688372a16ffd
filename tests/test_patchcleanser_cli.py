"""The command line's patchcleanser method: train -> certify round trip against evaluate, level mode."""
from __future__ import annotations

import pytest
import torch

from fastsmooth import evaluate, methods, models
from fastsmooth.cli import main
from fastsmooth.data import load_tensors
from fastsmooth.evaluate import read_results


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 1, 28, 28), generator=g).float() / 255
    path = tmp_path_factory.mktemp("data") / "tiny.pt"
    torch.save({"x": x, "y": torch.arange(12) % 10}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "pc.pt"
    assert main(["train", "--data", str(data_file), "--output", str(out), "--epochs", "1", "--batch-size", "4",
                 "--no-progress", "--method", "patchcleanser", "--patch-size", "5", "--num-mask", "3"]) == 0
    return out


def _rows(path):
    return [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in read_results(path).rows]


def test_certify_reproduces_evaluate(ckpt, data_file, tmp_path):
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert obj["method"] == "patchcleanser" and obj["hyperparameters"]["patch_size"] == 5
    assert main(["certify", "--no-progress", "--checkpoint", str(ckpt), "--data", str(data_file), "--output",
                 str(tmp_path / "cli.tsv")]) == 0
    method = methods.get("patchcleanser")
    model = models.build(obj["arch"], in_channels=obj["in_channels"], num_classes=10)
    models.load_checkpoint(model, ckpt)
    smoother = method.build(model, 10, methods.resolve(method, obj["hyperparameters"]), 64)
    evaluate(smoother, load_tensors(data_file), output=tmp_path / "ref.tsv", progress=False)
    assert _rows(tmp_path / "cli.tsv") == _rows(tmp_path / "ref.tsv")
    assert main(["certify", "--no-progress", "--checkpoint", str(ckpt), "--data", str(data_file), "--output",
                 str(tmp_path / "levels.tsv"), "--levels", "3", "5", "6", "--decide"]) == 0
    levels = read_results(tmp_path / "levels.tsv")
    assert levels.columns[6:] == ["forwards", "certified@3", "certified@5", "certified@6"]
    full = _rows(tmp_path / "ref.tsv")
    assert [(r.prediction, r.extra[2] == "1", r.extra[3]) for r in levels.rows] == [
        (f[2], f[3] >= 5, "0") for f in full]
    assert all(0 < int(r.extra[0]) <= 45 for r in levels.rows)  # 9 masks: 9 + 36 pairs at most
