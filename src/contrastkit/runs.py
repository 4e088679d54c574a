"""The application layer: a run folder from config to summary, used by the CLI.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/last.pt``, ``plots/*.png`` and ``summary.json`` (the final evaluation); what it
guarantees (one writer, no foreign files overwritten, atomic files) is :mod:`contrastkit.run_folder`'s.

One core serves every modality: the config's dataset (and method) decide whether the run is an
image run (uint8 tensors, a backbone, a MultiView preset, kNN and linear probes beside raw pixels),
a text run (sentences, an ``hf:`` encoder, text views, STS / linear-probe / retrieval scores beside
the encoder before training), an image-text run (images with captions, two towers, zero-shot and
retrieval scores) or a time series run (UCR/UEA series, a 1-D encoder, series views, SVM / kNN /
linear probes beside 1-NN Euclidean and DTW); the trainer and the methods see only batches, views
and labels.
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
from contrastkit.augment import ImageTextViews, MultiView, TextViews, preset, text_preset
from contrastkit.config import Config
from contrastkit.augment.series import series_preset
from contrastkit.data import (CaptionedLoader, DatasetSplits, DeviceLoader, ImageTextSplits, TextLoader, TextSplits,
                              create_loader, load_dataset, load_image_text_dataset, load_text_dataset)
from contrastkit.data.series import SeriesSplits, load_series
from contrastkit.data.streaming import StreamedImages, StreamLoader
from contrastkit.data.text import TEXT_DATASETS
from contrastkit.errors import ContrastkitError, DatasetError
from contrastkit.evaluate import (classification_metrics, extract_features, extract_text_features, knn_predict,
                                  linear_probe, plot_embedding, plot_training_curves, retrieval_recall, sts_spearman,
                                  zero_shot_classifier, zero_shot_predict)
from contrastkit.evaluate.series import one_nn_dtw, one_nn_euclidean, svm_probe
from contrastkit.methods import METHODS, Method
from contrastkit.models import create_backbone
from contrastkit.models.series import list_series_backbones, pooled
from contrastkit.models.text import DEFAULT_TEXT_ENCODER
from contrastkit.train import Trainer, TrainerState, create_optimizer, load_checkpoint, read_metrics, write_atomic
from contrastkit.train.checkpoint import UnreadableCheckpoint
from contrastkit.train.distributed import (ProcessGroup, convert_sync_batchnorm, init_process_group,
                                           launcher_environment)


# Captions whose locked-tower features are cached for training (384 floats each for MiniLM: 300 MB
# at the limit); a larger caption table is tokenized and encoded at every step instead.
TEXT_CACHE_LIMIT = 200_000


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
    """Everything built from one resolved config: data, views and the method, for its modality."""

    def __init__(self, config: Config,
                 splits: DatasetSplits | TextSplits | ImageTextSplits | SeriesSplits | None = None) -> None:
        self.device = pick_device(config.device)
        self.modality = config_module.modality(config.dataset, config.method)
        self.precision = config.precision if config.precision != "auto" else (
            "bf16" if self.device.type == "cuda" else "fp32")
        method_class = METHODS.get(config.method)
        if self.modality == "text":
            self._build_text(config, method_class, splits)
        elif self.modality == "image_text":
            self._build_image_text(config, method_class, splits)
        elif self.modality == "series":
            self._build_series(config, method_class, splits)
        else:
            self._build_image(config, method_class, splits)
        # What ran, so that config.yaml names the preset a dataset's default stood for.
        self.config = dataclasses.replace(config, preset=self.preset)

    def _build_text(self, config: Config, method_class: type[Method], splits: TextSplits | None) -> None:
        if not config.backbone.startswith("hf:"):
            raise ContrastkitError(f"{config.dataset} is a text dataset, so its encoder is a Hugging Face model: "
                                   f"backbone=hf:NAME (e.g. {DEFAULT_TEXT_ENCODER}), not {config.backbone!r}.")
        self.splits = splits or load_text_dataset(config.dataset, root=config.data_root)
        torch.manual_seed(config.seed)
        backbone = create_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length)
        self.method: Method = method_class.from_config(backbone, config).to(self.device)
        self.preset = config.preset or "dropout"
        self.augment: MultiView | TextViews | ImageTextViews = text_preset(self.preset, backbone.tokenize,
                                                                           device=self.device)

    def _build_image(self, config: Config, method_class: type[Method], splits: DatasetSplits | None) -> None:
        self._check_image_backbone(config)
        self.splits = splits or load_dataset(config.dataset, root=config.data_root, image_size=config.image_size,
                                             placement=config.data_placement)
        for split in (self.splits.train, self.splits.test):
            if isinstance(split.images, StreamedImages):
                split.images.decode_device = self.device  # evaluation decodes its batches there too
        if method_class.requires_labels and len(self.splits.classes) < 2:
            raise ContrastkitError(f"{config.method} is supervised and needs class labels, but {config.dataset} has "
                                   f"{len(self.splits.classes)} class; give an ImageFolder tree with one folder per "
                                   "class, or choose a self-supervised method such as simclr.")
        self.method = self._image_method(config, method_class)
        # On the device: the normalisation constants would otherwise be copied there at every batch.
        self.augment = self.method.configure_views(self._image_views(config)).to(self.device)

    def _build_image_text(self, config: Config, method_class: type[Method], splits: ImageTextSplits | None) -> None:
        self._check_image_backbone(config)
        self.splits = splits or load_image_text_dataset(config.dataset, root=config.data_root,
                                                        image_size=config.image_size,
                                                        templates=config.caption_templates)
        self.method = self._image_method(config, method_class)
        image_views = self.method.configure_views(self._image_views(config))
        tokenize = self.method.text_tower.tokenize
        if self.method.text_tower.encoder in self.method.locked and len(self.splits.captions) <= TEXT_CACHE_LIMIT:
            # A locked text tower gives each caption the same features at every step: encode them
            # once, and train without the tokenizer and the text encoder in the step.
            self.method.cache_text_features(self.splits.captions)
            tokenize = None
        self.augment = ImageTextViews(image_views, self.splits.captions, tokenize).to(self.device)

    def _build_series(self, config: Config, method_class: type[Method], splits: SeriesSplits | None) -> None:
        series_backbones = list_series_backbones()
        if config.backbone not in series_backbones:
            raise ContrastkitError(f"{config.dataset} holds time series, so its encoder is a series encoder "
                                   f"({', '.join(series_backbones)}), not {config.backbone!r}.")
        self.splits = splits or load_series(config_module.series_name(config.dataset), data_root=config.data_root)
        torch.manual_seed(config.seed)
        backbone = pooled(create_backbone(config.backbone, in_channels=self.splits.channels), config.series_pooling)
        self.method = method_class.from_config(backbone, config).to(self.device)
        self.preset = config.preset or "simclr"
        views = series_preset(self.preset, **config.preset_options)
        self.augment = self.method.configure_views(views).to(self.device)

    @staticmethod
    def _check_image_backbone(config: Config) -> None:
        if config.backbone.startswith("hf:"):
            text_tower = " (an image-text method's text tower is method_options.text_encoder)" \
                if "image_text" in METHODS.get(config.method).modalities else ""
            raise ContrastkitError(f"backbone {config.backbone} is a text encoder, but {config.dataset} holds images; "
                                   f"choose an image backbone (contrastkit list) or a text dataset{text_tower}.")

    def _image_method(self, config: Config, method_class: type[Method]) -> Method:
        torch.manual_seed(config.seed)
        backbone = create_backbone(config.backbone, in_channels=self.splits.channels,
                                   cifar_stem=bool(config.cifar_stem))
        return method_class.from_config(backbone, config).to(self.device)

    def _image_views(self, config: Config) -> MultiView:
        self.preset = config.preset or self.splits.default_preset
        views = preset(self.preset, size=config.image_size or self.splits.image_size,
                       mean=self.splits.mean, std=self.splits.std, **config.preset_options)
        views.backend = config.augment_backend
        views.channels_last = config.channels_last  # the views are made in the model's layout
        return views

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
        train or test split; for text, of the split's (first) sentences."""
        data = getattr(self.splits, split)
        if data is None:
            raise ContrastkitError(f"{self.config.dataset} has no {split} split; embed its train split instead.")
        if self.modality == "text":
            features = extract_text_features(self.method.backbone, data.texts, device=self.device)
            labels = data.labels if data.labels is not None else torch.zeros(len(data), dtype=torch.long)
            return features, labels
        if self.modality == "series":
            return extract_features(self.method.backbone, data.values, device=self.device), data.labels
        features = extract_features(self.method.backbone, data.images, self.augment.eval_view,
                                    device=self.device, channels_last=self.config.channels_last)
        return features, data.labels


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
    if run.modality == "text":
        loader = TextLoader(run.splits.train, config.batch_size, device=run.device, seed=config.seed)
    elif run.modality == "series":
        loader = DeviceLoader(run.splits.train.values, run.splits.train.labels, config.batch_size, device=run.device,
                              seed=config.seed)
    elif run.modality == "image_text":
        loader = CaptionedLoader(run.splits.train.images, run.splits.train_captions, run.splits.train.labels,
                                 config.batch_size, device=run.device, seed=config.seed)
    else:
        loader = create_loader(run.splits.train.images, run.splits.train.labels, config.batch_size,
                               device=run.device, seed=config.seed, placement=config.data_placement)
    # Momentum (teacher) encoders are updated by the method, never by the optimizer.
    trainable = [parameter for parameter in run.method.parameters() if parameter.requires_grad]
    optimizer = create_optimizer(config.optimizer, trainable, lr=config.lr,
                                 momentum=config.momentum, weight_decay=config.weight_decay)
    trainer = Trainer(run.method, run.augment, loader, optimizer, epochs=config.epochs,
                      warmup_epochs=config.warmup_epochs,
                      lr_schedule=config.lr_schedule, out_dir=out_dir, precision=run.precision,
                      channels_last=config.channels_last, compile=config.compile, compile_mode=config.compile_mode,
                      log_every=config.log_every, progress=config.progress, callbacks=callbacks,
                      # A transformer may hold layers its sentence embedding does not use (BERT's pooler).
                      find_unused_parameters=run.modality in ("text", "image_text"))
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
               "world_size": group.world_size}
    if isinstance(loader, StreamLoader):
        summary["skipped_images"] = loader.skipped
        if loader.skipped:
            print(f"note: {loader.skipped} unreadable image(s) were skipped while streaming", flush=True)
    _write_json_atomic(summary, out_dir / "summary.json")
    try:
        if config.evaluate:
            evaluate(run, out_dir)
        if config.plot:
            plot(run, out_dir)
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


