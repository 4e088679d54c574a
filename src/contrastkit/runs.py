"""The application layer: a run folder from config to summary, used by the CLI.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/last.pt``, ``plots/*.png``, ``summary.json`` (the final evaluation) and ``report.html``; what it
guarantees (one writer, no foreign files overwritten, atomic files) is :mod:`contrastkit.run_folder`'s.

The kind of data is a registered unit (:mod:`contrastkit.modalities`), resolved once per run and
written to ``config.yaml``: it loads the data and builds the encoder, the views and the method, gives
the loader, embeds a split and scores the run. This module only puts the run folder around them;
the trainer and the methods see batches, views and labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from contrastkit import config as config_module
from contrastkit import run_folder
from contrastkit._wording import counted
from contrastkit.config import Config
from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import plot_embedding, plot_training_curves
from contrastkit.methods import METHODS, Method
from contrastkit.modalities import MODALITIES, resolve_modality
from contrastkit.report import versions, write_report
from contrastkit.train import Trainer, TrainerState, create_optimizer, load_checkpoint, read_metrics, write_atomic
from contrastkit.train.checkpoint import UnreadableCheckpoint
from contrastkit.train.distributed import (ProcessGroup, convert_sync_batchnorm, init_process_group,
                                           launcher_environment)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what the run folder holds and how to go on."""


