"""Fresh CPU outputs and transparent huge pages (csrc/ops/cpu/hugepages.h): the policy switch
FASTSMOOTH_HUGEPAGES decides whether an output's memory is advised, and never its values."""
from __future__ import annotations

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


@pytest.mark.skipif(not THP.exists() or "[madvise]" not in THP.read_text(),
                    reason="needs transparent_hugepage/enabled = madvise (huge pages only where advised)")
@pytest.mark.parametrize("mode, advised", [("1", True), ("0", False)])
def test_policy_switch_decides_the_advice(monkeypatch, mode, advised):
    require_backend("cpu")
    monkeypatch.setenv("FASTSMOOTH_HUGEPAGES", mode)
    x = torch.rand(30, 3, 32, 32)
    out = ops.ablate_bands(x, 4, backend="cpu")  # 24 MB: several whole 2 MB pages
    middle = out.data_ptr() + out.nbytes // 2
    assert thp_eligible(middle) == advised


@pytest.mark.parametrize("mode", ["auto", "1", "0"])
def test_outputs_do_not_depend_on_the_policy(monkeypatch, mode):
    require_backend("cpu")
    monkeypatch.setenv("FASTSMOOTH_HUGEPAGES", mode)
    x = torch.rand(30, 3, 32, 32)
    assert torch.equal(ops.ablate_bands(x, 4, backend="cpu"), ops.ablate_bands(x, 4, backend="reference"))
    assert torch.equal(ops.gaussian_noise(x, 0.5, 3, seed=1, backend="cpu"),
                       ops.gaussian_noise(x, 0.5, 3, seed=1, backend="cpu", out=torch.empty(90, 3, 32, 32)))
