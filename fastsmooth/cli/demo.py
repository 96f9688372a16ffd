"""``fastsmooth demo``: train (cached) and certify column smoothing on real MNIST digits."""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    demo = sub.add_parser("demo", help="train (cached) and certify column smoothing on real MNIST digits")
    demo.add_argument("--output-dir", default="fastsmooth-demo", help="where the plot and TSV go (default ./fastsmooth-demo)")
    demo.add_argument("--retrain", action="store_true", help="train even if a cached checkpoint exists")
    demo.add_argument("--epochs", type=int, help="override the recipe's epochs (changes the cache key)")
    demo.add_argument("--train-size", type=int, help="train on only this many digits (default: all 4000)")
    demo.add_argument("--holdout", type=int, default=1000, help="held-out digits (default 1000)")
    demo.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastsmooth import demo

    overrides = {k: v for k, v in (("epochs", args.epochs),) if v is not None}
    demo.run(output_dir=args.output_dir, retrain=args.retrain, train_size=args.train_size, holdout=args.holdout,
             progress=not args.no_progress, plot=not args.no_plot, **overrides)
    return 0
