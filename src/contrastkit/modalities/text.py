"""Text: sentences, pairs, scored pairs and labelled sentences (STS-B, SST-2, AG News, .txt / .tsv /
.csv files, joins with ``+``, ``hf:NAME``); a Hugging Face sentence encoder (``hf:NAME``); text
views; STS Spearman, linear probes and retrieval beside the encoder before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.augment import text_preset
from contrastkit.augment.text_views import TEXT_PRESETS
from contrastkit.config import Config
from contrastkit.data import TextLoader, TextSplits, list_text_datasets, load_text_dataset
from contrastkit.data.device_loader import BatchLoader
from contrastkit.data.text import TEXT_DATASETS
from contrastkit.errors import ContrastkitError, DatasetError
from contrastkit.evaluate import (FineTuneTask, classification_metrics, extract_text_features, label_fraction_scores,
                                  linear_probe, retrieval_recall, sts_spearman)
from contrastkit.evaluate.fine_tune import LABEL_FRACTIONS
from contrastkit.methods import Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, frozen_scores, register_modality
from contrastkit.models import create_backbone
from contrastkit.models.text import DEFAULT_TEXT_ENCODER

# A linear probe on a fixed random subset of this many training sentences keeps a text evaluation
# to minutes on a CPU (SST-2 has 67k).
PROBE_TRAIN_LIMIT = 20_000
# STS-B pairs scored at least this (of 5) are near-paraphrases: the pairs retrieval is scored on.
PARAPHRASE_SCORE = 4.0


class TextModality(Modality):
    """Sentences (or pairs of them) fine-tuning a pretrained sentence encoder."""

    name = "text"
    find_unused_parameters = True  # a transformer may hold layers its sentence embedding does not use (BERT's pooler)
    # Fine-tune a pretrained sentence encoder (all-MiniLM-L6-v2 loads offline from its package).
    # STS-B: 2 epochs of batch 16 take 6.5 minutes on two CPU cores and lift CoSENT's test Spearman
    # from 0.820 to 0.858 (benchmarks/RESULTS.md); batch 64 for 4 epochs reached only 0.832.
    recipes = {
        "stsb": dict(backbone="hf:all-MiniLM-L6-v2", epochs=2, batch_size=16, knn_k=20, warmup_epochs=0.2,
                     methods={"simcse_unsup": dict(epochs=1, batch_size=64)}),
        "sst2": dict(backbone="hf:all-MiniLM-L6-v2", epochs=1, batch_size=64, knn_k=20, warmup_epochs=0.1),
        "agnews": dict(backbone="hf:all-MiniLM-L6-v2", epochs=1, batch_size=64, knn_k=20, warmup_epochs=0.1),
    }
    default_recipe = dict(backbone="hf:all-MiniLM-L6-v2", epochs=1, batch_size=64, knn_k=20, warmup_epochs=0.1)

    def claims(self, dataset: str) -> bool:
        return (dataset in TEXT_DATASETS.names() or "+" in dataset or dataset.startswith("hf:")
                or Path(dataset).suffix.lower() in (".txt", ".tsv", ".csv"))

    def datasets(self) -> list[str]:
        return list_text_datasets()

    def list_entries(self) -> dict[str, list[str]]:
        return {"presets": list(TEXT_PRESETS)}

    def build(self, config: Config, method_class: type[Method], splits: TextSplits | None,
              device: torch.device) -> Built:
        if not config.backbone.startswith("hf:"):
            raise ContrastkitError(f"{config.dataset} is a text dataset, so its encoder is a Hugging Face model: "
                                   f"backbone=hf:NAME (e.g. {DEFAULT_TEXT_ENCODER}), not {config.backbone!r}.")
        splits = splits or load_text_dataset(config.dataset, root=config.data_root)
        torch.manual_seed(config.seed)
        backbone = create_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length)
        method = method_class.from_config(backbone, config).to(device)
        preset_name = config.preset or "dropout"
        return Built(splits, method, text_preset(preset_name, backbone.tokenize, device=device), preset_name)

    def loader(self, run: BuiltRun) -> BatchLoader:
        return TextLoader(run.splits.train, run.config.batch_size, device=run.device, seed=run.config.seed)

    def features(self, run: BuiltRun, data: Any) -> tuple[Tensor, Tensor]:
        """Features of the split's (first) sentences; labels are zeros where there are none."""
        features = extract_text_features(run.method.backbone, data.texts, device=run.device)
        labels = data.labels if data.labels is not None else torch.zeros(len(data), dtype=torch.long)
        return features, labels

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """The run's scores (:func:`score_text_encoder`) beside the encoder's before training
        (``raw_baseline``): STS, the linear probe and retrieval always; k-means, class retrieval and
        fine-tuning on labelled sentences where ``protocols`` asks for them."""
        config = run.config
        sets = text_eval_sets(config, run.splits)
        if not sets:
            print(f"note: nothing to score {config.dataset} on (no test split, no STS-B under data_root)", flush=True)
            return {}
        settings = dict(device=run.device, protocols=protocols, config=config)
        results = score_text_encoder(run.method.backbone, sets, **settings)
        if config.raw_baseline:
            base = create_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length)
            results.update({f"base_{key}": value
                            for key, value in score_text_encoder(base.to(run.device), sets, **settings).items()})
        lines = [f"{'metric':<28}{'encoder':>9}" + (f"{'base model':>12}" if config.raw_baseline else "")]
        for key, value in results.items():
            if key.startswith("base_"):
                continue
            line = f"{key:<28}{value:>9.4f}"
            if config.raw_baseline:
                line += f"{results[f'base_{key}']:>12.4f}"
            lines.append(line)
        print("\n".join(lines), flush=True)
        return results

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        return run.splits.test is not None and run.splits.test.labels is not None


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


