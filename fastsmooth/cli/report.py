"""``fastsmooth report``: plots and tables from results files."""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="plot and tabulate results files (certified accuracy vs patch size / radius)")
    report.add_argument("results", nargs="+", help="results files (TSV) written by certify / evaluate")
    report.add_argument("--labels", nargs="+", help="one name per results file (default: method and hyperparameters)")
    report.add_argument("--levels", type=float, nargs="+",
                        help="patch sizes or radii of the tables (default: chosen from the results)")
    report.add_argument("-o", "--output-dir", default="fastsmooth-report",
                        help="where the PNG, SVG, Markdown and LaTeX files go (default ./fastsmooth-report)")
    report.add_argument("--no-plot", action="store_true", help="tables only (no matplotlib needed)")
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastsmooth.reporting import report

    result = report(args.results, labels=args.labels, output_dir=args.output_dir, levels=args.levels,
                    plot=not args.no_plot)
    print(result.markdown)
    print(result.summary_markdown)
    print("wrote " + ", ".join(str(path) for path in result.files.values()))
    return 0
