"""`fastsmooth train --arch <vit> --method column|row|block|multi-band|multi-block` and `fastsmooth certify` on the result:
the checkpoint records the ViT mode, certification rebuilds it and matches the library."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import timm_or_skip

timm_or_skip()

import fastsmooth  # noqa: E402
from fastsmooth import models  # noqa: E402
from fastsmooth.cli import main  # noqa: E402
from fastsmooth.data import load_tensors  # noqa: E402
from fastsmooth.evaluate import read_results  # noqa: E402


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 1, 28, 28), generator=g).float() / 255
    path = tmp_path_factory.mktemp("data") / "tiny.pt"
    torch.save({"x": x, "y": torch.arange(12) % 10}, path)
    return path


def _train(data: Path, out: Path, *flags: str) -> dict:
    code = main(["train", "--data", str(data), "--output", str(out), "--epochs", "1", "--batch-size", "6",
                 "--arch", "mnist_vit", "--no-progress", *flags])
    assert code == 0
    return torch.load(out, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("method,hyper,drop", [
    ("column", {"size": 4}, True),
    ("block", {"size": 8}, False),
    ("multi-band", {"size": 6, "keep": 2, "axis": "row"}, True),  # 6-row bands straddle the 4-pixel patches
    ("multi-block", {"size": 7, "keep": 2}, True),
])
def test_train_and_certify_a_vit(data_file, tmp_path, method, hyper, drop):
    flags = ["--method", method] + [f for k, v in hyper.items() for f in (f"--{k}", str(v))]
    ckpt = _train(data_file, tmp_path / "vit.pt", *flags, *([] if drop else ["--no-drop-tokens"]))
    assert ckpt["arch"] == "mnist_vit" and ckpt["in_channels"] == 1  # C channels, not 2C
    assert ckpt["hyperparameters"]["drop_tokens"] is drop and ckpt["hyperparameters"]["normalize"] == "after"
    assert all(ckpt["hyperparameters"][k] == v for k, v in hyper.items())
    assert ckpt["training"]["per"] == "batch"
    out = tmp_path / "vit.tsv"
    assert main(["certify", "--checkpoint", str(tmp_path / "vit.pt"), "--data", str(data_file), "--output", str(out),
                 "--no-progress"]) == 0
    rows = read_results(out).rows
    # the same certification through the library
    model = models.build("mnist_vit", drop_tokens=drop)
    models.load_checkpoint(model, tmp_path / "vit.pt")
    cls = {"column": fastsmooth.ViTColumnSmoothing, "block": fastsmooth.ViTBlockSmoothing,
           "multi-band": fastsmooth.ViTMultiBandSmoothing, "multi-block": fastsmooth.ViTMultiBlockSmoothing}[method]
    x = torch.stack([load_tensors(data_file)[i][0] for i in range(12)])
    want = cls(model, 10, *(hyper[k] for k in ("size", "keep") if k in hyper),
               **({"axis": hyper["axis"]} if "axis" in hyper else {})).evaluate_batch(x)
    assert [r.prediction for r in rows] == want.prediction.tolist()
    assert [r.certificate for r in rows] == want.certificate.tolist()


def test_the_demo_vit_recipe_from_the_command_line(data_file, tmp_path):
    """fastsmooth.demo_vit's recipe through `train` flags: a band per image, AdamW with warm-up,
    label smoothing, normalization before ablation; `certify` reads it all back from the file."""
    ckpt = _train(data_file, tmp_path / "vit.pt", "--method", "column", "--size", "2", "--per", "image",
                  "--optimizer", "adamw", "--weight-decay", "0.05", "--warmup", "0.5", "--label-smoothing", "0.1",
                  "--normalize", "before", "--mean", "0.5", "--std", "0.5", "--copies", "2")
    assert ckpt["training"]["per"] == "image" and ckpt["training"]["optimizer"] == "adamw"
    assert ckpt["training"]["warmup"] == 0.5 and ckpt["training"]["label_smoothing"] == 0.1
    assert ckpt["hyperparameters"]["normalize"] == "before" and ckpt["hyperparameters"]["mean"] == [0.5]
    out = tmp_path / "vit.tsv"
    assert main(["certify", "--checkpoint", str(tmp_path / "vit.pt"), "--data", str(data_file), "--output", str(out),
                 "--no-progress"]) == 0
    model = models.build("mnist_vit")
    models.load_checkpoint(model, tmp_path / "vit.pt")
    x = torch.stack([load_tensors(data_file)[i][0] for i in range(12)])
    want = fastsmooth.ViTColumnSmoothing(model, 10, 2, mean=[0.5], std=[0.5], normalize="before").evaluate_batch(x)
    assert [r.certificate for r in read_results(out).rows] == want.certificate.tolist()


def test_vit_with_a_method_without_vit_variant_is_refused(data_file, tmp_path, capsys):
    code = main(["train", "--data", str(data_file), "--output", str(tmp_path / "x.pt"), "--arch", "mnist_vit",
                 "--method", "dssn", "--sigma", "0.25", "--no-progress"])
    assert code == 2
    assert "--arch mnist_vit: method 'dssn' has no smoothed-ViT variant" in capsys.readouterr().err
