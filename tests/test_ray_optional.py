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


def test_ray_client_address_without_ray_client_says_what_to_install(monkeypatch, capsys, tmp_path):
    """--ray ray://HEAD:10001 needs ray[client] (grpcio), which plain ray does not install."""
    pytest.importorskip("ray")
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if only plain ray were installed
    assert main(["certify", "--checkpoint", str(tmp_path / "none.pt"), "--data", "demo", "--ray",
                 "ray://head:10001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsmooth certify: error: --ray: connecting to ray://head:10001 "
                                               "needs Ray's client")
    assert 'pip install "ray[client]==2.60.0"' in err[0]


def test_the_local_instances_processes_end_with_a_killed_driver(tmp_path):
    """The watcher of fastsmooth's local Ray instance ends every process of its session when the
    driver dies without running any exit handler (SIGKILL). Tried on stand-ins: a driver that
    registers the watcher for a session directory, and a process of that session in its own
    process group (as Ray's agents are), which nothing else would end."""
    import os
    import signal
    import time

    from fastsmooth.executors.ray_reaper import session_processes

    session = str(tmp_path / "session_fake")
    member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", session],
                              start_new_session=True)
    driver_code = (
        "import sys, time, types\n"
        "from fastsmooth.executors.ray_reaper import reap_on_exit\n"
        f"node = types.SimpleNamespace(get_session_dir_path=lambda: {session!r})\n"
        "ray = types.SimpleNamespace(_private=types.SimpleNamespace(worker=types.SimpleNamespace(_global_node=node)))\n"
        "reap_on_exit(ray)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", driver_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert driver.stdout.readline().strip() == "ready"
        assert member.pid in session_processes(session)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while member.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert member.poll() is not None, "the session's process outlived the killed driver"
    finally:
        for process in (driver, member):
            if process.poll() is None:
                process.kill()
                process.wait()
