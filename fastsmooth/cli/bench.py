"""``fastsmooth bench``: run the benchmarks of a source checkout and print their table."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastsmooth.cli._args import CliError


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run the benchmarks (source checkout) and print the table")
    bench.add_argument("--json", default="bench.json", help="pytest-benchmark JSON output (default bench.json)")
    bench.add_argument("--readme", help="also write the table into this Markdown file between its markers")
    bench.add_argument("--results", metavar="DIR",
                       help="also write the tables as CSV files named after the machine and torch version "
                            "(benchmarks/results: the docs' performance page renders them)")
    bench.add_argument("--paper", action="store_true", help="the papers' sizes (for a GPU machine)")
    bench.set_defaults(run=run)


def source_root() -> Path:
    """The folder above the package: a source checkout's root (where benchmarks/ lives)."""
    return Path(__file__).resolve().parents[2]


def run(args: argparse.Namespace) -> int:
    from fastsmooth import cli  # looked up at call time, so tests can point it at another folder

    root = cli._source_root()
    bench, report = root / "benchmarks", root / "benchmarks" / "report.py"
    if not report.is_file():
        raise CliError(f"the benchmarks are not installed with the package (looked in {bench}); run `fastsmooth bench` "
                       "from a source checkout installed with `pip install -e .`, or `make bench` there")
    env = dict(os.environ)
    if args.paper:
        env["FASTSMOOTH_BENCH_PAPER"] = "1"
    command = [sys.executable, "-m", "pytest", str(bench), "--benchmark-only", f"--benchmark-json={args.json}", "-q"]
    print("running:", " ".join(command), file=sys.stderr)
    status = subprocess.call(command, cwd=root, env=env)
    if status != 0:
        return status
    extra = ["--readme", args.readme] if args.readme else []
    extra += ["--results", str(Path(args.results).resolve())] if args.results else []
    return subprocess.call([sys.executable, str(report), args.json, *extra], cwd=root, env=env)
