"""Command line: argument parsing only; the work is done by contrastkit.runs.

    contrastkit train [--config FILE.yaml] [--method simclr] [--dataset NAME|PATH] [--backbone NAME]
                      [--epochs N] [--batch-size N] [--device auto|cpu|cuda] [--out DIR] [--resume]
                      [key=value ...]
    contrastkit eval RUN_DIR [--protocol knn|linear]
    contrastkit embed RUN_DIR --out FILE.npy [--split test|train]
    contrastkit plot RUN_DIR
    contrastkit list
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from contrastkit import config as config_module
from contrastkit.errors import ContrastkitError

# Flags that map onto config keys (the rest of the config is set with key=value).
FLAG_KEYS = {"method": "method", "dataset": "dataset", "backbone": "backbone", "epochs": "epochs",
             "batch_size": "batch_size", "device": "device", "out": "out"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastkit", description="Contrastive and self-supervised "
                                     "representation learning: pretrain, evaluate, embed, plot.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="pretrain an encoder, then evaluate and plot it")
    train.add_argument("--config", type=Path, help="YAML file of config keys")
    train.add_argument("--method", help="self-supervised method (default simclr)")
    train.add_argument("--dataset", help="dataset name or ImageFolder path (default mnist)")
    train.add_argument("--backbone", help="backbone name (default: the dataset's recipe)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--device", help="auto (default), cpu or cuda")
    train.add_argument("--out", help="run folder (default runs/<method>-<dataset>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--help-config", action="store_true", help="list every config key with its default")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. lr=0.1")

    evaluate = commands.add_parser("eval", help="evaluate a trained run (kNN and linear probe)")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--protocol", choices=["knn", "linear"], action="append",
                          help="repeat for several; default both")

    embed = commands.add_parser("embed", help="save a split's embeddings as .npy")
    embed.add_argument("run_dir", type=Path)
    embed.add_argument("--out", type=Path, required=True, help="output FILE.npy")
    embed.add_argument("--split", choices=["test", "train"], default="test")

    plot = commands.add_parser("plot", help="plot the loss curve and a 2-D map of the test embeddings")
    plot.add_argument("run_dir", type=Path)

    commands.add_parser("list", help="list methods, datasets, backbones, heads and augmentation presets")
    return parser


def _train_config(args: argparse.Namespace) -> config_module.Config:
    values = config_module.load_yaml(args.config) if args.config else {}
    values.update({key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None})
    values.update(config_module.parse_overrides(args.overrides))
    if args.resume:
        fixed = sorted(set(values) - {"out", *config_module.RUNTIME_KEYS})
        if fixed:
            raise ContrastkitError(f"--resume continues the run with its saved config.yaml, so it cannot "
                                   f"change {', '.join(fixed)}; drop those options or start a new run.")
        if "out" not in values:
            raise ContrastkitError("--resume needs --out DIR, the folder of the run to continue.")
    return config_module.update(config_module.Config(), values)


def _help_config(method: str) -> str:
    from contrastkit.methods import METHODS

    lines = ["config keys (key=value on the command line, or key: value in --config FILE.yaml):"]
    for field in dataclasses.fields(config_module.Config):
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        shown = "(recipe)" if default is None else repr(default)
        lines.append(f"  {field.name:<20} {shown}")
    options = METHODS.get(method).default_options
    lines.append(f"method_options of {method}, before its recipes fill them (method_options.NAME=value):")
    lines.extend(f"  {name:<20} {value!r}" for name, value in options.items())
    if not options:
        lines.append("  (none)")
    return "\n".join(lines)


def _list() -> str:
    from contrastkit.augment import list_presets
    from contrastkit.data import list_datasets
    from contrastkit.methods import list_methods
    from contrastkit.models import HEADS, list_backbones

    rows = {"methods": list_methods(), "datasets": list_datasets(), "backbones": list_backbones(),
            "heads": list(HEADS), "presets": list_presets()}
    return "\n".join(f"{name:<10} {', '.join(items)}" for name, items in rows.items())


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print(_list())
        return 0
    from contrastkit import runs

    if args.command == "train":
        if args.help_config:
            print(_help_config(args.method or config_module.Config.method))
            return 0
        config = _train_config(args)
        try:
            runs.train(config, resume=args.resume)
        except KeyboardInterrupt:
            print("\ninterrupted; the last completed epoch is checkpointed in the run folder. Continue "
                  "with: contrastkit train --out RUN_DIR --resume", file=sys.stderr)
            return 130
        return 0
    run_ = runs.Run.load(args.run_dir)
    if args.command == "eval":
        runs.evaluate(run_, args.run_dir, protocols=args.protocol or runs.PROTOCOLS)
    elif args.command == "embed":
        runs.embed(run_, args.out, split=args.split)
    elif args.command == "plot":
        runs.plot(run_, args.run_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        sys.exit(run(argv))
    except ContrastkitError as error:
        print(f"contrastkit: error: {error}", file=sys.stderr)
        sys.exit(2)