def pick_device(name: str) -> torch.device:
    """The device ``name`` (auto, cpu, cuda, cuda:N) means; with several processes launched on a
    node, auto and cuda mean this process's GPU, ``cuda:LOCAL_RANK``."""
    config_module.check_device(name)
    launched = launcher_environment()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched.world_size > 1:
        name = f"cuda:{launched.local_rank}"
    elif name.startswith("cuda:") and launched.world_size > 1:
        raise ContrastkitError(f"device={name} names one GPU, but each of the launched processes takes its own, "
                               "cuda:LOCAL_RANK; use --device cuda or --device auto.")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ContrastkitError(f"device={name} was asked for but PyTorch sees no CUDA GPU; "
                                   "use --device cpu or --device auto.")
        if device.index is not None and device.index >= count:
            raise ContrastkitError(f"device={name} was asked for but PyTorch sees {count} CUDA GPU(s), "
                                   f"cuda:0 to cuda:{count - 1}.")
    return device


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    write_atomic(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


class Run:
    """Everything built from one resolved config by its modality: data, views and the method.

    Args:
        config: the run's config (resolved: :func:`contrastkit.config.resolve`).
        splits: the data, when already loaded (else the modality loads ``config.dataset``).
    """

    def __init__(self, config: Config, splits: Any = None) -> None:
        self.device = pick_device(config.device)
        # A config saved before the modality was recorded is recognised from its dataset.
        self.modality = MODALITIES.get(config.modality) if config.modality \
            else resolve_modality(config.dataset, config.method)
        self.precision = config.precision if config.precision != "auto" else (
            "bf16" if self.device.type == "cuda" else "fp32")
        built = self.modality.build(config, METHODS.get(config.method), splits, self.device)
        self.splits, self.method, self.augment = built.splits, built.method, built.augment
        # What ran, so that config.yaml names the modality and the preset a dataset's default stood for.
        self.config = dataclasses.replace(config, modality=self.modality.name, preset=built.preset)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Run":
        """Rebuild a trained run from its folder (config.yaml and checkpoints/last.pt); says so when
        the checkpoint is of an unfinished run."""
        run_dir = check_run_folder(run_dir)
        config = config_module.update(Config(), config_module.load_yaml(run_dir / "config.yaml"))
        run = cls(config)
        try:
            checkpoint = load_checkpoint(run_dir / run_folder.CHECKPOINT, map_location=run.device)
        except UnreadableCheckpoint as error:
            raise UnreadableCheckpoint(f"{error} To train the run again from epoch 1: {_overwrite_command(run_dir)}") \
                from error
        run.method.load_state_dict(checkpoint["method"])
        epoch = checkpoint["trainer"]["epoch"]
        if epoch < config.epochs:
            print(f"note: {run_dir} holds the weights of epoch {epoch} of {config.epochs}: its training has not "
                  f"finished (or is still under way). Continue it with: contrastkit train --out {run_dir} --resume",
                  flush=True)
        return run

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen backbone features (float32, CPU) and labels (zeros where there are none) of the
        train or test split, as the modality embeds them."""
        data = getattr(self.splits, split)
        if data is None:
            raise ContrastkitError(f"{self.config.dataset} has no {split} split; embed its train split instead.")
        return self.modality.features(self, data)


def check_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, refused unless a ``contrastkit train`` run was made there."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ContrastkitError(f"{run_dir} is not a run folder (no config.yaml); give the --out folder "
                               "of a `contrastkit train` run.")
    return run_dir


def _overwrite_command(run_dir: Path) -> str:
    """The command that trains the run in ``run_dir`` again from epoch 1, with its saved config."""
    return f"contrastkit train --config {run_dir / 'config.yaml'} --out {run_dir} --overwrite"


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = Path(config.dataset).name or "data"
    return Path("runs") / f"{config.method}-{dataset}-{stamp}"


def train(config: Config, *, resume: bool = False, overwrite: bool = False,
          callbacks: Sequence[Callable[[TrainerState], None]] = ()) -> Path:
    """Pretrain, then (if ``config.evaluate``) evaluate and plot; returns the run folder.

    Under a launcher (torchrun, srun) every process calls this: they train together, and rank 0
    alone prepares and writes the run folder, evaluates and plots, while the others wait.

    Args:
        config: the run's config (unset keys are filled from the recipes).
        resume: continue the run in ``config.out`` from its last checkpoint, with its saved config.
        overwrite: start the run in ``config.out`` over, deleting what an earlier run wrote there.
        callbacks: called with the trainer's state after every epoch's checkpoint.
    """
    if resume and overwrite:
        raise ContrastkitError("resume continues the run in the folder and overwrite starts it over; choose one.")
    already_running = dist.is_available() and dist.is_initialized()
    group = init_process_group(pick_device(config.device))
    try:
        # Recorded, whatever the config said (a resumed run may have started on another number).
        config = config_module.update(config, {"world_size": group.world_size})
        if group.is_main:
            out_dir = _train_main(config, resume, overwrite, callbacks, group)
        else:
            out_dir = _train_prepared(*_from_main(group, None), callbacks, group)
        if group.world_size > 1:
            # The others wait while rank 0 evaluates: a process leaving the group while another
            # still holds it can abort in gloo's threads at exit.
            dist.barrier()
        return out_dir
    finally:
        if group.world_size > 1 and not already_running:
            dist.destroy_process_group()


def _train_main(config: Config, resume: bool, overwrite: bool, callbacks: Sequence[Callable[[TrainerState], None]],
                group: ProcessGroup) -> Path:
    with contextlib.ExitStack() as stack:
        # Rank 0 alone checks, locks and prepares the folder, then hands every process the
        # resolved config, or its error, so that no process waits for one that has stopped.
        try:
            out_dir = Path(config.out) if config.out else default_run_dir(config)
            if resume and not (out_dir / "config.yaml").is_file():
                raise ContrastkitError(f"nothing to resume in {out_dir}: it holds no config.yaml. "
                                       "Start the run without --resume.")
            stack.enter_context(run_folder.locked(out_dir))
            prepared = _prepare_folder(config, out_dir, resume, overwrite)
        except ContrastkitError as error:
            _from_main(group, error)
        return _train_prepared(*_from_main(group, prepared), callbacks, group)


def _from_main(group: ProcessGroup, value: Any) -> Any:
    """Rank 0's ``value`` on every process; raised there when it is an error."""
    shared = [value]
    if group.world_size > 1:
        dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], ContrastkitError):
        raise shared[0]
    return shared[0]


