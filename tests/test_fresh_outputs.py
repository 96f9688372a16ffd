"""Fresh CPU outputs and transparent huge pages (csrc/ops/cpu/hugepages.h): the policy switch
FASTSMOOTH_HUGEPAGES decides whether an output's memory is advised, and never its values."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import require_backend
from fastsmooth import ops

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_eligible(address: int) -> bool:
    """The THPeligible flag of the mapping holding ``address`` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    raise AssertionError(f"no mapping holds {address:#x}")


# Run in a fresh process: in this one, an earlier test's advised (and freed) memory can be
# handed out again by the allocator with its advice still on the mapping.
_ADVICE_SCRIPT = """
import sys
import torch
from fastsmooth import ops
sys.path.insert(0, sys.argv[1])
from test_fresh_outputs import thp_eligible
out = ops.ablate_bands(torch.rand(30, 3, 32, 32), 4, backend="cpu")  # 24 MB: several whole 2 MB pages
print(int(thp_eligible(out.data_ptr() + out.nbytes // 2)))
"""


@pytest.mark.skipif(not THP.exists() or "[madvise]" not in THP.read_text(),
                    reason="needs transparent_hugepage/enabled = madvise (huge pages only where advised)")
@pytest.mark.parametrize("mode, advised", [("1", True), ("0", False)])
def test_policy_switch_decides_the_advice(mode, advised):
    require_backend("cpu")
    env = {**os.environ, "FASTSMOOTH_HUGEPAGES": mode}
    done = subprocess.run([sys.executable, "-c", _ADVICE_SCRIPT, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(int(advised))


@pytest.mark.parametrize("mode", ["auto", "1", "0"])
def test_outputs_do_not_depend_on_the_policy(monkeypatch, mode):
    require_backend("cpu")
    monkeypatch.setenv("FASTSMOOTH_HUGEPAGES", mode)
    x = torch.rand(30, 3, 32, 32)
    assert torch.equal(ops.ablate_bands(x, 4, backend="cpu"), ops.ablate_bands(x, 4, backend="reference"))
    assert torch.equal(ops.gaussian_noise(x, 0.5, 3, seed=1, backend="cpu"),
                       ops.gaussian_noise(x, 0.5, 3, seed=1, backend="cpu", out=torch.empty(90, 3, 32, 32)))
