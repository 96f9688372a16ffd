"""The command line's contract, run as a user runs it (a subprocess): exit status 2 and one
`fastsmooth <command>: error: ...` line for every user error, run fingerprints that keep runs
apart, seeds, and a run killed at random points that still completes to the right rows."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastsmooth.cli import main
from fastsmooth.results import read_results

ENV = {**os.environ, "FASTSMOOTH_DEBUG": "", "FASTSMOOTH_SELF_CHECK": os.environ.get("FASTSMOOTH_SELF_CHECK", "1")}


def fastsmooth(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastsmooth", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def user_error(done: subprocess.CompletedProcess, command: str, *phrases: str) -> str:
    """Exit status 2, one error line naming the problem, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"fastsmooth {command}: error: ")]
    assert len(errors) == 1, done.stderr
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])
    return errors[0]


def rows(path: Path) -> list[tuple]:
    return [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in read_results(path).rows]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 1, 28, 28), generator=g).float() / 255
    y = torch.arange(24) % 10
    torch.save({"x": x, "y": y}, root / "data.pt")
    torch.save({"x": x.flip(0), "y": y.flip(0)}, root / "other.pt")
    torch.save({"x": torch.rand(4, 1, 32, 32), "y": torch.arange(4)}, root / "big.pt")
    common = ["--data", str(root / "data.pt"), "--epochs", "1", "--batch-size", "16", "--no-progress"]
    for name, flags in {
        "column": ["--method", "column", "--size", "4"],
        "column2": ["--method", "column", "--size", "4", "--train-seed", "1"],
        "gaussian": ["--method", "gaussian", "--sigma", "0.25"],
        "ablation": ["--method", "ablation", "--keep", "45"],
        "ssn": ["--method", "ssn", "--sigma", "0.25"],
    }.items():
        assert main(["train", *common, *flags, "-o", str(root / f"{name}.pt")]) == 0
    return {"root": root, "data": root / "data.pt", "other": root / "other.pt", "big": root / "big.pt",
            **{k: root / f"{k}.pt" for k in ("column", "column2", "gaussian", "ablation", "ssn")}}


def certify(files, ckpt: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return fastsmooth("certify", "--no-progress", "--checkpoint", str(files[ckpt]), "--data", str(files["data"]),
                      "--output", str(out), *flags)


def test_resume_into_another_runs_file_is_refused(files, tmp_path):
    """Item 1: another checkpoint, --theta, --data or --max resumed into a finished file."""
    out = tmp_path / "ref.tsv"
    assert certify(files, "column", out, "--max", "12").returncode == 0
    before = out.read_text()
    user_error(certify(files, "column2", out, "--max", "12"), "certify", "another run", "checkpoint_sha256")
    user_error(certify(files, "column", out, "--max", "12", "--theta", "top1"), "certify",
               "method_hyperparameters.threshold: 0.3 in the file, null in this run", "--no-resume")
    user_error(fastsmooth("certify", "--no-progress", "--checkpoint", str(files["column"]), "--data",
                          str(files["other"]), "--output", str(out), "--max", "12"), "certify", "data_sha256")
    user_error(certify(files, "column", out, "--max", "20"), "certify", "max: 12 in the file, 20 in this run")
    assert out.read_text() == before
    done = certify(files, "column", out, "--max", "12")  # the same run: nothing to do, the same summary
    assert done.returncode == 0 and "images: 12 " in done.stdout
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + [lines[-1]]))  # a duplicated row
    user_error(certify(files, "column", out, "--max", "12"), "certify", "line 15 repeats image 11 (first on line 14)")
    assert certify(files, "column2", out, "--max", "12", "--no-resume").returncode == 0