def _train_prepared(config: Config, out_dir: Path, resume: bool,
                    callbacks: Sequence[Callable[[TrainerState], None]], group: ProcessGroup) -> Path:
    run = Run(config)
    config = run.config
    if config.init_from and not resume:
        _load_initial_weights(run.method, Path(config.init_from), run.device)
    if group.world_size > 1 and config.method_options.get("grad_cache_chunk_size"):
        raise ContrastkitError("grad_cache_chunk_size trains one process's batch in chunks and is not yet combined "
                               "with several processes; unset it, or train on one process.")
    if group.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_module.save_yaml(config, out_dir / "config.yaml")
        if getattr(run.splits, "skipped", 0):
            print(f"note: {run.splits.skipped} unreadable image(s) were skipped")
    if config.sync_batchnorm and group.world_size > 1:
        run.method = convert_sync_batchnorm(run.method, run.device)
    loader = run.modality.loader(run)
    # Momentum (teacher) encoders are updated by the method, never by the optimizer.
    trainable = [parameter for parameter in run.method.parameters() if parameter.requires_grad]
    optimizer = create_optimizer(config.optimizer, trainable, lr=config.lr,
                                 momentum=config.momentum, weight_decay=config.weight_decay)
    trainer = Trainer(run.method, run.augment, loader, optimizer, epochs=config.epochs,
                      warmup_epochs=config.warmup_epochs,
                      lr_schedule=config.lr_schedule, out_dir=out_dir, precision=run.precision,
                      channels_last=config.channels_last, compile=config.compile, compile_mode=config.compile_mode,
                      log_every=config.log_every, progress=config.progress, callbacks=callbacks,
                      find_unused_parameters=run.modality.find_unused_parameters, health=config.health,
                      stop_on_collapse=config.stop_on_collapse, method_name=config.method)
    if group.is_main:
        processes = f" x {group.world_size} processes" if group.world_size > 1 else ""
        print(f"training {config.method} on {config.dataset} ({counted(len(run.splits.train), 'sample')}) with "
              f"{config.backbone} on {run.device}{processes}, {counted(config.epochs, 'epoch')} of "
              f"{counted(len(loader), 'step')} -> {out_dir}", flush=True)
    try:
        state = trainer.fit(resume=resume)
    except KeyboardInterrupt:
        raise RunInterrupted(_interrupted_message(out_dir, trainer.checkpointed_epoch, config.epochs)) from None
    except UnreadableCheckpoint as error:
        raise UnreadableCheckpoint(f"{error} To start the run over from epoch 1: {_overwrite_command(out_dir)}") \
            from error
    if not group.is_main:
        return out_dir
    summary = {"train_seconds": round(state.train_seconds, 2), "epochs": state.epoch, "steps": state.step,
               "device": str(run.device), "dataset": config.dataset, "method": config.method,
               "world_size": group.world_size, "versions": versions(), **run.modality.after_training(loader)}
    _write_json_atomic(summary, out_dir / "summary.json")
    try:
        if config.evaluate:
            evaluate(run, out_dir)
        if config.plot:
            plot(run, out_dir)
            print(f"wrote {write_report([out_dir])}", flush=True)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted after training, which finished: epoch {config.epochs} of {config.epochs} "
                             f"is checkpointed in {out_dir}. Evaluate and plot it with: contrastkit eval {out_dir} && "
                             f"contrastkit plot {out_dir}") from None
    return out_dir


def _load_initial_weights(method: Method, source: Path, device: torch.device) -> None:
    """Start ``method`` from the weights of the run in ``source`` (its last checkpoint)."""
    checkpoint = load_checkpoint(check_run_folder(source) / run_folder.CHECKPOINT, map_location=device)
    try:
        method.load_state_dict(checkpoint["method"])
    except RuntimeError as error:
        # torch lists every mismatch under a header line; the first one says enough.
        reasons = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [str(error)]
        reason = reasons[0] if len(reasons[0]) <= 160 else reasons[0][:157] + "..."
        raise ContrastkitError(f"init_from={source}: its weights do not fit this run's model ({reason}); "
                               f"start from a run of the same method, backbone and head, e.g. with --config "
                               f"{source / 'config.yaml'}.") from None


def _prepare_folder(config: Config, out_dir: Path, resume: bool, overwrite: bool) -> tuple[Config, Path, bool]:
    """The resolved config of the run in ``out_dir`` and whether it resumes, with the folder made
    ready: a resumed run keeps its saved config, a new one starts from clean logs."""
    has_checkpoint = (out_dir / run_folder.CHECKPOINT).is_file()
    if resume:
        # The saved config defines the run; only settings that cannot change its result carry over.
        saved = config_module.update(Config(), config_module.load_yaml(out_dir / "config.yaml"))
        config = config_module.update(saved, {key: getattr(config, key) for key in config_module.RUNTIME_KEYS})
        if not has_checkpoint:
            print(f"note: {out_dir} holds no checkpoint yet (the run stopped in its first epoch); "
                  "starting it over from epoch 1", flush=True)
            run_folder.start_over(out_dir)
            resume = False
    elif has_checkpoint and not overwrite:
        raise ContrastkitError(f"{out_dir} already holds a run; continue it with --resume, start it over with "
                               "--overwrite (which deletes its checkpoint and logs), or choose another --out folder.")
    else:
        run_folder.start_over(out_dir)  # a run stopped before its first checkpoint: begin with clean logs
    if config.init_from and not resume and Path(config.init_from).resolve() == out_dir.resolve():
        raise ContrastkitError(f"init_from={config.init_from} is this run's own folder; continue that run with "
                               "--resume, or give the new run another --out folder.")
    config = config_module.resolve(config)
    return config_module.update(config, {"out": str(out_dir)}), out_dir, resume


