"""Command line: argument parsing only; the work is done by contrastkit.runs.

    contrastkit train [--config FILE.yaml] [--method simclr] [--dataset NAME|PATH] [--backbone NAME]
                      [--epochs N] [--batch-size N] [--device auto|cpu|cuda|cuda:N] [--out DIR]
                      [--resume | --overwrite] [key=value ...]
    contrastkit eval RUN_DIR [--protocol knn|linear|kmeans|class_retrieval|finetune] [--finetune-epochs N]
    contrastkit embed RUN_DIR --out FILE.npy|DIR [--split test|train] [--overwrite]
    contrastkit export RUN_DIR --format safetensors|onnx|sentence-transformers|torchvision [--out PATH] [--overwrite]
    contrastkit plot RUN_DIR
    contrastkit tune --space SPACE.yaml [--trials N] [--minutes M] [--study DIR] [--resume] [--metric KEY]
                     [train's --config, --method, --dataset, --backbone, --epochs, --batch-size, --device]
                     [key=value ...]
    contrastkit report RUN_DIR [RUN_DIR ...] [--out FILE.html]
    contrastkit list
    contrastkit --version

Every failure is one line on stderr and exit code 2 (1 for an internal error: set
CONTRASTKIT_DEBUG=1 to see its traceback); Ctrl-C exits with 130 and says what was kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, Sequence

from contrastkit import config as config_module
from contrastkit.errors import ConfigError, ContrastkitError

# Flags that map onto config keys (the rest of the config is set with key=value).
FLAG_KEYS = {"method": "method", "dataset": "dataset", "backbone": "backbone", "epochs": "epochs",
             "batch_size": "batch_size", "device": "device", "out": "out"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: the message and where to read more."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _version() -> str:
    try:
        return metadata.version("contrastkit")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        from contrastkit import __version__

        return __version__


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of FLAG_KEYS (but --out) and --config, shared by `train` and `tune`."""
    parser.add_argument("--config", type=Path, help="YAML file of config keys")
    parser.add_argument("--method", help="self-supervised method (default simclr)")
    parser.add_argument("--dataset", help="dataset name, ImageFolder path or folder of tar shards (default mnist)")
    parser.add_argument("--backbone", help="backbone name (default: the dataset's recipe)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="contrastkit", description="Contrastive and self-supervised "
                     "representation learning: pretrain, evaluate, embed, plot.")
    parser.add_argument("--version", action="version", version=f"contrastkit {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="pretrain an encoder, then evaluate and plot it")
    _add_config_flags(train)
    train.add_argument("--out", help="run folder (default runs/<method>-<dataset>-<time>)")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    start.add_argument("--overwrite", action="store_true",
                       help="start the run in --out over from epoch 1 (deletes its checkpoint, logs, plots, summary)")
    train.add_argument("--help-config", action="store_true",
                       help="list every config key with the value the given method and dataset will use")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. lr=0.1")

    evaluate = commands.add_parser("eval", help="evaluate a trained run (kNN, linear probe, k-means, class retrieval, "
                                   "fine-tuning with 1 %%, 10 %% and 100 %% of the labels)")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--protocol", choices=["knn", "linear", "kmeans", "class_retrieval", "finetune"],
                          action="append", help="repeat for several; default knn and linear")
    evaluate.add_argument("--finetune-epochs", type=int, metavar="N",
                          help="epochs of the finetune protocol (default: the run's finetune_epochs, 30)")

    embed = commands.add_parser("embed", help="save a split's embeddings as .npy")
    embed.add_argument("run_dir", type=Path)
    embed.add_argument("--out", type=Path, required=True, help="output FILE.npy, or a folder for <split>.npy")
    embed.add_argument("--split", choices=["test", "train"], default="test")
    embed.add_argument("--overwrite", action="store_true", help="replace the output files if they exist")

    export = commands.add_parser("export", help="export the encoder: safetensors (contrastkit.load_encoder), ONNX, "
                                 "a sentence-transformers folder or a torchvision state dict")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", required=True,
                        help="safetensors, onnx, sentence-transformers (text runs) or torchvision (resnet18/34/50)")
    export.add_argument("--out", type=Path, help="output file (a folder for sentence-transformers); default "
                        "RUN_DIR/export/encoder.safetensors, encoder.onnx, sentence-transformers/ or torchvision.pth")
    export.add_argument("--overwrite", action="store_true", help="replace the output if it exists")

    plot = commands.add_parser("plot", help="plot the loss curve and a 2-D map of the test embeddings")
    plot.add_argument("run_dir", type=Path)

    report = commands.add_parser("report", help="write a self-contained HTML report of a run, or compare several")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="the HTML file (default RUN_DIR/report.html; needed for several runs)")

    tune = commands.add_parser("tune", help="search config keys for the best kNN (Optuna), each trial a run folder")
    tune.add_argument("--space", type=Path, help="YAML search space, e.g. lr: {low: 0.01, high: 1.0, log: true} "
                      "and batch_size: [64, 128] (with --resume: the study's)")
    tune.add_argument("--trials", type=int,
                      help="finished trials the study should hold (default 20; with --resume, the study's)")
    tune.add_argument("--minutes", type=float, help="start no trial after this many minutes")
    tune.add_argument("--study", type=Path, help="study folder: study.db, best.yaml, trial-NNNN/ (default "
                      "runs/tune-<method>-<dataset>-<time>)")
    tune.add_argument("--resume", action="store_true", help="continue the study in --study (after a kill or Ctrl-C)")
    tune.add_argument("--metric", help="summary.json score to maximise (default knn_top1)")
    # Every trial starts from these, as `train` takes them; the searched keys override them.
    _add_config_flags(tune)
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="config keys every trial starts from")
    tune.set_defaults(out=None)  # each trial's folder is set by tune; _config_values reads every flag of FLAG_KEYS

    pack = commands.add_parser("pack-shards", help="pack an ImageFolder tree into tar shards to stream from")
    pack.add_argument("source", type=Path, help="ImageFolder tree (<class>/*, or train/<class>/* with test/ or val/)")
    pack.add_argument("destination", type=Path, help="folder for train-NNNNNN.tar, test-NNNNNN.tar and classes.txt")
    pack.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    pack.add_argument("--seed", type=int, default=0, help="seed of the shuffle before packing (default 0)")
    pack.add_argument("--no-shuffle", action="store_true", help="keep the tree's sorted order")

    collect = commands.add_parser("collect", help="collect random-policy rollouts of a gymnasium / Atari environment "
                                  "into a folder (resumable: run it again to finish)")
    collect.add_argument("env", help="gymnasium id: ALE/Pong-v5, CartPole-v1, MiniGrid-Empty-5x5-v0, ...")
    collect.add_argument("--out", type=Path, required=True, help="the folder of chunk files and collection.json")
    collect.add_argument("--steps", type=int, default=100_000, help="environment steps (default 100000)")
    collect.add_argument("--seed", type=int, default=0, help="seed of the resets and the policy (default 0)")
    collect.add_argument("--chunk-steps", type=int, default=10_000, help="steps per chunk file (default 10000)")
    collect.add_argument("--size", type=int, default=None, help="resize frames to SIZE x SIZE (default: as rendered)")

    speech = commands.add_parser("make-speech", help="write a multi-speaker speech corpus with espeak-ng (each voice "
                                 "a speaker) for audio:OUT/clips.csv")
    speech.add_argument("out", type=Path, help="the folder of WAVs and clips.csv")
    speech.add_argument("--voices", type=int, default=40, help="espeak-ng voice variants used (default 40)")
    speech.add_argument("--test-voices", type=int, default=10, help="the last voices, held out (default 10)")
    speech.add_argument("--repeats", type=int, default=3, help="renditions of each text per voice (default 3)")
    speech.add_argument("--texts", nargs="+", default=None, help="the texts, each a label (default: the ten digits)")
    speech.add_argument("--seed", type=int, default=0, help="seed of each rendition's speed and pitch (default 0)")

    commands.add_parser("list", help="list the modalities with their methods, datasets, backbones and augmentation "
                         "presets, and the heads")
    return parser


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line: the --config file, then flags, then key=value."""
    values = config_module.load_yaml(args.config) if args.config else {}
    values.update({key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None})
    values.update(config_module.parse_overrides(args.overrides))
    return values


def _train_config(args: argparse.Namespace) -> config_module.Config:
    values = _config_values(args)
    config = config_module.update(config_module.Config(), values)
    if not args.resume:
        return config
    if "out" not in values:
        raise ContrastkitError("--resume needs --out DIR, the folder of the run to continue.")
    saved_path = Path(values["out"]) / "config.yaml"
    if not saved_path.is_file():
        return config  # runs.train says there is nothing to resume
    saved = config_module.update(config_module.Config(), config_module.load_yaml(saved_path))
    # The original command may be repeated as it was; only a change is refused.
    kept = {"out", *config_module.RUNTIME_KEYS}
    changed = sorted(key for key in values if key.partition(".")[0] not in kept
                     and config_module.value_of(config, key) != config_module.value_of(saved, key))
    if changed:
        extend = (f" To train it for more epochs, start a new run from its weights (a new learning-rate schedule): "
                  f"contrastkit train --config {saved_path} init_from={values['out']} --epochs N --out NEW_DIR"
                  if "epochs" in changed else "")
        raise ContrastkitError(f"--resume continues the run with its saved config.yaml, so it cannot "
                               f"change {', '.join(changed)}; drop those options or start a new run.{extend}")
    # The folder is the one named on the command line, wherever the run was made (a moved or copied
    # run folder records its old place); runtime settings not given again keep their saved values
    # (a run saved with evaluate=false stays so).
    resumed = {key: values[key] for key in values if key in config_module.RUNTIME_KEYS}
    return config_module.update(saved, {**resumed, "out": values["out"]})


def _help_config(args: argparse.Namespace) -> str:
    from contrastkit.methods import METHODS
    from contrastkit.modalities import MODALITIES

    given = config_module.update(config_module.Config(), _config_values(args))
    config = config_module.resolve(given)
    lines = [f"config keys for {config.method} on {config.dataset} (key=value on the command line, or "
             "key: value in --config FILE.yaml); the values shown are the ones this run would use:"]
    for field in dataclasses.fields(config_module.Config):
        value = getattr(config, field.name)
        shown = ("(below)" if field.name in ("method_options", "modality_options") else "(the dataset's)"
                 if field.name == "preset" and value is None else "(unset)" if value is None else repr(value))
        allowed = config_module.CHOICES.get(field.name)
        description = config_module.DESCRIPTIONS[field.name] + (f" [{' | '.join(allowed)}]" if allowed else "")
        lines.append(f"  {field.name:<20} {shown:<22} {description}")
    defaults = METHODS.get(config.method).default_options
    lines.append(f"method_options of {config.method} (method_options.NAME=value), as this run would use them:")
    lines.extend(f"  {name:<20} {config.method_options[name]!r}" for name in defaults)
    if not defaults:
        lines.append("  (none)")
    modality = MODALITIES.get(config.modality)
    lines.append(f"options of the {modality.in_words} modality ({modality.name}.NAME=value), as this run would use "
                 "them:")
    for name, value in config.modality_options.get(modality.name, {}).items():
        allowed = modality.option_choices.get(name)
        description = modality.option_descriptions.get(name, "") + (f" [{' | '.join(allowed)}]" if allowed else "")
        key = f"{modality.name}.{name}"
        lines.append(f"  {key:<20} {value!r:<22} {description}" if len(key) <= 20 else
                     f"  {key} {value!r}  {description}")
    if not modality.default_options:
        lines.append("  (none)")
    return "\n".join(lines)


def _list() -> str:
    from contrastkit.methods import list_methods
    from contrastkit.modalities import MODALITIES
    from contrastkit.models import HEADS

    rows = {"modalities": MODALITIES.names()}
    for modality in MODALITIES.values():
        rows[f"{modality.in_words} methods"] = [name for name in list_methods() if modality.trains(name)]
        rows[f"{modality.in_words} datasets"] = modality.datasets()
        rows.update({f"{modality.in_words} {kind}": entries for kind, entries in modality.list_entries().items()})
    rows["heads"] = list(HEADS)
    width = max(map(len, rows)) + 1
    return "\n".join(f"{name:<{width}}{', '.join(items)}" for name, items in rows.items())


def _pack_shards(args: argparse.Namespace) -> int:
    from contrastkit.data.streaming import pack_shards

    written = pack_shards(args.source, args.destination, shard_size=args.shard_size, shuffle=not args.no_shuffle,
                          seed=args.seed)
    for split, shards in written.items():
        print(f"{split}: {len(shards)} shard(s) in {args.destination}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from contrastkit.export import export

    try:
        # It checks the format, the output and the extras before loading the run, and locks the folder.
        export(args.run_dir, args.format, args.out, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("\ninterrupted; the export is written whole or not at all, so nothing half-written was left. Run the "
              "same `contrastkit export` command again.", file=sys.stderr)
        return 130
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value may follow flags (train lr=0.1 --dataset digits seed=3): argparse hands the ones after
    # a flag back as unknown, so they join the others here.
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in overrides]
    if unknown or (overrides and args.command not in ("train", "tune")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _collect(args: argparse.Namespace) -> int:
    from contrastkit.data.collect import collect_to_folder

    try:
        folder = collect_to_folder(args.env, args.out, args.steps, seed=args.seed, chunk_steps=args.chunk_steps,
                                   size=args.size)
    except KeyboardInterrupt:
        print("\ninterrupted; every chunk is written whole or not at all. Run the same `contrastkit collect` command "
              "again to finish.", file=sys.stderr)
        return 130
    print(f"collected {args.steps} steps of {args.env} in {folder}")
    return 0


def _make_speech(args: argparse.Namespace) -> int:
    from contrastkit.data.espeak import DIGITS, make_speech_corpus

    table = make_speech_corpus(args.out, texts=args.texts or DIGITS, voices=args.voices, test_voices=args.test_voices,
                               repeats=args.repeats, seed=args.seed)
    print(f"wrote {table}; train a speaker encoder on it with: contrastkit train --dataset audio:{table} "
          "--method aam_softmax audio.target=speaker")
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "list":
        print(_list())
        return 0
    if args.command == "collect":
        return _collect(args)
    if args.command == "make-speech":
        return _make_speech(args)
    if args.command == "pack-shards":
        return _pack_shards(args)
    if args.command == "export":
        return _export(args)
    if args.command == "report":
        from contrastkit.report import write_report

        print(f"wrote {write_report(args.run_dirs, args.out)}")
        return 0
    from contrastkit import run_folder, runs

    if args.command == "tune":
        from contrastkit import tune as tuning

        try:
            tuning.tune(args.space, _config_values(args), study_dir=args.study, trials=args.trials,
                        minutes=args.minutes, resume=args.resume, metric=args.metric)
        except KeyboardInterrupt as interrupt:
            print(f"\n{interrupt}" if isinstance(interrupt, tuning.TuneInterrupted) else "\ninterrupted",
                  file=sys.stderr)
            return 130
        return 0
    if args.command == "train":
        if args.help_config:
            print(_help_config(args))
            return 0
        config = _train_config(args)
        try:
            runs.train(config, resume=args.resume, overwrite=args.overwrite)
        except KeyboardInterrupt as interrupt:
            print(f"\n{interrupt}" if isinstance(interrupt, runs.RunInterrupted) else "\ninterrupted",
                  file=sys.stderr)
            return 130
        return 0
    try:
        # Checked before the lock, which would make a folder that is not there; locked, so that no
        # training changes the checkpoint while it is read.
        runs.check_run_folder(args.run_dir)
        with run_folder.locked(args.run_dir, action=args.command):
            run_ = runs.Run.load(args.run_dir)
            if args.command == "embed":
                runs.embed(run_, args.out, split=args.split, overwrite=args.overwrite)
            elif args.command == "eval":
                if args.finetune_epochs is not None:
                    run_.config = config_module.update(run_.config, {"finetune_epochs": args.finetune_epochs})
                runs.evaluate(run_, args.run_dir, protocols=args.protocol or runs.DEFAULT_PROTOCOLS)
            else:
                runs.plot(run_, args.run_dir)
    except KeyboardInterrupt:
        # Every file is replaced whole (written aside, then renamed), so none is left half-written.
        print(f"\ninterrupted; no file was left half-written. Run the same `contrastkit {args.command}` command "
              "again to finish it.", file=sys.stderr)
        return 130
    return 0


# What the user can do about an operating-system error, by its errno.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "free space on that disk or choose another folder (--out)",
    errno.EDQUOT: "free space within your quota or choose another folder (--out)",
    errno.EFBIG: "the file-size limit (ulimit -f) is too small for it; raise it or choose another folder",
    errno.EACCES: "choose a folder you can write to (--out)",
    errno.EPERM: "choose a folder you can write to (--out)",
    errno.EROFS: "the file system is read-only; choose a folder on a writable one (--out)",
}


def _os_error_line(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    hint = _OS_ERROR_HINTS.get(error.errno, "check the path and try again")
    return f"cannot use{where}: {error.strerror or error}; {hint}."


def main(argv: Sequence[str] | None = None) -> None:
    try:
        sys.exit(run(argv))
    except ContrastkitError as error:
        print(f"contrastkit: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, always
        sys.exit(2)
    except OSError as error:  # the environment, not a bug: a full disk, a read-only folder, a missing path
        print(f"contrastkit: error: {' '.join(_os_error_line(error).split())}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("CONTRASTKIT_DEBUG"):
            traceback.print_exc()
        print(f"contrastkit: internal error: {type(error).__name__}: {' '.join(str(error).split())} (please "
              "report it; set CONTRASTKIT_DEBUG=1 to see the traceback)", file=sys.stderr)
        sys.exit(1)
