"""``fastsmooth info``: the backends, and (``--check``) every op against the reference."""
from __future__ import annotations

import argparse
import platform
from typing import Any

import torch


def add_parser(sub: Any) -> None:
    info = sub.add_parser("info", help="list the backends and why any is unavailable")
    info.add_argument("--check", action="store_true",
                      help="run every op on every available backend against the reference and print a table")
    info.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import fastsmooth

    print(f"fastsmooth {fastsmooth.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    print(f"CUDA devices: {torch.cuda.device_count()}  CPU threads: {torch.get_num_threads()}")
    print()
    print(f"{'backend':<10} {'available':<10} {'devices':<10} reason")
    for backend in fastsmooth.backends().values():
        devices = ",".join(backend.devices) or "-"
        print(f"{backend.name:<10} {'yes' if backend.available else 'no':<10} {devices:<10} {backend.reason}")
    if args.check:
        return check()
    return 0


def check() -> int:
    """Every op on every available compiled backend against the reference, as a table;
    status 1 when any differs or fails."""
    from fastsmooth.ops import _selfcheck

    results = _selfcheck.check_all()
    print()
    print(f"{'op':<16} {'backend':<8} {'device':<8} {'result':<9} {'seconds':>8}  detail")
    for r in results:
        print(f"{r.op:<16} {r.backend:<8} {r.device:<8} {'ok' if r.ok else 'FAILED':<9} {r.seconds:>8.3f}  {r.detail}")
    failed = [r for r in results if not r.ok]
    if not results:
        print("no compiled backend is available: only the reference runs here")
    elif failed:
        print(f"\n{len(failed)} of {len(results)} checks FAILED")
        return 1
    else:
        print(f"\nall {len(results)} checks passed")
    return 0
