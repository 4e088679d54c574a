"""The application layer: a run folder from config to summary, used by the CLI.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/last.pt``, ``plots/*.png`` and ``summary.json`` (the final evaluation).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from contrastkit import config as config_module
from contrastkit.augment import MultiView, preset
from contrastkit.config import Config
from contrastkit.data import DatasetSplits, create_loader, load_dataset
from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import (classification_metrics, extract_features, knn_predict, linear_probe,
                                  plot_embedding, plot_training_curves)
from contrastkit.methods import METHODS, Method
from contrastkit.models import create_backbone
from contrastkit.train import Trainer, TrainerState, create_optimizer, load_checkpoint, write_atomic


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ContrastkitError("device=cuda was asked for but PyTorch sees no CUDA GPU; "
                               "use --device cpu or --device auto.")
    return torch.device(name)


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    write_atomic(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


class Run:
    """Everything built from one resolved config: data, augmentations and the method."""

    def __init__(self, config: Config, splits: DatasetSplits | None = None) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.splits = splits or load_dataset(config.dataset, root=config.data_root, image_size=config.image_size)
        method_class = METHODS.get(config.method)
        if method_class.requires_labels and len(self.splits.classes) < 2:
            raise ContrastkitError(f"{config.method} is supervised and needs class labels, but {config.dataset} has "
                                   f"{len(self.splits.classes)} class; give an ImageFolder tree with one folder per "
                                   "class, or choose a self-supervised method such as simclr.")
        torch.manual_seed(config.seed)
        backbone = create_backbone(config.backbone, in_channels=self.splits.channels,
                                   cifar_stem=bool(config.cifar_stem))
        self.method: Method = method_class.from_config(backbone, config).to(self.device)
        base_views = preset(config.preset or self.splits.default_preset,
                            size=config.image_size or self.splits.image_size, mean=self.splits.mean,
                            std=self.splits.std, **config.preset_options)
        # On the device: the normalisation constants would otherwise be copied there at every batch.
        self.augment: MultiView = self.method.configure_views(base_views).to(self.device)
        self.augment.backend = config.augment_backend
        self.augment.channels_last = config.channels_last  # the views are made in the model's layout
        self.precision = config.precision if config.precision != "auto" else (
            "bf16" if self.device.type == "cuda" else "fp32")

    @classmethod
    def load(cls, run_dir: str | Path) -> "Run":
        """Rebuild a trained run from its folder (config.yaml and checkpoints/last.pt)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise ContrastkitError(f"{run_dir} is not a run folder (no config.yaml); give the --out folder "
                                   "of a `contrastkit train` run.")
        config = config_module.update(Config(), config_module.load_yaml(run_dir / "config.yaml"))
        run = cls(config)
        checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=run.device)
        run.method.load_state_dict(checkpoint["method"])
        return run

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen backbone features (float32, CPU) and labels of the train or test split."""
        data = getattr(self.splits, split)
        features = extract_features(self.method.backbone, data.images, self.augment.eval_view,
                                    device=self.device, channels_last=self.config.channels_last)
        return features, data.labels


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = Path(config.dataset).name or "data"
    return Path("runs") / f"{config.method}-{dataset}-{stamp}"


def train(config: Config, *, resume: bool = False,
          callbacks: Sequence[Callable[[TrainerState], None]] = ()) -> Path:
    """Pretrain, then (if ``config.evaluate``) evaluate and plot; returns the run folder."""
    out_dir = Path(config.out) if config.out else default_run_dir(config)
    if resume:
        if not (out_dir / "config.yaml").is_file():
            raise ContrastkitError(f"nothing to resume in {out_dir}: it holds no config.yaml. "
                                   "Start the run without --resume.")
        # The saved config defines the run; only settings that cannot change its result carry over.
        saved = config_module.update(Config(), config_module.load_yaml(out_dir / "config.yaml"))
        config = config_module.update(saved, {key: getattr(config, key) for key in config_module.RUNTIME_KEYS})
    elif (out_dir / "checkpoints" / "last.pt").exists():
        raise ContrastkitError(f"{out_dir} already holds a run; continue it with --resume or choose "
                               "another --out folder.")
    config = config_module.resolve(config)
    config = config_module.update(config, {"out": str(out_dir)})
    run = Run(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_module.save_yaml(config, out_dir / "config.yaml")
    if run.splits.skipped:
        print(f"note: {run.splits.skipped} unreadable image(s) were skipped")
    loader = create_loader(run.splits.train.images, run.splits.train.labels, config.batch_size,
                           device=run.device, seed=config.seed, placement=config.data_placement)
    # Momentum (teacher) encoders are updated by the method, never by the optimizer.
    trainable = [parameter for parameter in run.method.parameters() if parameter.requires_grad]
    optimizer = create_optimizer(config.optimizer, trainable, lr=config.lr,
                                 momentum=config.momentum, weight_decay=config.weight_decay)
    trainer = Trainer(run.method, run.augment, loader, optimizer, epochs=config.epochs,
                      warmup_epochs=config.warmup_epochs, out_dir=out_dir, precision=run.precision,
                      channels_last=config.channels_last, compile=config.compile, compile_mode=config.compile_mode,
                      log_every=config.log_every, progress=config.progress, callbacks=callbacks)
    print(f"training {config.method} on {config.dataset} ({len(run.splits.train)} images) with "
          f"{config.backbone} on {run.device}, {config.epochs} epochs of {len(loader)} steps -> {out_dir}",
          flush=True)
    state = trainer.fit(resume=resume)
    summary = {"train_seconds": round(state.train_seconds, 2), "epochs": state.epoch, "steps": state.step,
               "device": str(run.device), "dataset": config.dataset, "method": config.method}
    _write_json_atomic(summary, out_dir / "summary.json")
    if config.evaluate:
        evaluate(run, out_dir)
    if config.plot:
        plot(run, out_dir)
    return out_dir


PROTOCOLS = ("knn", "linear")


def evaluate(run: Run, out_dir: Path, protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any]:
    """kNN and/or linear probe on frozen backbone features, beside the same on raw pixels.

    Adds ``<protocol>_top1/_precision/_recall/_f1`` and ``raw_<protocol>_...`` to summary.json.
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ContrastkitError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}.")
    config, start = run.config, time.perf_counter()
    train_features, train_labels = run.features("train")
    test_features, test_labels = run.features("test")
    inputs = {"": (train_features, test_features)}
    if config.raw_baseline:
        flat = [getattr(run.splits, split).images.flatten(1).float() / 255 for split in ("train", "test")]
        inputs["raw_"] = tuple(flat)
    num_classes = len(run.splits.classes)
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
    results["eval_seconds"] = round(time.perf_counter() - start, 2)
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update(results)
    _write_json_atomic(summary, summary_path)
    print(format_results(results, protocols, config.raw_baseline), flush=True)
    return summary


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
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        written.append(plot_training_curves(records, plots / "training.png"))
    features, labels = run.features("test")
    written.append(plot_embedding(features, labels, plots / "embedding.png", method=run.config.embedding_method,
                                  max_points=run.config.plot_points, class_names=run.splits.classes,
                                  seed=run.config.seed, title=f"{run.config.method} on {run.config.dataset}"))
    for path in written:
        print(f"wrote {path}")
    return written


def embed(run: Run, out: str | Path, split: str = "test") -> Path:
    """Save the backbone features of a split as float32 (N, D) .npy, and its labels beside them."""
    if split not in ("train", "test"):
        raise ContrastkitError(f"split must be train or test, got {split!r}.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    features, labels = run.features(split)
    np.save(out, features.numpy())
    np.save(out.with_name(out.stem + "_labels.npy"), labels.numpy())
    print(f"wrote {tuple(features.shape)} features to {out} and labels to {out.stem}_labels.npy")
    return out
