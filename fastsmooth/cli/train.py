"""``fastsmooth train``: train a base network under its method's noise."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from fastsmooth import methods as _methods
from fastsmooth.cli._args import (
    CliError,
    build_model,
    check_output,
    data_args,
    device,
    first_shape,
    given_hyper,
    hyper_args,
    load_data,
    method_help,
    probe,
)


def add_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train a base network under its method's noise")
    train.add_argument("--method", "-m", required=True, help=method_help())
    train.add_argument("--arch", default="mnist_cnn", help="base network (default mnist_cnn)")
    train.add_argument("--output", "-o", required=True, help="checkpoint file to write")
    hyper_args(train)
    data_args(train)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch-size", type=int, default=128, help="images per minibatch (default 128)")
    train.add_argument("--copies", type=int, default=1, help="noisy copies of each image per minibatch (default 1)")
    train.add_argument("--optimizer", choices=("adam", "sgd", "adamw"), default="adam")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--warmup", type=float, default=0.0,
                       help="epochs of linear learning-rate warm-up before the cosine schedule (default 0)")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="of the cross-entropy (default 0)")
    train.add_argument("--per", choices=("image", "batch"), default=None,
                       help="one noise draw (band position, pixel subset) per image or per minibatch "
                            "(default: per image; smoothed ViTs: per minibatch)")
    train.add_argument("--no-drop-tokens", action="store_true",
                       help="smoothed ViTs: train (and later certify) on every token instead of the kept ones")
    train.add_argument("--train-seed", type=int, default=0, help="seed of initialization, shuffling and noise")
    train.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastsmooth import models
    from fastsmooth.data import num_labels
    from fastsmooth.training import TrainConfig, save_checkpoint, train

    check_output(args.output, "--output")
    dataset = load_data(args.data, args.image_size)
    shape = first_shape(dataset, args.data)
    method = _methods.get(args.method)
    vit = models.is_vit(args.arch)
    num_classes = args.num_classes or num_labels(dataset)
    in_channels = shape[0] if vit else method.in_channels(shape[0])
    torch.manual_seed(args.train_seed)  # the initial weights
    model = build_model(args.arch, in_channels, num_classes, shape, False if args.no_drop_tokens else None)
    probe(model, in_channels, shape, args.arch, num_classes)
    if vit:
        try:
            method = _methods.for_vit(method, model)
        except ValueError as err:
            raise CliError(f"--arch {args.arch}: {err}") from None
    if args.stride is not None:
        raise CliError(f"--stride {' '.join(map(str, args.stride))} applies to certification only: train with every "
                       "position (as smoothed-vit does) and pass --stride to `fastsmooth certify`")
    hp = _methods.resolve(method, given_hyper(args, method), shape)
    per = args.per or method.per_choices[0]
    if per not in method.per_choices:
        raise CliError(f"--per {per}: method {method.name!r} draws its training noise per "
                       f"{' or '.join(method.per_choices)}")
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, copies=args.copies,
                         optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.train_seed,
                         warmup=args.warmup, label_smoothing=args.label_smoothing)
    losses = train(model, dataset, method.noise(hp, per), config, device=device(args.device),
                   progress=not args.no_progress, num_classes=num_classes, image_shape=shape)
    record = {**vars(config), "per": per, "data": args.data, "images": len(dataset), "losses": losses}  # type: ignore[arg-type]
    save_checkpoint(args.output, model, method=method.name, hyperparameters=hp, arch=args.arch,
                    in_channels=in_channels, num_classes=num_classes, image_shape=shape, training=record)
    print(f"trained {args.arch} for {method.name} {hp} over {args.epochs} epoch(s); final loss {losses[-1]:.4f}")
    print(f"checkpoint: {args.output}")
    return 0
