"""Benchmark plumbing: every benchmark names its ``group`` (one row of a paper table or one
op and shape) and its ``role`` (fastsmooth, naive, floor...). At the end of the run a table
of medians and ratios *within each group* is printed, so every ratio compares figures
measured in the same run on the same machine."""
from __future__ import annotations

import os
import platform
import statistics
import time

import pytest
import torch

def quick() -> bool:
    """FASTSMOOTH_BENCH_PAPER=1 selects the papers' sizes (for a GPU machine); default: sized for a small CPU."""
    return os.environ.get("FASTSMOOTH_BENCH_PAPER") != "1"


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"


def sync() -> None:
    """Wait for queued GPU work, so that a timed function ends when its kernels do."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def backend_for(role: str, device: str) -> str:
    """The backend named in a role such as ``fastsmooth[cpu] out=``; skips the benchmark when
    that backend cannot run on ``device`` (or is Triton's CPU interpreter, which is no benchmark)."""
    import fastsmooth

    backend = role[role.index("[") + 1 : role.index("]")]
    info = fastsmooth.backends().get(backend)
    if info is not None and not (info.available and device in info.devices):
        pytest.skip(f"{backend} unavailable on {device}: {info.reason}")
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter is not a benchmark")
    return backend


def run(
    benchmark,
    fn,
    *,
    group: str,
    role: str,
    rounds: int,
    primary: bool = False,
    warmup: bool = True,
    interleaved: dict | None = None,
    lockstep=None,
    **info,
) -> object:
    """Time ``fn`` (after one untimed warm-up call unless ``warmup=False``) over ``rounds`` rounds,
    under a group and role.

    The ``primary`` benchmark of a group is the one the others' ratios are taken against.
    ``interleaved`` maps other roles to functions timed in the same rounds: on a machine whose
    speed drifts (shared cores) only interleaved rounds give trustworthy ratios. The order is
    a palindrome, ``others, fn | fn, reversed others | others, fn | ...``, so that a steady
    drift weighs on every role alike. Their medians go to ``extra_info["interleaved"]``, their
    round times to ``extra_info["rounds"]``.

    ``lockstep`` (a :class:`lockstep.Lockstep` whose model every role calls): within each round
    the roles take turns at every forward pass of the base network, and each role's time is
    the sum of its turns (for rows whose calls last many seconds; see benchmarks/lockstep.py).
    """
    benchmark.group = group
    benchmark.extra_info.update(role=role, primary=primary, machine=machine(), **info)
    others = list((interleaved or {}).items())
    times: dict[str, list[float]] = {name: [] for name, _ in others}
    if lockstep is not None:
        benchmark.extra_info["timing"] = "lockstep"
        return _run_lockstep(benchmark, fn, role, rounds, warmup, dict(others), times, lockstep)

    def timed(roles) -> None:
        for name, other in roles:
            start = time.perf_counter()
            other()
            times[name].append(time.perf_counter() - start)

    calls = [0]

    def setup():
        # Round r (from 0): even rounds run the others before fn, odd rounds after it; the
        # "after" half of an odd round runs in the next even round's setup (or at the end).
        if calls[0] % 2 == 0:
            if calls[0] > 0:
                timed(reversed(others))
            timed(others)
        calls[0] += 1

    if warmup:
        fn()
        for _, other in others:
            other()
    result = benchmark.pedantic(fn, setup=setup if others else None, rounds=rounds, iterations=1, warmup_rounds=0)
    if others and calls[0] % 2 == 0:
        timed(reversed(others))
    if others and all(times.values()):
        _record(benchmark, times)
    return result


def _run_lockstep(benchmark, fn, role: str, rounds: int, warmup: bool, others: dict, times: dict, lockstep) -> None:
    """``run`` with the roles of each round in lockstep. pytest-benchmark reads the primary role's
    time from a clock that advances by that role's turns only (its ``timer``, as set by
    ``--benchmark-timer``); the other roles' times are recorded as in ``run``."""
    turns = [0.0]

    def lockstep_turns() -> float:  # the name pytest-benchmark records as the timer
        return turns[0]

    def one_round() -> None:
        seconds = lockstep.run({role: fn, **others})
        turns[0] += seconds.pop(role)
        for name, value in seconds.items():
            times[name].append(value)

    if warmup:
        one_round()
        for value in times.values():
            value.clear()
    if not hasattr(benchmark, "_timer"):
        raise RuntimeError("this pytest-benchmark has no BenchmarkFixture._timer: lockstep rows cannot be timed")
    benchmark._timer = lockstep_turns
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    _record(benchmark, times)


def _record(benchmark, times: dict[str, list[float]]) -> None:
    """The other roles' medians, and every role's round times (the primary's from its stats)."""
    benchmark.extra_info["interleaved"] = {k: statistics.median(v) for k, v in times.items()}
    benchmark.extra_info["rounds"] = {benchmark.extra_info["role"]: list(benchmark.stats.stats.data), **times}


def medians(bench) -> dict[str, float]:
    """Role -> median seconds of one benchmark, its interleaved roles included."""
    out = {bench.extra_info["role"]: bench.stats.median}
    out.update(bench.extra_info.get("interleaved", {}))
    return out


def pytest_terminal_summary(terminalreporter):
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, float]] = {}
    primary: dict[str, str] = {}
    for bench in session.benchmarks:
        if not bench.stats or "role" not in bench.extra_info:
            continue
        groups.setdefault(bench.group, {}).update(medians(bench))
        if bench.extra_info.get("primary"):
            primary[bench.group] = bench.extra_info["role"]
    tr = terminalreporter
    tr.write_sep("=", f"fastsmooth: medians and ratios per group ({machine()})")
    for group, roles in groups.items():
        base_role = primary.get(group)
        base = roles.get(base_role) if base_role else None
        tr.write_line(group)
        for role, median in sorted(roles.items(), key=lambda kv: kv[1]):
            ratio = f"{median / base:8.2f}x {base_role}" if base else ""
            tr.write_line(f"    {role:<32} {median * 1e3:12.3f} ms  {ratio}")
