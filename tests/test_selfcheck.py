"""The compiled backends' self-check: a wrong kernel result is caught on first use, named by
op, backend and device, never silently replaced; `fastsmooth info --check`; `make gpu-check`."""
from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

import fastsmooth
from fastsmooth.cli import main
from fastsmooth.ops import _selfcheck
from fastsmooth.ops._selfcheck import SelfCheckError

from conftest import require_backend

ROOT = Path(__file__).resolve().parent.parent
# op name -> (module, name of its implementation table)
TABLES = {
    "ablation": ("fastsmooth.ops.ablation", "_IMPLS"),
    "pixel_ablation": ("fastsmooth.ops.pixel_ablation", "_IMPLS"),
    "dssn_split": ("fastsmooth.ops.splitting", "_SPLIT"),
    "ssn_noise": ("fastsmooth.ops.splitting", "_SSN"),
    "uniform_noise": ("fastsmooth.ops.splitting", "_UNIFORM"),
    "gaussian_noise": ("fastsmooth.ops.gaussian", "_IMPLS"),
    "mask_pairs": ("fastsmooth.ops.mask_pairs", "_IMPLS"),
}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("FASTSMOOTH_SELF_CHECK", raising=False)
    _selfcheck.reset()
    yield
    _selfcheck.reset()


def _wrong(kernel):
    """The kernel, with one output element off by 0.01 (what a miscompiled kernel might do)."""

    def run(*args, **kwargs):
        out = kernel(*args, **kwargs)
        out.view(-1)[out.numel() // 2] += 0.01
        return out

    return run


def test_every_op_is_registered():
    assert set(TABLES) == set(_selfcheck.OPS)
    for op, (module, table) in TABLES.items():
        assert getattr(importlib.import_module(module), table).op == op


@pytest.mark.parametrize("op", TABLES)
def test_a_wrong_kernel_result_is_caught_and_named(op, monkeypatch):
    require_backend("cpu")
    module, name = TABLES[op]
    table = getattr(importlib.import_module(module), name)
    monkeypatch.setitem(table, "cpu", _wrong(table["cpu"]))
    run, _ = _selfcheck.OPS[op]
    x = _selfcheck._images(0, torch.device("cpu"))
    for _ in range(2):  # and again: a failed check is never remembered as passed
        with pytest.raises(SelfCheckError, match=rf"op '{op}' on backend 'cpu' on device cpu .* differ"):
            run("cpu", x, 0)
    assert run("reference", x, 0).numel() > 0  # the reference is never checked against itself
    monkeypatch.setenv("FASTSMOOTH_SELF_CHECK", "0")
    run("cpu", x, 0)  # turned off: runs (wrongly) without a check


def test_a_smoother_on_a_wrong_kernel_raises_rather_than_certifies(monkeypatch):
    require_backend("cpu")
    table = importlib.import_module("fastsmooth.ops.ablation")._IMPLS
    monkeypatch.setitem(table, "cpu", _wrong(table["cpu"]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 5 * 6, 3))
    smoother = fastsmooth.ColumnSmoothing(model, 3, size=2)
    with pytest.raises(SelfCheckError, match="'ablation' on backend 'cpu'"):
        smoother.certified_patch_size(torch.rand(2, 1, 5, 6))


def test_right_kernels_pass_once_per_process(monkeypatch):
    require_backend("cpu")
    calls = []
    real = _selfcheck._compare
    monkeypatch.setattr(_selfcheck, "_compare", lambda *a: calls.append(a) or real(*a))
    x = torch.rand(2, 3, 8, 9)
    for _ in range(3):
        fastsmooth.ops.ablate_bands(x, 3, backend="cpu")
    assert calls == [("ablation", "cpu", torch.device("cpu"))]


def test_check_all_passes_on_the_backends_here():
    results = _selfcheck.check_all()
    assert results, "no compiled backend to check"
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    names = {r.backend for r in results}
    required = {b for b in os.environ.get("FASTSMOOTH_REQUIRE_BACKENDS", "").split(",") if b}
    assert {b for b in required if b != "cuda" or torch.cuda.is_available()} <= names
    assert {r.op for r in results} == set(TABLES)


def test_info_check_prints_the_table(capsys, monkeypatch):
    assert main(["info", "--check"]) == 0
    out = capsys.readouterr().out
    assert "all" in out and "checks passed" in out and "dssn_split" in out
    table = importlib.import_module("fastsmooth.ops.splitting")._SSN
    if fastsmooth.backends()["cpu"].available:
        monkeypatch.setitem(table, "cpu", _wrong(table["cpu"]))
        assert main(["info", "--check"]) == 1
        assert "FAILED" in capsys.readouterr().out


def test_gpu_check_script_runs_the_documented_steps(tmp_path):
    """make gpu-check cannot run without a GPU; its dry run shows the commands it would run."""
    env = {**os.environ, "GPU_CHECK_DRY": "1", "GPU_CHECK_OUT": str(tmp_path), "PYTHON": "python-with-cuda-torch"}
    done = subprocess.run(["bash", str(ROOT / ".ci" / "gpu-check")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert "FASTSMOOTH_CUDA=1" in steps[0] and "setup.py build_ext --inplace" in steps[0]
    assert "-m fastsmooth info --check" in steps[1]
    assert "FASTSMOOTH_REQUIRE_BACKENDS=cpu,cuda,triton" in steps[2] and "pytest tests" in steps[2]
    assert "FASTSMOOTH_BENCH_PAPER=1" in steps[3] and "timeout 480" in steps[3] and "test_paper_tables.py" in steps[3]
    assert "benchmarks/report.py" in steps[4]
    assert "benchmarks/roofline.py --measure" in steps[5]
    assert "timeout 600" in steps[6] and "benchmarks/test_compiled.py" in steps[6]  # CUDA graphs vs eager
    make = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert make.returncode == 0 and ".ci/gpu-check" in make.stdout