@pytest.mark.parametrize("method", ["gaussian", "ablation"])
def test_seeded_randomized_runs_repeat(files, tmp_path, method):
    """Item 5: --seed was refused for gaussian and ablation, and identical runs differed."""
    flags = ["--n0", "10", "--n", "60", "--batch-size", "40"]
    a = certify(files, method, tmp_path / "a.tsv", *flags, "--seed", "5", "--batch-images", "24")
    b = certify(files, method, tmp_path / "b.tsv", *flags, "--seed", "5", "--batch-images", "5")
    c = certify(files, method, tmp_path / "c.tsv", *flags, "--batch-images", "3")  # default seed 0
    assert a.returncode == b.returncode == c.returncode == 0, (a.stderr, b.stderr, c.stderr)
    assert rows(tmp_path / "a.tsv") == rows(tmp_path / "b.tsv")
    assert read_results(tmp_path / "a.tsv").fingerprint["seed"] == 5
    assert read_results(tmp_path / "c.tsv").fingerprint["seed"] == 0


def test_alpha_is_checked_as_given_before_certifying(files):
    """Item 8: --alpha 2 for SSN reported 'got 1.0' (the halved value), after 'certifying with ...'."""
    done = fastsmooth("certify", "--checkpoint", str(files["ssn"]), "--data", str(files["data"]), "--alpha", "2",
                      "--no-progress")
    user_error(done, "certify", "alpha (two-sided)", "got 2.0")
    assert "certifying with" not in done.stderr


def test_image_size_other_than_the_checkpoints(files, tmp_path):
    """Item 6: image_shape was recorded but not checked (a traceback)."""
    done = fastsmooth("certify", "--checkpoint", str(files["column"]), "--data", str(files["big"]), "--no-progress")
    user_error(done, "certify", "(1, 32, 32)", "(1, 28, 28)", "resize")


def test_image_folders_with_mixed_sizes_modes_or_broken_files(files, tmp_path):
    from PIL import Image

    def folder(name: str, images: dict[str, Image.Image | bytes]) -> Path:
        root = tmp_path / name
        for i, (cls, img) in enumerate(images.items()):
            (root / cls).mkdir(parents=True)
            if isinstance(img, bytes):
                (root / cls / f"{i}.png").write_bytes(img)
            else:
                img.save(root / cls / f"{i}.png")
        return root

    gray = Image.new("L", (28, 28), 7)
    for name, second in {"sizes": Image.new("L", (30, 28)), "modes": Image.new("RGB", (28, 28)),
                         "broken": b"not a png"}.items():
        root = folder(name, {"a": gray, "b": second})
        done = fastsmooth("certify", "--checkpoint", str(files["column"]), "--data", str(root), "--no-progress")
        user_error(done, "certify", *{"sizes": ["image 1", "one size"], "modes": ["image 1", "(3, 28, 28)"],
                                      "broken": ["1.png", "cannot be read"]}[name])


def test_output_naming_a_directory(files, tmp_path):
    user_error(certify(files, "column", tmp_path), "certify", "is a directory")


def test_train_validates_data_and_output_before_training(files, tmp_path):
    """Items 6 and 9: NaN data 'diverged', bad labels and sizes gave tracebacks, and -o was
    checked only after training."""
    x = torch.randint(0, 256, (8, 1, 28, 28)).float() / 255
    nan = x.clone()
    nan[3, 0, 1, 2] = float("nan")
    torch.save({"x": nan, "y": torch.arange(8)}, tmp_path / "nan.pt")
    torch.save({"x": x, "y": torch.tensor([0, 1, 2, 3, 4, 5, 6, 12])}, tmp_path / "labels.pt")
    torch.save({"x": x * 255, "y": torch.arange(8)}, tmp_path / "scale.pt")
    train = ["train", "--method", "column", "--size", "4", "--epochs", "1", "--no-progress"]
    out = ["-o", str(tmp_path / "m.pt")]
    user_error(fastsmooth(*train, "--data", str(tmp_path / "nan.pt"), *out), "train", "[3, 0, 1, 2] = nan", "finite")
    user_error(fastsmooth(*train, "--data", str(tmp_path / "labels.pt"), "--num-classes", "10", *out), "train",
               "= 12", "[0, 10)")
    user_error(fastsmooth(*train, "--data", str(tmp_path / "scale.pt"), *out), "train", "[0, 1]", "divide by 255")
    user_error(fastsmooth(*train, "--data", str(files["big"]), *out), "train", "mnist_cnn", "32")
    start = time.perf_counter()
    user_error(fastsmooth(*train, "--epochs", "50", "--data", str(files["data"]), "-o", str(tmp_path)), "train",
               "is a directory")
    (tmp_path / "file").write_text("")
    user_error(fastsmooth(*train, "--data", str(files["data"]), "-o", str(tmp_path / "file" / "m.pt")), "train",
               "not a folder")
    assert time.perf_counter() - start < 120  # refused before 50 epochs of training
    assert not (tmp_path / "m.pt").exists()