def score_text_encoder(encoder: nn.Module, sets: dict[str, TextSplits], *, device: torch.device,
                       protocols: Sequence[str] = (), config: Config | None = None) -> dict[str, float]:
    """STS Spearman (scored pairs), linear-probe top-1 and macro-F1 (labelled sentences) and
    retrieval recall@1/5/10 (pairs) of ``encoder`` on each test split, keyed ``<dataset>_<metric>``;
    on labelled sentences also k-means NMI / ARI, class retrieval and fine-tuning (the encoder
    trained on 1 %, 10 % and 100 % of the labels) where ``protocols`` names ``kmeans``,
    ``class_retrieval`` or ``finetune``.

    Args:
        encoder: a text encoder (``tokenize`` and ``forward``, as :class:`contrastkit.models.text.TextEncoder`).
        sets: the datasets to score on, by name (each with a test split).
        device: where the encoder runs.
        protocols: the asked-for protocols beside the probe (``knn`` and ``linear`` add nothing).
        config: the run's evaluation settings (``linear_weight_decay``, ``seed``: of the training
            sentences the probe is fitted on, at most 20,000; ``finetune_epochs``); default: Config().
    """
    config = config or Config()
    results: dict[str, float] = {}

    def embed(texts: list[str]) -> Tensor:
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
            rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
            rows = rows[:PROBE_TRAIN_LIMIT]
            train_x, test_x = embed([train.texts[row] for row in rows.tolist()]), embed(test.texts)
            num_classes = len(splits.classes)
            predicted = linear_probe(train_x, train.labels[rows], test_x, num_classes=num_classes,
                                     weight_decay=config.linear_weight_decay)
            metrics = classification_metrics(test.labels, predicted, num_classes=num_classes)
            results[f"{name}_linear_top1"] = round(metrics["top1"], 4)
            results[f"{name}_linear_f1"] = round(metrics["f1"], 4)
            for protocol in ("kmeans", "class_retrieval"):
                if protocol in protocols:
                    metrics = frozen_scores(protocol, train_x, train.labels[rows], test_x, test.labels, num_classes,
                                            config)
                    results.update({f"{name}_{protocol}_{key}": round(value, 4) for key, value in metrics.items()})
            if "finetune" in protocols:
                # A pretrained transformer is fine-tuned at about 2e-5; its new head at the usual 1e-3.
                # The baseline is the base model fine-tuned the same way (the base_ column), not a
                # transformer trained from scratch on a few hundred sentences.
                task = FineTuneTask(train.texts, train.labels, test.texts, test.labels, num_classes=num_classes,
                                    encoder_lr=2e-5)
                scores = label_fraction_scores(encoder, task, LABEL_FRACTIONS, epochs=config.finetune_epochs,
                                               seed=config.seed, scratch=False)
                results.update({f"{name}_{key}": round(value, 4) for key, value in scores.items()})
    return results


TEXT = register_modality(TextModality())
