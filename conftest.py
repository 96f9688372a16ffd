"""Every code block of README.md and docs/**/*.md runs as a test (Sybil).

Convention (docs/contributing.md):

- ```python blocks of one page run in order in one shared namespace;
- ```bash blocks run with ``bash -e`` and ``fastsmooth`` and ``python`` on PATH (this interpreter
  and its package, as in an activated virtual environment);
- both run in one temporary directory per page, so a shell block can use the files an earlier
  block of the same page wrote, and nothing lands in the checkout;
- any other fence (```text, ```console, ```diff, ...) is shown, not run.

Only pages are collected here: tests/ keeps its own conftest.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sybil import Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser

ROOT = Path(__file__).resolve().parent
# A shell block that runs longer than this is a docs bug (the examples must stay quick).
BASH_TIMEOUT_S = 120
_DIR = "__docs_dir__"


def _setup(namespace: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="fastsmooth-docs-"))
    # `fastsmooth` and `python` on PATH run this interpreter with this checkout's package, whichever
    # environment pytest was started from.
    bin_dir = work / ".bin"
    bin_dir.mkdir()
    for name, command in (("fastsmooth", f'"{sys.executable}" -m fastsmooth'), ("python", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    namespace[_DIR] = work
    namespace["__name__"] = "__docs__"


def _teardown(namespace: dict) -> None:
    shutil.rmtree(namespace[_DIR], ignore_errors=True)


def _python(example) -> object:
    previous = os.getcwd()
    os.chdir(example.namespace[_DIR])
    try:
        return PythonEvaluator()(example)
    finally:
        os.chdir(previous)


def _bash(example) -> str | None:
    work = example.namespace[_DIR]
    env = dict(os.environ)
    env["PATH"] = f"{work / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", example.parsed], cwd=work, env=env, capture_output=True, text=True,
            timeout=BASH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"the bash block did not finish within {BASH_TIMEOUT_S} s"
    if done.returncode != 0:
        return f"bash -e exited with {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return None


pytest_collect_file = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=_python),
        CodeBlockParser(language="bash", evaluator=_bash),
    ],
    patterns=["README.md", "docs/*.md", "docs/**/*.md"],
    path=str(ROOT),
    setup=_setup,
    teardown=_teardown,
).pytest()
