"""Results files and the command line's error contract, run as a user runs them
(docs/reliability.md): a broken model is never certified, one writer per results file, resume
trusts nothing it has not checked, symlinks and special files, empty shards, one-line errors."""
from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastsmooth
from fastsmooth.cli import main
from fastsmooth.outfiles import OutputLock, OutputLockedError, target
from fastsmooth.results import ResultsError, read_results


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A column-smoothing checkpoint (one epoch) and its 14 training images as the data file."""
    folder = tmp_path_factory.mktemp("reliability")
    data = folder / "tiny.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randint(0, 256, (14, 1, 28, 28), generator=g).float() / 255, "y": torch.arange(14) % 10},
               data)
    ckpt = folder / "column.pt"
    assert main(["train", "--method", "column", "--size", "4", "--data", str(data), "--output", str(ckpt),
                 "--epochs", "1", "--no-progress"]) == 0
    return ckpt, data


def _certify(checkpoint, *flags: str) -> int:
    ckpt, data = checkpoint
    return main(["certify", "--checkpoint", str(ckpt), "--data", str(data), "--no-progress", *flags])


def _interrupt(out: Path, keep: int) -> None:
    """Leave ``out`` as a run killed after ``keep`` rows leaves it."""
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[: 2 + keep]))


def _error_line(capsys, command: str = "certify") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"fastsmooth {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# -- 1. a broken model is not certified ----------------------------------------------------------
def test_checkpoint_with_nan_weights_is_refused(checkpoint, tmp_path, capsys):
    """It gave "certified accuracy 0.200", patch size 13 on every row, exit 0."""
    ckpt, data = checkpoint
    obj = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in obj["state_dict"].items() if v.is_floating_point())
    obj["state_dict"][name] = torch.full_like(obj["state_dict"][name], math.nan)
    broken = tmp_path / "nan.pt"
    torch.save(obj, broken)
    out = tmp_path / "r.tsv"
    assert main(["certify", "--checkpoint", str(broken), "--data", str(data), "--no-progress", "--max", "4",
                 "--output", str(out)]) == 2
    line = _error_line(capsys)
    assert f"--checkpoint {broken}: {name} holds" in line and "NaN / Inf values" in line
    assert not out.exists() or read_results(out).rows == []


def test_model_with_non_finite_outputs_is_refused_through_evaluate(tmp_path):
    """Finite weights, NaN logits (the engine's check, as the command line's evaluate meets it)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 28 * 28, 10))
    with torch.no_grad():
        model[1].weight.fill_(math.inf)  # inf * 0 = NaN on every ablated pixel
    data = TensorDataset(torch.rand(3, 1, 28, 28), torch.arange(3))
    out = tmp_path / "r.tsv"
    with pytest.raises(fastsmooth.NonFiniteLogitsError, match=r"for \d+ of the \d+ rows"):
        fastsmooth.evaluate(fastsmooth.ColumnSmoothing(model, 10, size=4), data, output=out, progress=False)
    assert read_results(out).rows == []


# -- 3. one writer per results file --------------------------------------------------------------
@pytest.mark.parametrize("fresh", [[], ["--no-resume"]])
def test_second_writer_fails_at_once_naming_the_holder(checkpoint, tmp_path, capsys, fresh):
    """Two concurrent runs on one file both exited 0 with 80 rows for 40 images; with
    --no-resume the second replaced the file under the first."""
    out = tmp_path / "r.tsv"
    assert _certify(checkpoint, "--max", "6", "--output", str(out)) == 0
    _interrupt(out, 3)
    before = out.read_text()
    with OutputLock(out):  # another run holds the file (a lock is per open file: same process works)
        assert _certify(checkpoint, "--max", "6", "--output", str(out), *fresh) == 2
        line = _error_line(capsys)
    assert f"being written by another run (pid {os.getpid()}" in line
    assert out.read_text() == before  # untouched
    assert not Path(str(out) + ".lock").exists()  # released: the lock file goes with it
    assert _certify(checkpoint, "--max", "6", "--output", str(out), *fresh) == 0
    assert [r.index for r in read_results(out).rows] == list(range(6))


def test_lock_is_released_when_the_holder_dies(tmp_path):
    out = tmp_path / "r.tsv"
    pid = os.fork()
    if pid == 0:  # a run killed while holding the lock: the kernel releases it
        OutputLock(out)
        os._exit(0)
    os.waitpid(pid, 0)
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()}"):
            OutputLock(out)


