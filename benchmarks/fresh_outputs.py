"""Fresh (allocating) CPU outputs with and without transparent huge pages, against a fresh copy.

    python benchmarks/fresh_outputs.py [--rounds 15] [--case cifar]

Times, in interleaved rounds (palindromic order, so a drift of this shared machine's speed
weighs on every role alike), the allocating column-ablation call under each huge-page policy
(FASTSMOOTH_HUGEPAGES = auto / 1 / 0, see csrc/ops/cpu/hugepages.h), the same call into a
reused buffer, and the copy floor ``torch.empty_like(out).copy_(out)``. Prints per role the
median and the spread, and each role's speed relative to the fresh copy (copy time / role
time; 1.0 = as fast as a fresh copy). Also prints the system's THP settings and the free 2 MB
blocks before the run, and the kernel's compaction and THP-fault counters (/proc/vmstat) that
moved during each role's calls (machine-wide: other processes' faults count too).

``--fragment GB`` first reproduces a fragmented machine: it touches GB of anonymous memory in
4 KB pages and frees every other page, so that free memory exists but holds no free 2 MB
blocks; a fault that insists on a huge page must then compact memory. The memory is held
for the run and released at exit.
"""
from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time
from pathlib import Path

import torch

import fastsmooth

CASES = {"cifar": ((100, 3, 32, 32), 4), "mnist": ((100, 1, 28, 28), 2), "imagenet": ((2, 3, 299, 299), 25)}


def thp_settings() -> str:
    base = Path("/sys/kernel/mm/transparent_hugepage")
    parts = []
    for name in ("enabled", "defrag"):
        try:
            parts.append(f"{name}: {(base / name).read_text().strip()}")
        except OSError:
            parts.append(f"{name}: unavailable")
    return "; ".join(parts)


def free_huge_blocks() -> int:
    blocks = 0
    for line in Path("/proc/buddyinfo").read_text().splitlines():
        counts = [int(c) for c in line.split()[4:]]
        blocks += sum(c << (k - 9) for k, c in enumerate(counts) if k >= 9)
    return blocks


VMSTAT = ("compact_stall", "compact_fail", "allocstall_normal", "allocstall_movable", "thp_fault_alloc", "thp_fault_fallback")


def vmstat() -> dict[str, int]:
    values = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, value = line.split()
        if name in VMSTAT:
            values[name] = int(value)
    return values


def fragment(gigabytes: float) -> mmap.mmap:
    """Anonymous memory touched in 4 KB pages with every other page freed again (MADV_DONTNEED):
    half of it stays allocated, scattered so that no 2 MB block of it is free."""
    size = int(gigabytes * (1 << 30)) & ~(mmap.PAGESIZE * 2 - 1)
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    page = mmap.PAGESIZE
    for offset in range(0, size, page):
        region[offset] = 1
    for offset in range(page, size, 2 * page):
        region.madvise(mmap.MADV_DONTNEED, offset, page)
    return region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--case", choices=sorted(CASES), default="cifar")
    parser.add_argument("--fragment", type=float, default=0.0, metavar="GB",
                        help="first fragment GB of memory (half of it stays held during the run)")
    args = parser.parse_args()
    held = fragment(args.fragment) if args.fragment > 0 else None
    shape, size = CASES[args.case]
    x = torch.rand(shape)
    src = fastsmooth.ops.ablate_bands(x, size, backend="cpu")
    reused = torch.empty_like(src)

    def policy(value: str):
        def go():
            os.environ["FASTSMOOTH_HUGEPAGES"] = value
            fastsmooth.ops.ablate_bands(x, size, backend="cpu")

        return go

    roles = {
        "fresh, auto": policy("auto"),
        "fresh, advised (=1)": policy("1"),
        "fresh, not advised (=0)": policy("0"),
        "reused out=": lambda: fastsmooth.ops.ablate_bands(x, size, backend="cpu", out=reused),
        "copy floor": lambda: torch.empty_like(src).copy_(src),
    }
    print(f"{args.case} {shape} s={size}: output {src.numel() * src.element_size() / 1e6:.0f} MB; "
          f"{thp_settings()}; free 2 MB blocks: {free_huge_blocks()}; torch threads {torch.get_num_threads()}")
    times: dict[str, list[float]] = {name: [] for name in roles}
    counters = {name: dict.fromkeys(VMSTAT, 0) for name in roles}
    order = list(roles)
    for fn in roles.values():  # warm-up
        fn()
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else reversed(order):
            before = vmstat()
            start = time.perf_counter()
            roles[name]()
            times[name].append(time.perf_counter() - start)
            after = vmstat()
            for k in VMSTAT:
                counters[name][k] += after.get(k, 0) - before.get(k, 0)
    os.environ.pop("FASTSMOOTH_HUGEPAGES", None)
    copy = statistics.median(times["copy floor"])
    print(f"{'role':<26} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'speed vs fresh copy':>20}  vmstat deltas")
    for name, ts in times.items():
        med = statistics.median(ts)
        moved = " ".join(f"{k}={v}" for k, v in counters[name].items() if v)
        print(f"{name:<26} {med * 1e3:>10.2f} {min(ts) * 1e3:>8.2f} {max(ts) * 1e3:>8.2f} {copy / med:>20.2f}  {moved}")
    print(f"free 2 MB blocks after: {free_huge_blocks()}")
    if held is not None:
        held.close()


if __name__ == "__main__":
    main()
