"""The benchmarks' lockstep harness (benchmarks/lockstep.py): roles take turns at every forward
pass, get their own results, are timed by their own turns, and fail loudly."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from lockstep import Lockstep  # noqa: E402


class Recorder(nn.Module):
    """Adds a per-call offset and records which role's input it saw (the first element)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.inference: list[bool] = []

    def forward(self, x):
        self.seen.append(int(x[0]))
        self.inference.append(torch.is_inference_mode_enabled())
        return x * 2


def test_roles_take_turns_at_every_forward_and_get_their_own_results():
    net = Recorder()
    stepper = Lockstep(net)
    results = {}

    def role(tag: int, calls: int):
        def fn():
            out = []
            with torch.inference_mode(tag != 2):  # the pass runs in the caller's mode
                for i in range(calls):
                    out.append(stepper.model(torch.tensor([tag, i])).tolist())
            results[tag] = out

        return fn

    seconds = stepper.run({"a": role(0, 3), "b": role(1, 3), "c": role(2, 2)})
    assert set(seconds) == {"a", "b", "c"} and all(s > 0 for s in seconds.values())
    assert results == {t: [[2 * t, 2 * i] for i in range(n)] for t, n in ((0, 3), (1, 3), (2, 2))}
    # a b c | c b a | a b  (palindromic turns; c has no third forward)
    assert net.seen == [0, 1, 2, 2, 1, 0, 0, 1]
    assert net.inference == [tag != 2 for tag in net.seen]


def test_a_role_is_timed_by_its_own_turns_only():
    stepper = Lockstep(nn.Identity())

    def slow():
        for _ in range(4):
            time.sleep(0.02)  # 80 ms of its own work in all
            stepper.model(torch.ones(1))

    def fast():
        for _ in range(4):
            stepper.model(torch.ones(1))

    seconds = stepper.run({"slow": slow, "fast": fast})
    assert seconds["slow"] >= 0.08
    assert seconds["fast"] < 0.04  # the other role's sleeps are not counted to it


def test_errors_reach_the_caller_and_leave_no_role_waiting():
    stepper = Lockstep(nn.Identity())
    finished = []

    def failing():
        stepper.model(torch.ones(1))
        raise ValueError("role failed")

    def long():
        for _ in range(100):
            stepper.model(torch.ones(1))
        finished.append(True)

    with pytest.raises(ValueError, match="role failed"):
        stepper.run({"failing": failing, "long": long})
    assert finished == [True]  # the other role ran to its end

    def bad_forward():
        stepper.model("not a tensor", "too many arguments")

    with pytest.raises(TypeError):
        stepper.run({"bad": bad_forward})
    # the harness is usable again after an error
    assert set(stepper.run({"ok": lambda: stepper.model(torch.ones(1))})) == {"ok"}


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs an intra-op thread pool of 2 or more")
def test_roles_work_on_one_thread_and_the_network_keeps_its_threads():
    threads = torch.get_num_threads()
    seen = {}

    class Counts(nn.Module):
        def forward(self, x):
            seen.setdefault("network", torch.get_num_threads())
            return x

    stepper = Lockstep(Counts())

    def role():
        stepper.model(torch.ones(1))
        seen["role"] = torch.get_num_threads()
        torch.ones(1 << 24).mul_(2)  # above ATen's grain: would start an OpenMP team of its own
        stepper.model(torch.ones(1))

    stepper.run({"role": role, "other": lambda: stepper.model(torch.ones(1))})  # no new thread: no error
    assert seen == {"network": threads, "role": 1}
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="the check lists /proc/self/task (Linux)")
def test_a_role_starting_a_thread_is_refused():
    stepper = Lockstep(nn.Identity())
    release = threading.Event()

    def spawning():
        stepper.model(torch.ones(1))
        threading.Thread(target=release.wait, daemon=True).start()
        stepper.model(torch.ones(1))

    try:
        with pytest.raises(RuntimeError, match="started threads of its own"):
            stepper.run({"spawning": spawning, "other": lambda: stepper.model(torch.ones(1))})
    finally:
        release.set()