def test_report_and_merge_refuse_repeated_indices(checkpoint, tmp_path, capsys):
    out = tmp_path / "r.tsv"
    assert _certify(checkpoint, "--max", "3", "--output", str(out)) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + lines[2:]))  # what two writers appending made
    assert main(["report", str(out), "--no-plot", "-o", str(tmp_path / "rep")]) == 2
    assert "line 6 repeats image 0 (first on line 3)" in _error_line(capsys, "report")
    for k in (1, 2):
        assert _certify(checkpoint, "--max", "4", "--shard", f"{k}/2", "--output", str(tmp_path / f"p{k}.tsv")) == 0
    part = tmp_path / "p1.tsv"
    part.write_text(part.read_text() + part.read_text().splitlines(keepends=True)[2])
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "m.tsv"), str(part), str(tmp_path / "p2.tsv")]) == 2
    assert "repeats image 0" in _error_line(capsys, "merge")


# -- 4. resume validates every row ---------------------------------------------------------------
@pytest.mark.parametrize(("row", "phrase"), [
    ("-1\t1\t1\t3\t1\t0.1\n", "line 6 is not a valid row (image index -1 is negative)"),
    ("5\t10\t10\t3\t1\t0.1\n", "line 6: label 10 is outside [0, 10)"),
    ("5\t5\t3\t3\t1\t0.1\n", "line 6 is not a valid row (correct is 1 but prediction 3 != label 5)"),
    ("5\t5\t5\tnan\t1\t0.1\n", "line 6 is not a valid row (certificate nan is not finite"),
    ("5\t5\t5\t3\t1\t0.1\n4\t4\t4\t3\t1\t0.1\n", "line 7: image 4 comes after image 5 (line 6)"),
    ("7\t7\t7\t3\t1\t0.1\n", "line 6 holds image 7, which this run does not certify"),
])
def test_resume_refuses_an_impossible_row_with_its_line(checkpoint, tmp_path, capsys, row, phrase):
    out = tmp_path / "r.tsv"
    assert _certify(checkpoint, "--max", "6", "--output", str(out)) == 0
    _interrupt(out, 3)
    out.write_text(out.read_text() + row)
    assert _certify(checkpoint, "--max", "6", "--output", str(out)) == 2
    line = _error_line(capsys)
    assert phrase in line, line


# -- 5. symlinks and special files ---------------------------------------------------------------
def test_symlinked_output_is_written_through(checkpoint, tmp_path):
    real = tmp_path / "store" / "r.tsv"
    real.parent.mkdir()
    real.write_text("")
    link = tmp_path / "link.tsv"
    link.symlink_to(real)
    assert _certify(checkpoint, "--max", "5", "--output", str(link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [r.index for r in read_results(real).rows] == [0, 1, 2, 3, 4]
    _interrupt(real, 2)
    assert _certify(checkpoint, "--max", "5", "--output", str(link)) == 0  # resumes through the link
    assert [r.index for r in read_results(real).rows] == [0, 1, 2, 3, 4] and link.is_symlink()


def test_dev_stdout_is_written_in_place_never_replaced(checkpoint, capfd):
    assert target("/dev/stdout").stream
    assert _certify(checkpoint, "--max", "2", "--output", "/dev/stdout") == 0
    out = capfd.readouterr().out
    assert "# fastsmooth-run " in out and "\nidx\tlabel\t" in out and "\n0\t0\t" in out and "\n1\t1\t" in out
    assert not os.path.exists("/dev/stdout.partial") and os.path.exists("/dev/stdout")


# -- 6. data read once: a digest per row ---------------------------------------------------------
def test_resume_over_a_reordered_loader_is_refused(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 256, (8, 1, 8, 8), generator=g).float() / 255, torch.arange(8) % 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 64, 4))
    smoother = fastsmooth.ColumnSmoothing(model, 4, size=2)
    out = tmp_path / "r.tsv"
    fastsmooth.evaluate(smoother, DataLoader(data, batch_size=2), output=out, max=6, progress=False)
    assert read_results(out).columns[-1] == "data_digest"
    _interrupt(out, 3)
    # the same order resumes...
    summary = fastsmooth.evaluate(smoother, DataLoader(data, batch_size=2), output=out, max=6, progress=False)
    assert summary.count == 6
    _interrupt(out, 3)
    # ...a shuffled one (which moves image 0 here) is refused before anything is certified
    shuffled = DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert next(iter(shuffled))[0][0].ne(data[0][0]).any()
    with pytest.raises(ResultsError, match=r"line 3 certified image 0 .* the data now gives another image"):
        fastsmooth.evaluate(smoother, shuffled, output=out, max=6, progress=False)
    assert len(read_results(out).rows) == 3


