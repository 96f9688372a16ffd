"""Ray is optional: the package imports and certifies without it, and asking for --ray without
it says what to install."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastsmooth.cli import main


def test_fastsmooth_runs_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # an import of ray now fails, as if it were not installed
        "import torch, fastsmooth\n"
        "from fastsmooth.executors import LocalExecutor, RayExecutor\n"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 10))\n"
        "s = fastsmooth.ColumnSmoothing(net, 10, size=2)\n"
        "data = torch.utils.data.TensorDataset(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]))\n"
        "print(fastsmooth.evaluate(s, data, progress=False, executor=LocalExecutor()).count)\n"
        "try:\n"
        "    fastsmooth.evaluate(s, data, progress=False, executor=RayExecutor())\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "3"
    assert 'needs the ray package, which is not installed here: pip install "fastsmooth[ray]"' in lines[1]


def test_ray_flag_without_ray_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["certify", "--checkpoint", str(tmp_path / "none.pt"), "--data", "demo", "--ray"]) == 2
    err = capsys.readouterr().err
    assert 'fastsmooth certify: error: --ray: certifying on Ray needs the ray package' in err
    assert 'pip install "fastsmooth[ray]"' in err


def test_device_and_worker_flags_need_ray(capsys, tmp_path):
    common = ["certify", "--checkpoint", str(tmp_path / "none.pt"), "--data", "demo"]
    assert main([*common, "--ray", "--device", "cpu"]) == 2
    assert "--device cpu applies to a run in this process; with --ray every worker uses its own GPU" in capsys.readouterr().err
    assert main([*common, "--gpus-per-worker", "1"]) == 2
    assert "--gpus-per-worker apply to Ray workers: add --ray" in capsys.readouterr().err