PROTOCOLS = ("knn", "linear")


def evaluate(run: Run, out_dir: Path, protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any]:
    """kNN and/or linear probe on frozen backbone features, beside the same on raw pixels; for
    image-text runs also zero-shot classification and image-text retrieval; for series an SVM too,
    beside 1-NN Euclidean and DTW on the raw series (text runs: see :func:`score_text_encoder`).

    Adds ``<protocol>_top1/_precision/_recall/_f1`` and ``raw_<protocol>_...`` to summary.json
    (``zero_shot_...`` and ``image_to_text_recall@k`` / ``text_to_image_recall@k`` for image-text).
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ContrastkitError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}.")
    if run.modality == "text":
        return _evaluate_text(run, out_dir)
    if run.modality == "series":
        return _evaluate_series(run, out_dir, protocols)
    start = time.perf_counter()
    results = _probe_results(run, protocols)
    image_text = _image_text_results(run) if run.modality == "image_text" else {}
    if not results and not image_text:
        return json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").exists() else {}
    results.update(image_text)
    results["eval_seconds"] = round(time.perf_counter() - start, 2)
    raw = f"raw_{protocols[0]}_top1" in results
    lines = [format_results(results, protocols, raw)] if f"{protocols[0]}_top1" in results else []
    lines += [f"{key:<28}{value:>9.4f}" for key, value in image_text.items()]
    print("\n".join(lines), flush=True)
    return _add_to_summary(results, out_dir)


def _probe_results(run: Run, protocols: Sequence[str]) -> dict[str, Any]:
    """kNN / linear-probe metrics of the backbone's features (and of raw pixels) on the test split."""
    config = run.config
    num_classes = len(run.splits.classes)
    if num_classes == 1:
        # Every prediction would be right: a top-1 of 1.0 that says nothing about the encoder.
        print(f"note: {config.dataset} has a single class, so kNN and linear-probe accuracy would be 1.0 by "
              "construction; evaluation skipped (give labelled data, one folder per class, to evaluate).", flush=True)
        return {}
    if num_classes == 0:  # a caption table: scored by retrieval instead
        return {}
    train_features, train_labels = run.features("train")
    test_features, test_labels = run.features("test")
    inputs = {"": (train_features, test_features)}
    if config.raw_baseline and isinstance(run.splits.train.images, StreamedImages):
        print("note: no raw-pixel baseline for streamed images (it would decode the whole dataset into memory).",
              flush=True)
    elif config.raw_baseline:
        flat = [getattr(run.splits, split).images.flatten(1).float() / 255 for split in ("train", "test")]
        inputs["raw_"] = tuple(flat)
    results: dict[str, Any] = {}
    for prefix, (train_x, test_x) in inputs.items():
        for protocol in protocols:
            if protocol == "knn":
                predicted = knn_predict(train_x, train_labels, test_x, k=config.knn_k,
                                        temperature=config.knn_temperature, num_classes=num_classes)
            else:
                predicted = linear_probe(train_x, train_labels, test_x, num_classes=num_classes,
                                         weight_decay=config.linear_weight_decay)
            metrics = classification_metrics(test_labels, predicted, num_classes=num_classes)
            results.update({f"{prefix}{protocol}_{key}": round(value, 4) for key, value in metrics.items()})
    return results