# -- 7. an empty shard -----------------------------------------------------------------------------
def test_empty_shard_is_a_success_and_merges(checkpoint, tmp_path, capsys):
    for k in (1, 2, 3, 4):
        assert _certify(checkpoint, "--max", "3", "--shard", f"{k}/4", "--output", str(tmp_path / f"p{k}.tsv")) == 0
    assert "shard 4/4 holds no images of the selection" in capsys.readouterr().out
    assert read_results(tmp_path / "p4.tsv").rows == []
    assert main(["merge", str(tmp_path / "m.tsv"), *(str(tmp_path / f"p{k}.tsv") for k in (1, 2, 3, 4))]) == 0
    assert [r.index for r in read_results(tmp_path / "m.tsv").rows] == [0, 1, 2]


# -- 8. the error contract -------------------------------------------------------------------------
def test_device_tpu(checkpoint, capsys):
    assert _certify(checkpoint, "--max", "2", "--device", "tpu") == 2
    assert "--device tpu" in _error_line(capsys)


def test_report_levels_nan(checkpoint, tmp_path, capsys):
    out = tmp_path / "r.tsv"
    assert _certify(checkpoint, "--max", "2", "--output", str(out)) == 0
    assert main(["report", str(out), "--no-plot", "-o", str(tmp_path / "rep"), "--levels", "nan"]) == 2
    assert "levels entry must be a finite" in _error_line(capsys, "report")


def test_label_errors_name_no_huge_bound(checkpoint, tmp_path, capsys):
    """A label error of data whose classes are not known yet printed [0, 4611686018427387904)."""
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.rand(2, 1, 28, 28), "y": torch.tensor([0, -3])}, bad)
    assert main(["certify", "--checkpoint", str(checkpoint[0]), "--data", str(bad), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "= -3: labels must lie in [0, num_classes)" in line and "4611686018427387904" not in line


def test_num_classes_zero_and_image_size_with_demo_are_refused(checkpoint, capsys):
    with pytest.raises(SystemExit) as done:
        _certify(checkpoint, "--num-classes", "0")
    assert done.value.code == 2
    assert "argument --num-classes: expected an integer >= 2" in capsys.readouterr().err
    assert main(["certify", "--checkpoint", str(checkpoint[0]), "--data", "demo", "--image-size", "32", "32",
                 "--no-progress", "--max", "1"]) == 2
    assert "--image-size resizes the images of an image folder; --data demo is not one" in _error_line(capsys)


def test_wrong_channel_count_names_expected_and_given():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 4))
    with pytest.raises(ValueError, match=r"takes 2 input channels but gets 6 \(ablation gives it 2C"):
        fastsmooth.ColumnSmoothing(model, 4, size=2, batch_size=4).evaluate_batch(torch.rand(1, 3, 8, 8))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with pytest.raises(ValueError, match=r"takes 1 input channels but gets 3: certify"):
        fastsmooth.Smooth(model, 4, 0.25, n0=4, n=8, batch_size=4).evaluate_batch(torch.rand(1, 3, 8, 8))


def test_deterministic_methods_record_no_seed(checkpoint, tmp_path, capsys):
    out = tmp_path / "r.tsv"
    assert _certify(checkpoint, "--max", "3", "--output", str(out)) == 0
    assert "sampling seed" not in capsys.readouterr().err
    assert read_results(out).fingerprint["seed"] is None
    _interrupt(out, 2)
    assert _certify(checkpoint, "--max", "3", "--output", str(out), "--seed", "5") == 0  # resumes
    assert "draws no samples; the seed is ignored" in capsys.readouterr().err
    assert [r.index for r in read_results(out).rows] == [0, 1, 2]


def test_disk_full_names_the_file_and_leaves_no_partial(checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.tsv"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert _certify(checkpoint, "--max", "2", "--output", str(out)) == 2
    line = _error_line(capsys)
    assert str(out) in line and "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .partial, no .lock
    monkeypatch.undo()
    # rows that cannot be written: /dev/full accepts the open and fails every write
    assert _certify(checkpoint, "--max", "2", "--output", "/dev/full") == 2
    assert "/dev/full" in _error_line(capsys)
