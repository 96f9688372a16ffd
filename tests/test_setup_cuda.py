"""setup.py's choice of extension on a CUDA torch whose toolkit is incomplete (nvcc found, headers
missing): the CPU extension and a warning, unless FASTSMOOTH_CUDA=1 forces CUDA. A real install
cannot be tried here, so the decision is tested on its own (setup.py runs setup() only as a script)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("fastsmooth_setup_py", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the functions, builds nothing
    return module


def _toolkit(root: Path, headers: bool) -> str:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    if headers:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("")
    return str(root)


def test_incomplete_toolkit_builds_the_cpu_extension_with_a_warning(setup_py, tmp_path):
    home = _toolkit(tmp_path / "wrapper", headers=False)  # e.g. CUDA_HOME=/usr/local from /usr/local/bin/nvcc
    assert not setup_py.cuda_headers_found(home)
    cuda, warning = setup_py.cuda_decision("12.4", home, None, setup_py.cuda_headers_found(home))
    assert cuda is False
    assert "CPU extension only" in warning and "cuda_runtime.h" in warning and "FASTSMOOTH_CUDA=1" in warning
    assert setup_py.cuda_decision("12.4", home, "1", False) == (True, None)  # forced: tried, never silently CPU


def test_complete_toolkit_and_other_cases(setup_py, tmp_path):
    home = _toolkit(tmp_path / "cuda", headers=True)
    assert setup_py.cuda_headers_found(home)
    assert setup_py.cuda_decision("12.4", home, None, True) == (True, None)
    assert setup_py.cuda_decision("12.4", home, "0", True) == (False, None)
    assert setup_py.cuda_decision(None, home, None, True) == (False, None)  # a CPU torch
    assert setup_py.cuda_decision("12.4", None, None, False) == (False, None)  # no toolkit at all
    assert not setup_py.cuda_headers_found(None)
    with pytest.raises(RuntimeError, match="FASTSMOOTH_CUDA=1 but torch.version.cuda=None"):
        setup_py.cuda_decision(None, home, "1", True)
