"""``fastsmooth merge``: join the results files of the shards of one run (``certify --shard K/N``)."""
from __future__ import annotations

import argparse
from typing import Any

from fastsmooth import methods as _methods
from fastsmooth.cli._args import format_summary

#: summary levels of a merged file whose method is not one of fastsmooth's
DEFAULT_LEVELS = {"patch_size": [1, 2, 3, 4, 5, 6, 7], "radius": [0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]}


def add_parser(sub: Any) -> None:
    merge = sub.add_parser("merge", help="join the results files of the shards of one run (certify --shard K/N)")
    merge.add_argument("output", metavar="OUT.tsv", help="the merged results file to write")
    merge.add_argument("parts", metavar="PARTS", nargs="+", help="the results files of shards 1/N .. N/N, in any order")
    merge.add_argument("--levels", type=float, nargs="+",
                       help="certificate levels of the summary table (default: the recorded method's)")
    merge.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastsmooth.evaluate import summarize
    from fastsmooth.merge import merge_parts, write_merged

    merged = merge_parts(args.parts)
    write_merged(merged, args.output, args.parts)
    certificate_name = merged.columns[3]
    method = merged.fingerprint.get("method")  # recorded by `certify`
    if args.levels:
        levels = args.levels
    elif method in _methods.METHODS:
        levels = list(_methods.get(method).levels)
    else:
        levels = DEFAULT_LEVELS["patch_size" if certificate_name == "patch_size" else "radius"]
    print(format_summary(summarize(merged.rows, levels, merged.fingerprint), certificate_name))
    print(f"\nmerged {len(args.parts)} parts, {len(merged.rows)} images: {args.output}")
    return 0