# Retrieval on a caption table without test rows is scored on this many of its training pairs.
RETRIEVAL_TRAIN_PAIRS = 1000


def _image_text_results(run: Run) -> dict[str, float]:
    """Zero-shot top-1 / macro-F1 on the test split of class-captioned data (prompts from the
    templates); image-to-text and text-to-image recall@1/5/10 on a caption table's test pairs
    (``train_`` keys: its first training pairs, when it has no test rows)."""
    splits: ImageTextSplits = run.splits
    method, device = run.method, run.device

    def embed_images(images: torch.Tensor) -> torch.Tensor:
        return extract_features(method.image_tower, images, run.augment.eval_view, device=device,
                                channels_last=run.config.channels_last)

    def embed_texts(texts: list[str]) -> torch.Tensor:
        return extract_text_features(method.text_tower, texts, device=device)

    if splits.captions_per_class:
        classifier = zero_shot_classifier(embed_texts, splits.prompt_names, splits.templates)
        predicted = zero_shot_predict(embed_images(splits.test.images), classifier)
        metrics = classification_metrics(splits.test.labels, predicted, num_classes=len(splits.classes))
        return {"zero_shot_top1": round(metrics["top1"], 4), "zero_shot_f1": round(metrics["f1"], 4)}
    prefix, images, ids = "", splits.test.images if splits.test is not None else None, splits.test_captions
    if images is None:
        prefix = "train_"
        images, ids = splits.train.images[:RETRIEVAL_TRAIN_PAIRS], splits.train_captions[:RETRIEVAL_TRAIN_PAIRS]
    caption_ids = ids[:, 0]
    captions = [splits.captions[index] for index in caption_ids.tolist()]
    # A table's equal captions share one id, and training counts pairs sharing a caption as
    # positives of each other: so do the scores, else each tied copy would count as a miss.
    recall = retrieval_recall(embed_images(images), embed_texts(captions), group_ids=caption_ids)
    names = {"q2k": "image_to_text", "k2q": "text_to_image"}
    return {f"{prefix}{names[key[:3]]}{key[3:]}": round(value, 4) for key, value in recall.items()}