def test_corrupted_checkpoint_and_unreadable_data_file(files, tmp_path):
    """Item 10: a corrupted checkpoint got advice to allow pickle loading (naming the Python
    keyword); a text file named .npz got numpy's message without the file name."""
    blob = bytearray(files["column"].read_bytes())
    start = blob.find(b"data.pkl")
    assert start > 0
    pickle_at = blob.find(b"\x80", start)  # the pickle's PROTO opcode, inside the zip member
    blob[pickle_at + 2 : pickle_at + 40] = b"\xfe" * 38
    (tmp_path / "bad.pt").write_bytes(bytes(blob))
    line = user_error(fastsmooth("certify", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(files["data"])),
                      "certify", "bad.pt")
    assert "allow_pickle" not in line and "--allow-pickle" not in line
    import argparse

    payload = torch.load(files["column"], weights_only=True)
    payload["args"] = argparse.Namespace(lr=0.1)  # what the authors' checkpoints often hold
    torch.save(payload, tmp_path / "pickled.pt")
    line = user_error(fastsmooth("certify", "--checkpoint", str(tmp_path / "pickled.pt"), "--data",
                                 str(files["data"])), "certify", "--allow-pickle")
    assert "allow_pickle=True" not in line
    (tmp_path / "text.npz").write_text("hello")
    user_error(fastsmooth("certify", "--checkpoint", str(files["column"]), "--data", str(tmp_path / "text.npz")),
               "certify", "text.npz")


def test_friction(files, tmp_path):
    """Item 12: --max 0 printed a table of nan; `fastsmooth info | head -1` ended in a traceback."""
    user_error(certify(files, "column", tmp_path / "r.tsv", "--max", "0"), "certify", "max must be a positive integer, got 0")
    done = subprocess.run(f"{sys.executable} -m fastsmooth info | head -1", shell=True, capture_output=True, text=True,
                          env=ENV, timeout=240)
    assert done.stdout.startswith("fastsmooth ") and "Traceback" not in done.stderr and "Error" not in done.stderr


def test_sigkill_at_random_points_completes_to_the_uninterrupted_rows(files, tmp_path):
    """Killed (SIGKILL) at random points several times and resumed each time, a seeded
    randomized run ends with exactly the rows of an uninterrupted one."""
    flags = ["--n0", "20", "--n", "400", "--batch-size", "200", "--batch-images", "2"]
    full = tmp_path / "full.tsv"
    assert certify(files, "gaussian", full, *flags).returncode == 0
    out = tmp_path / "killed.tsv"
    pick = random.Random(os.getpid())
    command = [sys.executable, "-m", "fastsmooth", "certify", "--no-progress", "--checkpoint", str(files["gaussian"]),
               "--data", str(files["data"]), "--output", str(out), *flags]
    kills = 0
    for _ in range(12):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        deadline = time.time() + 120
        while not out.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # wait for the header: the kill then lands while images are certified
        time.sleep(pick.uniform(0.0, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        else:
            assert process.returncode == 0
            break
        if kills == 4:
            break
    assert kills >= 2  # the run really was interrupted
    assert certify(files, "gaussian", out, *flags).returncode == 0
    assert rows(out) == rows(full)
