"""fastsmooth.results and evaluate's resume: the run fingerprint, refusing another run's file,
duplicated / foreign rows, and seeded randomized runs that resume to the same rows."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import fastsmooth
from fastsmooth.evaluate import image_generator
from fastsmooth.results import (
    MAGIC,
    ResultsError,
    fingerprint_differences,
    read_results,
)


def _net(in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 6 * 7, 4))


def _data(n: int = 9, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randint(0, 256, (n, 2, 6, 7), generator=g).float() / 255, torch.randint(4, (n,), generator=g))


def _table(path) -> list[tuple]:
    return [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in read_results(path).rows]


def test_file_format_and_read_back(tmp_path):
    out = tmp_path / "r.tsv"
    smoother = fastsmooth.ColumnSmoothing(_net(4), 4, size=2, threshold=0.3)
    summary = fastsmooth.evaluate(smoother, _data(), output=out, skip=2, progress=False, fingerprint={"note": "x"})
    first, second = out.read_text().splitlines()[:2]
    assert first.startswith(MAGIC)
    fingerprint = json.loads(first[len(MAGIC):])
    assert first[len(MAGIC):] == json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    assert second == "idx\tlabel\tpredict\tpatch_size\tcorrect\ttime"
    results = read_results(out)
    assert results.fingerprint == fingerprint == json.loads(json.dumps(summary.fingerprint))
    assert results.columns == second.split("\t") and results.certificate_name == "patch_size"
    assert [r.index for r in results.rows] == [0, 2, 4, 6, 8]
    hp = fingerprint["hyperparameters"]
    assert fingerprint["smoother"] == "ColumnSmoothing" and hp["size"] == 2 and hp["threshold"] == pytest.approx(0.3)
    assert fingerprint["skip"] == 2 and fingerprint["max"] is None and fingerprint["note"] == "x"
    assert fingerprint["certificate"] == "patch_size" and fingerprint["backend"] in ("cpu", "reference")
    assert len(fingerprint["model_sha256"]) == 64 and len(fingerprint["data_sha256"]) == 64
    assert fingerprint["fastsmooth"] == fastsmooth.__version__


def test_fingerprint_differences_are_readable():
    old = {"a": 1, "hp": {"threshold": 0.3, "size": 2}, "gone": True}
    new = {"a": 1.0, "hp": {"threshold": None, "size": 2}, "added": "x"}
    assert fingerprint_differences(old, new) == [
        "added: absent in the file, \"x\" in this run",
        "gone: true in the file, absent in this run",
        "hp.threshold: 0.3 in the file, null in this run",
    ]
    assert fingerprint_differences(old, old) == []


@pytest.mark.parametrize("change", ["model", "threshold", "size", "data", "labels", "max", "skip", "seed"])
def test_resume_refuses_another_runs_file(change, tmp_path):
    """Item 1: another checkpoint, --theta, --size, --data, --max / --skip were mixed into one file."""
    out = tmp_path / "r.tsv"
    data, kwargs = _data(), dict(output=out, progress=False, max=6)

    def smoother(threshold=0.3, size=2, seed_model=0):
        torch.manual_seed(seed_model)
        return fastsmooth.ColumnSmoothing(nn.Sequential(nn.Flatten(), nn.Linear(4 * 42, 4)), 4, size=size,
                                          threshold=threshold)

    fastsmooth.evaluate(smoother(), data, seed=1, **kwargs)
    before = out.read_text()
    other, data2, extra = smoother(), data, dict(kwargs, seed=1)
    if change == "model":
        other = smoother(seed_model=1)
    elif change == "threshold":
        other = smoother(threshold=None)
    elif change == "size":
        other = smoother(size=3)
    elif change == "data":
        data2 = _data(seed=5)
    elif change == "labels":
        data2 = TensorDataset(data.tensors[0], (data.tensors[1] + 1) % 4)
    elif change == "max":
        extra["max"] = 8
    elif change == "skip":
        extra["skip"] = 2
    else:
        extra["seed"] = 2
    expected = {"model": "model_sha256", "threshold": "hyperparameters.threshold", "size": "hyperparameters.size",
                "data": "data_sha256", "labels": "data_sha256", "max": "max", "skip": "skip", "seed": "seed"}[change]
    with pytest.raises(ResultsError, match=rf"another run.*{expected}: .* in the file, .* in this run.*--no-resume"):
        fastsmooth.evaluate(other, data2, **extra)
    assert out.read_text() == before  # untouched
    fastsmooth.evaluate(other, data2, resume=False, **extra)  # the explicit way to start anew
    assert read_results(out).fingerprint != json.loads(before.splitlines()[0][len(MAGIC):])


def test_duplicated_and_foreign_rows_are_errors(tmp_path):
    """Item 1: hand-duplicated rows were counted twice; rows outside --max were counted too."""
    smoother = fastsmooth.ColumnSmoothing(_net(4), 4, size=2, threshold=0.3)
    out = tmp_path / "r.tsv"
    fastsmooth.evaluate(smoother, _data(), output=out, max=5, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + [lines[3]]))
    with pytest.raises(ResultsError, match=r"line 8 repeats image 1 \(first on line 4\)"):
        fastsmooth.evaluate(smoother, _data(), output=out, max=5, progress=False)
    out.write_text("".join(lines + [lines[3].replace("1\t", "7\t", 1)]))
    with pytest.raises(ResultsError, match="holds image 7, which this run does not certify"):
        fastsmooth.evaluate(smoother, _data(), output=out, max=5, progress=False)
    out.write_text("".join(lines))
    summary = fastsmooth.evaluate(smoother, _data(), output=out, max=5, progress=False)
    assert summary.count == 5 and [r.index for r in summary.rows] == list(range(5))


def test_file_without_fingerprint_and_directory_output(tmp_path):
    legacy = tmp_path / "old.tsv"
    legacy.write_text("idx\tlabel\tpredict\tpatch_size\tcorrect\ttime\n0\t1\t1\t2\t1\t0.1\n")
    smoother = fastsmooth.ColumnSmoothing(_net(4), 4, size=2)
    with pytest.raises(ResultsError, match="does not start with a run fingerprint"):
        fastsmooth.evaluate(smoother, _data(), output=legacy, progress=False)
    with pytest.raises(ResultsError, match="is a directory"):
        fastsmooth.evaluate(smoother, _data(), output=tmp_path, progress=False)


def _uncertain_net(in_channels: int, scale: float = 30) -> nn.Module:
    """Large random weights: the noise flips votes, so the seed changes the rows."""
    net = _net(in_channels)
    with torch.no_grad():
        net[1].weight.mul_(scale)
    return net


@pytest.mark.parametrize("name", ["gaussian", "ablation", "ssn", "randomized-band"])
def test_seeded_randomized_runs_do_not_depend_on_batching_or_resuming(name, tmp_path):
    """Item 5: same seed, same rows, whatever batch_images; a resumed run equals an uninterrupted one."""
    make = {
        "gaussian": lambda: fastsmooth.Smooth(_uncertain_net(2), 4, 0.25, n0=5, n=60, alpha=0.2),
        "ablation": lambda: fastsmooth.RandomizedAblation(_uncertain_net(4, 3), 4, keep=10, n0=5, n=60, alpha=0.2),
        "ssn": lambda: fastsmooth.SSN(_uncertain_net(2), 4, sigma=0.25, n0=5, n=60, alpha=0.2),
        "randomized-band": lambda: fastsmooth.RandomizedBandSmoothing(_uncertain_net(4), 4, size=2, n0=5, n=60,
                                                                      alpha=0.2),
    }[name]
    data = _data(7)
    full = fastsmooth.evaluate(make(), data, output=tmp_path / "a.tsv", seed=3, batch_images=7, progress=False)
    fastsmooth.evaluate(make(), data, output=tmp_path / "b.tsv", seed=3, batch_images=2, progress=False)
    assert _table(tmp_path / "a.tsv") == _table(tmp_path / "b.tsv")
    # an interrupted run: the first 3 rows, then a resume in batches of 3
    lines = (tmp_path / "a.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "c.tsv").write_text("".join(lines[:5]) + lines[5][:4])
    resumed = fastsmooth.evaluate(make(), data, output=tmp_path / "c.tsv", seed=3, batch_images=3, progress=False)
    assert _table(tmp_path / "c.tsv") == _table(tmp_path / "a.tsv")
    assert resumed.clean_accuracy == full.clean_accuracy
    # the rows are those of one call per image with its (seed, index) generator...
    direct = [make().evaluate_batch(data.tensors[0][i : i + 1], generator=image_generator(3, i)) for i in range(7)]
    assert [(r.prediction, r.certificate) for r in full.rows] == [
        (int(d.prediction[0]), pytest.approx(float(d.certificate[0]), abs=1e-9)) for d in direct]
    # ... and the seed matters (so the comparisons above can fail)
    other = fastsmooth.evaluate(make(), data, seed=4, progress=False)
    assert [(r.prediction, r.certificate) for r in other.rows] != [(r.prediction, r.certificate) for r in full.rows]