def _evaluate_series(run: Run, out_dir: Path, protocols: Sequence[str]) -> dict[str, Any]:
    """kNN, linear probe and an RBF SVM (TS2Vec's protocol) on the frozen representation of the
    official test split, beside 1-NN Euclidean and 1-NN DTW on the raw series."""
    config, start = run.config, time.perf_counter()
    num_classes = len(run.splits.classes)
    (train_x, train_y), (test_x, test_y) = run.features("train"), run.features("test")
    predictions = {"svm": svm_probe(train_x, train_y, test_x)}
    if "knn" in protocols:
        predictions["knn"] = knn_predict(train_x, train_y, test_x, k=min(config.knn_k, len(train_y)),
                                         temperature=config.knn_temperature, num_classes=num_classes)
    if "linear" in protocols:
        predictions["linear"] = linear_probe(train_x, train_y, test_x, num_classes=num_classes,
                                             weight_decay=config.linear_weight_decay)
    if config.raw_baseline:
        raw_train, raw_test = run.splits.train.values, run.splits.test.values
        predictions["raw_1nn_euclidean"] = one_nn_euclidean(raw_train, train_y, raw_test)
        predictions["raw_1nn_dtw"] = one_nn_dtw(raw_train, train_y, raw_test)
    results: dict[str, Any] = {}
    for name, predicted in predictions.items():
        metrics = classification_metrics(test_y, predicted, num_classes=num_classes)
        results.update({f"{name}_{key}": round(value, 4) for key, value in metrics.items()})
    results["eval_seconds"] = round(time.perf_counter() - start, 2)
    print("\n".join([f"{'protocol':<20}{'top1':>8}{'f1':>8}"] + [
        f"{name:<20}{results[f'{name}_top1']:>8.4f}{results[f'{name}_f1']:>8.4f}" for name in predictions]), flush=True)
    return _add_to_summary(results, out_dir)


