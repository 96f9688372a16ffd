"""The ``fastsmooth`` command line (also ``python -m fastsmooth``)."""
from __future__ import annotations

import argparse
import platform
import sys

import torch


def _info(_: argparse.Namespace) -> int:
    import fastsmooth

    print(f"fastsmooth {fastsmooth.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    print(f"CUDA devices: {torch.cuda.device_count()}  CPU threads: {torch.get_num_threads()}")
    print()
    print(f"{'backend':<10} {'available':<10} {'devices':<10} reason")
    for info in fastsmooth.backends().values():
        devices = ",".join(info.devices) or "-"
        print(f"{info.name:<10} {'yes' if info.available else 'no':<10} {devices:<10} {info.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsmooth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="list the backends and why any is unavailable")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