def _interrupted_message(out_dir: Path, checkpointed_epoch: int | None, epochs: int) -> str:
    if checkpointed_epoch:
        return (f"interrupted; epoch {checkpointed_epoch} of {epochs} is checkpointed in {out_dir}. Continue with: "
                f"contrastkit train --out {out_dir} --resume")
    return (f"interrupted in the first epoch, before any checkpoint was written to {out_dir}; run the same "
            "command again to start over.")


# Every protocol, and those `train` runs after training: k-means and class retrieval are asked for
# (`contrastkit eval --protocol kmeans`), since they added 20 s to the quick start's 39 s of
# evaluation on two CPU cores (k-means on raw pixels, ten initialisations); fine-tuning trains six
# networks.
PROTOCOLS = ("knn", "linear", "kmeans", "class_retrieval", "finetune")
DEFAULT_PROTOCOLS = ("knn", "linear")


def evaluate(run: Run, out_dir: Path, protocols: Sequence[str] = DEFAULT_PROTOCOLS) -> dict[str, Any]:
    """Score a trained run as its modality does, and add the scores to summary.json: kNN and / or
    linear probes on frozen backbone features beside the same on the raw inputs (``<protocol>_top1``,
    ``_precision``, ``_recall``, ``_f1`` and ``raw_<protocol>_...``); image-text adds zero-shot or
    retrieval scores, series an SVM and 1-NN Euclidean / DTW, text STS, probes and retrieval
    (:func:`contrastkit.modalities.text.score_text_encoder`).

    Args:
        run: a trained run (:meth:`Run.load`).
        out_dir: its run folder.
        protocols: of ``knn`` and ``linear`` (probes), ``kmeans`` (clustering NMI and ARI),
            ``class_retrieval`` (precision@1, MAP@R) and ``finetune`` (the whole encoder trained on 1 %,
            10 % and 100 % of the labels, beside the network from scratch), where the modality scores
            them; default: kNN and the linear probe (DEFAULT_PROTOCOLS).
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ContrastkitError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}.")
    start = time.perf_counter()
    results = run.modality.evaluate(run, protocols)
    if not results:
        return json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").exists() else {}
    results["eval_seconds"] = round(time.perf_counter() - start, 2)
    return _add_to_summary(results, out_dir)


def _add_to_summary(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update(results)
    _write_json_atomic(summary, summary_path)
    return summary


def plot(run: Run, out_dir: Path) -> list[Path]:
    """Loss curve from metrics.jsonl and a 2-D map of the test embeddings, as PNG files."""
    plots = out_dir / "plots"
    written = []
    metrics = out_dir / "metrics.jsonl"
    if metrics.exists():
        written.append(plot_training_curves(read_metrics(metrics), plots / "training.png"))
    if not run.modality.can_plot_embedding(run):
        print("note: no labelled test split, so no embedding plot", flush=True)
    else:
        features, labels = run.features("test")
        written.append(plot_embedding(features, labels, plots / "embedding.png", method=run.config.embedding_method,
                                      max_points=run.config.plot_points, class_names=run.splits.classes,
                                      seed=run.config.seed, title=f"{run.config.method} on {run.config.dataset}"))
    for path in written:
        print(f"wrote {path}")
    return written


def embed(run: Run, out: str | Path, split: str = "test", overwrite: bool = False) -> Path:
    """Save the backbone features of a split as float32 (N, D) .npy, and its labels beside them.

    Args:
        run: a trained run (:meth:`Run.load`).
        out: the features file (``.npy`` is added when missing), or a folder, which then receives
            ``<split>.npy`` and ``<split>_labels.npy``.
        split: "test" or "train".
        overwrite: replace files that exist (otherwise they are refused, before any work).
    """
    if split not in ("train", "test"):
        raise ContrastkitError(f"split must be train or test, got {split!r}.")
    out = Path(out)
    if out.is_dir():
        out = out / f"{split}.npy"
    elif out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")  # what np.save would write; named so the message is true
    labels_path = out.with_name(out.stem + "_labels.npy")
    existing = [str(path) for path in (out, labels_path) if path.exists()]
    if existing and not overwrite:
        raise ContrastkitError(f"{' and '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}; add "
                               "--overwrite to replace, or choose another --out.")
    features, labels = run.features(split)
    write_atomic(out, lambda file: np.save(file, features.numpy()))
    write_atomic(labels_path, lambda file: np.save(file, labels.numpy()))
    print(f"wrote {tuple(features.shape)} features to {out} and labels to {labels_path}")
    return out