def _add_to_summary(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update(results)
    _write_json_atomic(summary, summary_path)
    return summary


# A linear probe on a fixed random subset of this many training sentences keeps a text evaluation
# to minutes on a CPU (SST-2 has 67k).
PROBE_TRAIN_LIMIT = 20_000
# STS-B pairs scored at least this (of 5) are near-paraphrases: the pairs retrieval is scored on.
PARAPHRASE_SCORE = 4.0


def text_eval_sets(config: Config, splits: TextSplits) -> dict[str, TextSplits]:
    """What a text run is scored on: each named part of its dataset that has a test split, and
    STS-B whenever it can be loaded from ``data_root`` (the common yardstick of sentence encoders)."""
    sets = {config.dataset: splits} if splits.test is not None else {}
    for name in config.dataset.split("+"):
        if name != config.dataset and name in TEXT_DATASETS.names():
            sets[name] = load_text_dataset(name, root=config.data_root)
    if "stsb" not in sets:
        try:
            sets["stsb"] = load_text_dataset("stsb", root=config.data_root)
        except DatasetError:
            print("note: STS-B is not under data_root, so the run is not scored on it", flush=True)
    return {name: data for name, data in sets.items() if data.test is not None}


def score_text_encoder(encoder: torch.nn.Module, sets: dict[str, TextSplits], *, device: torch.device,
                       linear_weight_decay: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """STS Spearman (scored pairs), linear-probe top-1 and macro-F1 (labelled sentences) and
    retrieval recall@1/5/10 (pairs) of ``encoder`` on each test split, keyed ``<dataset>_<metric>``."""
    results: dict[str, float] = {}

    def embed(texts: list[str]) -> torch.Tensor:
        return extract_text_features(encoder, texts, device=device)

    for name, splits in sets.items():
        test = splits.test
        if test.pairs is not None:
            first, second = embed(test.texts), embed(test.pairs)
            near = slice(None)
            if test.scores is not None:
                results[f"{name}_spearman"] = round(sts_spearman(first, second, test.scores), 4)
                near = test.scores >= PARAPHRASE_SCORE
            results.update({f"{name}_{key}": round(value, 4)
                            for key, value in retrieval_recall(first[near], second[near]).items()})
        elif test.labels is not None:
            train = splits.train
            rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:PROBE_TRAIN_LIMIT]
            train_x = embed([train.texts[row] for row in rows.tolist()])
            predicted = linear_probe(train_x, train.labels[rows], embed(test.texts), num_classes=len(splits.classes),
                                     weight_decay=linear_weight_decay)
            metrics = classification_metrics(test.labels, predicted, num_classes=len(splits.classes))
            results[f"{name}_linear_top1"] = round(metrics["top1"], 4)
            results[f"{name}_linear_f1"] = round(metrics["f1"], 4)
    return results


def _evaluate_text(run: Run, out_dir: Path) -> dict[str, Any]:
    """The text run's scores beside the encoder's before training (``raw_baseline``)."""
    config, start = run.config, time.perf_counter()
    sets = text_eval_sets(config, run.splits)
    if not sets:
        print(f"note: nothing to score {config.dataset} on (no test split, no STS-B under data_root)", flush=True)
        return _add_to_summary({}, out_dir)
    results = score_text_encoder(run.method.backbone, sets, device=run.device,
                                 linear_weight_decay=config.linear_weight_decay, seed=config.seed)
    if config.raw_baseline:
        base = create_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length).to(run.device)
        results.update({f"base_{key}": value for key, value in score_text_encoder(
            base, sets, device=run.device, linear_weight_decay=config.linear_weight_decay, seed=config.seed).items()})
    results["eval_seconds"] = round(time.perf_counter() - start, 2)
    lines = [f"{'metric':<28}{'encoder':>9}" + (f"{'base model':>12}" if config.raw_baseline else "")]
    for key, value in results.items():
        if key.startswith("base_") or key == "eval_seconds":
            continue
        line = f"{key:<28}{value:>9.4f}"
        if config.raw_baseline:
            line += f"{results[f'base_{key}']:>12.4f}"
        lines.append(line)
    print("\n".join(lines), flush=True)
    return _add_to_summary(results, out_dir)


def format_results(results: dict[str, Any], protocols: Sequence[str], raw: bool) -> str:
    names = {"knn": "kNN", "linear": "linear probe"}
    lines = [f"{'protocol':<14}{'metric':<11}{'encoder':>9}" + (f"{'raw pixels':>12}" if raw else "")]
    for protocol in protocols:
        for metric in ("top1", "f1"):
            line = f"{names[protocol]:<14}{metric:<11}{results[f'{protocol}_{metric}']:>9.4f}"
            if raw:
                line += f"{results[f'raw_{protocol}_{metric}']:>12.4f}"
            lines.append(line)
    return "\n".join(lines)


def plot(run: Run, out_dir: Path) -> list[Path]:
    """Loss curve from metrics.jsonl and a 2-D map of the test embeddings, as PNG files."""
    plots = out_dir / "plots"
    written = []
    metrics = out_dir / "metrics.jsonl"
    if metrics.exists():
        written.append(plot_training_curves(read_metrics(metrics), plots / "training.png"))
    test = run.splits.test
    if test is None or (run.modality == "text" and test.labels is None) or (run.modality == "image_text"
                                                                          and not run.splits.classes):
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
