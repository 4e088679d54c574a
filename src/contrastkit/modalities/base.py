"""The contract a kind of data keeps, so that the application can train, evaluate, embed and plot it
without knowing what it is.

A :class:`Modality` says which datasets are its own and loads them, builds the encoder, the views and
the method for a run, gives the loader a batch is drawn from, embeds a split for evaluation, scores
its runs, and carries its recipes and its own config options beside it. The shared machinery (losses,
heads, methods, the trainer, kNN / linear probes, plots) stays shared; a unit only puts it together.

A new kind of data is one subclass, registered by name (see ``tests/test_modality_contract.py`` for
one in about 70 lines)::

    class Vectors(Modality):
        name = "vectors"
        methods = ("simclr",)             # methods that train on it beside those naming it
        default_recipe = dict(backbone="mlp", epochs=3, batch_size=64, knn_k=5, temperature=0.2)

        def claims(self, dataset): return dataset.startswith("blobs")
        def build(self, config, method_class, splits, device): ...  # -> Built(splits, method, views, preset)
        def inputs(self, data): return data.values

    register_modality(Vectors())
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from contrastkit.data.device_loader import BatchLoader, DeviceLoader
from contrastkit.errors import ConfigError
from contrastkit.evaluate import (FineTuneTask, class_retrieval_scores, classification_metrics, extract_features,
                                  kmeans_scores, knn_predict, label_fraction_scores, linear_probe)
from contrastkit.evaluate.fine_tune import LABEL_FRACTIONS, fraction_name
from contrastkit.methods import METHODS
from contrastkit.registry import Registry

if TYPE_CHECKING:
    from contrastkit.config import Config
    from contrastkit.methods import Method


class Splits(Protocol):
    """A modality's data, as the application reads it: each split has a length and ``labels``
    (class ids, or None where unlabelled); ``test`` is None where there is no test split, and
    ``classes`` is [] for unlabelled data."""

    train: Any
    test: Any | None
    classes: list[str]


class Views(Protocol):
    """A modality's augmentation: called on a batch with the epoch's generator, it returns the
    views the method's ``training_step`` takes (image tensors, token dicts, vectors...)."""

    def __call__(self, batch: Any, generator: torch.Generator | None = None) -> Sequence[Any]: ...


@dataclass
class Built:
    """What a modality builds for a run: its data, its method (on the run's device) and the views
    the trainer calls on each batch, with the name of the preset they stand for."""

    splits: Splits
    method: "Method"
    augment: Views
    preset: str


class BuiltRun(Protocol):
    """What a modality's run-time hooks read of a run (:class:`contrastkit.runs.Run`)."""

    config: "Config"
    device: torch.device
    splits: Splits
    method: "Method"
    augment: Views

    def features(self, split: str) -> tuple[Tensor, Tensor]: ...


class Modality:
    """One kind of data, as the application sees it. Subclasses set ``name`` and implement
    :meth:`claims`, :meth:`build` and :meth:`inputs` (or override what uses ``inputs``); the rest has
    defaults for labelled tensors held in memory.

    Class attributes:
        name: the registered name (``modality=NAME`` in a config; its options are ``NAME.OPTION``).
        catch_all: claims whatever no other modality claims (images, whose loader says what is missing).
        streams_from_files: supports ``data_placement=stream``.
        methods: methods that train on this data beside those that name it in ``Method.modalities``.
        default_options: the modality's own config options with their defaults (``NAME.OPTION=value``).
        option_choices: the allowed values of options that take one of a few.
        option_descriptions: what each option means, for ``--help-config``.
        renamed_keys: flat config keys of earlier releases (old name -> option name), still accepted.
        recipes: per dataset name, config values filled where the user left a key unset, with an
            optional ``methods`` entry per method (see :func:`contrastkit.config.resolve`).
        default_recipe: the recipe of its datasets that have none of their own.
        find_unused_parameters: DDP must look for parameters a step leaves unused (a transformer's
            pooler that the sentence embedding skips).
        raw_name: what the raw-input baseline is called in the results table.
    """

    name: ClassVar[str]
    catch_all: ClassVar[bool] = False
    streams_from_files: ClassVar[bool] = False
    methods: ClassVar[tuple[str, ...]] = ()
    default_options: ClassVar[dict[str, Any]] = {}
    option_choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    option_descriptions: ClassVar[dict[str, str]] = {}
    renamed_keys: ClassVar[dict[str, str]] = {}
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    default_recipe: ClassVar[dict[str, Any]] = {}
    find_unused_parameters: ClassVar[bool] = False
    raw_name: ClassVar[str] = "raw inputs"

    # --- which data -----------------------------------------------------------------------------

    @property
    def in_words(self) -> str:
        """The name as a sentence says it, e.g. "image-text"."""
        return self.name.replace("_", "-")

    @property
    def with_article(self) -> str:
        """The name as a sentence says it, with its article ("an image", "a series")."""
        return f"{'an' if self.in_words[0] in 'aeiou' else 'a'} {self.in_words}"

    def claims(self, dataset: str) -> bool:
        """Whether ``dataset`` (a registered name, a path, a prefixed name) is data of this kind."""
        raise NotImplementedError

    def adopts(self, dataset: str, claimed_by: "Modality") -> bool:
        """Whether this modality can also train on ``dataset``, which ``claimed_by`` claims, for a
        method that trains on this modality only (image-text methods caption labelled images)."""
        return False

    def datasets(self) -> list[str]:
        """The datasets `contrastkit list` shows for this modality."""
        return sorted(self.recipes)

    def list_entries(self) -> dict[str, list[str]]:
        """Further rows of `contrastkit list` (backbones, presets), keyed by what they list."""
        return {}

    def trains(self, method: str) -> bool:
        """Whether the registered method ``method`` trains on this data."""
        return self.name in METHODS.get(method).modalities or method in self.methods

    # --- recipes and options ----------------------------------------------------------------------

    def recipe(self, dataset: str) -> dict[str, Any]:
        """The dataset's recipe (a copy): its own entry, else the modality's default."""
        return dict(self.recipes.get(dataset, self.default_recipe))

    def recipe_key(self, config: "Config") -> str:
        """Which entry of ``Method.recipes`` applies to runs of this modality."""
        return self.name

    def derived_defaults(self, config: "Config") -> dict[str, Any]:
        """Config values that follow from the data once the recipes are in (e.g. the ResNet stem
        for small images); only keys the user left unset are filled."""
        return {}

    def options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``default_options`` updated with ``given``, each name and value checked."""
        given = dict(given or {})
        for key, value in given.items():
            if key not in self.default_options:
                close = difflib.get_close_matches(key, self.default_options, n=1)
                hint = f"; did you mean {self.name}.{close[0]}?" if close else ""
                known = ", ".join(f"{self.name}.{name}" for name in sorted(self.default_options)) or "none"
                raise ConfigError(f"unknown option {self.name}.{key}{hint} The {self.in_words} options: {known}.")
            allowed = self.option_choices.get(key)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{self.name}.{key} must be one of {', '.join(map(str, allowed))}, got {value!r}.")
        return {**self.default_options, **given}

    # --- a run --------------------------------------------------------------------------------------

    def build(self, config: "Config", method_class: type["Method"], splits: Any, device: torch.device) -> Built:
        """The run's data (``splits`` when given, else loaded from ``config.dataset``), its method on
        ``device`` and its views."""
        raise NotImplementedError

    def inputs(self, data: Any) -> Tensor:
        """The tensor of a split (``splits.train`` or ``splits.test``) that batches are drawn from."""
        raise NotImplementedError

    def loader(self, run: BuiltRun) -> BatchLoader:
        """The training batches: the train split's inputs and labels in the seeded shared order."""
        train, config = run.splits.train, run.config
        return DeviceLoader(self.inputs(train), train.labels, config.batch_size, device=run.device, seed=config.seed)

    def features(self, run: BuiltRun, data: Any) -> tuple[Tensor, Tensor]:
        """Frozen backbone features (float32, CPU) and labels of one split."""
        return extract_features(run.method.backbone, self.inputs(data), device=run.device), data.labels

    def fine_tune_task(self, run: BuiltRun) -> FineTuneTask | None:
        """The labelled train and test splits as the encoder takes them, for the ``finetune``
        protocol; None where the run cannot be fine-tuned (the reason printed)."""
        splits = run.splits
        return FineTuneTask(self.inputs(splits.train), splits.train.labels, self.inputs(splits.test),
                            splits.test.labels, num_classes=len(splits.classes))

    def raw_inputs(self, run: BuiltRun) -> tuple[Tensor, Tensor] | None:
        """The raw train and test inputs as flat float rows, the baseline the encoder should beat;
        None where there is none."""
        return tuple(self.inputs(getattr(run.splits, split)).flatten(1).float() for split in ("train", "test"))

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """The run's scores on its test split (printed as a table); empty where nothing applies."""
        results = probe_results(self, run, protocols)
        if results:
            print(format_results(results, protocols, self.raw_name), flush=True)
        return results

    def after_training(self, loader: BatchLoader) -> dict[str, Any]:
        """Figures of the training data for summary.json (e.g. images skipped while streaming)."""
        return {}

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        """Whether the test split has the class labels an embedding map is coloured by."""
        return run.splits.test is not None and bool(run.splits.classes)


def probe_results(modality: Modality, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
    """The ``protocols``' metrics of the encoder on the test split, beside the same on the raw inputs
    (``raw_`` keys, when ``raw_baseline``); empty for data without two classes. ``knn`` and
    ``linear`` classify the test split from the train split's frozen features (top-1, precision,
    recall, F1); ``kmeans`` clusters the test split into as many clusters as classes (NMI, ARI);
    ``class_retrieval`` retrieves each test item among the others by class (precision@1,
    R-precision, MAP@R, as pytorch-metric-learning's AccuracyCalculator); ``finetune`` trains the
    whole encoder on 1 %, 10 % and 100 % of the labels, beside the network trained from scratch
    (``scratch_`` keys, :func:`fine_tune_results`)."""
    config = run.config
    num_classes = len(run.splits.classes)
    if num_classes == 1:
        # Every prediction would be right: a top-1 of 1.0 that says nothing about the encoder.
        print(f"note: {config.dataset} has a single class, so kNN and linear-probe accuracy would be 1.0 by "
              "construction; evaluation skipped (give labelled data, one folder per class, to evaluate).", flush=True)
        return {}
    if num_classes == 0:  # unlabelled (a caption table: scored by retrieval instead)
        return {}
    frozen = [protocol for protocol in protocols if protocol != "finetune"]
    results: dict[str, Any] = {}
    if frozen:
        train_features, train_labels = run.features("train")
        test_features, test_labels = run.features("test")
        inputs = {"": (train_features, test_features)}
        raw = modality.raw_inputs(run) if config.raw_baseline else None
        if raw is not None:
            inputs["raw_"] = raw
        for prefix, (train_x, test_x) in inputs.items():
            for protocol in frozen:
                metrics = frozen_scores(protocol, train_x, train_labels, test_x, test_labels, num_classes, config)
                results.update({f"{prefix}{protocol}_{key}": round(value, 4) for key, value in metrics.items()})
    if "finetune" in protocols:
        results.update(fine_tune_results(modality, run))
    return results


def frozen_scores(protocol: str, train_x: Tensor, train_labels: Tensor, test_x: Tensor, test_labels: Tensor,
                  num_classes: int, config: "Config") -> dict[str, float]:
    """One protocol's metrics of frozen features (or raw inputs): ``knn``, ``linear``, ``kmeans`` or
    ``class_retrieval``, with the run's settings (``knn_k``, ``knn_temperature``, ``linear_weight_decay``,
    ``seed``)."""
    if protocol == "kmeans":
        return kmeans_scores(test_x, test_labels, num_classes=num_classes, seed=config.seed)
    if protocol == "class_retrieval":
        return class_retrieval_scores(test_x, test_labels)
    if protocol == "knn":
        predicted = knn_predict(train_x, train_labels, test_x, k=min(config.knn_k, len(train_labels)),
                                temperature=config.knn_temperature, num_classes=num_classes)
    else:
        predicted = linear_probe(train_x, train_labels, test_x, num_classes=num_classes,
                                 weight_decay=config.linear_weight_decay)
    return classification_metrics(test_labels, predicted, num_classes=num_classes)


def fine_tune_results(modality: Modality, run: BuiltRun, *, scratch: bool | None = None) -> dict[str, Any]:
    """The ``finetune`` protocol: copies of the run's encoder fine-tuned on class-balanced 1 %, 10 % and
    100 % of the training labels (``finetune_<1pct|10pct|100pct>_<metric>``), beside the same network
    from scratch (``scratch_finetune_...``, when ``scratch``, default ``raw_baseline``), for
    ``finetune_epochs`` (at least 100 steps), seeded by the run's seed."""
    config = run.config
    task = modality.fine_tune_task(run)
    if task is None:
        return {}
    scores = label_fraction_scores(run.method.backbone, task, LABEL_FRACTIONS, epochs=config.finetune_epochs,
                                   seed=config.seed, scratch=config.raw_baseline if scratch is None else scratch)
    return {key: round(value, 4) for key, value in scores.items()}


PROTOCOL_NAMES = {"knn": "kNN", "linear": "linear probe", "kmeans": "k-means", "class_retrieval": "retrieval"}
# The figures of each protocol the printed table shows (summary.json keeps them all).
SHOWN_METRICS = {"knn": ("top1", "f1"), "linear": ("top1", "f1"), "kmeans": ("nmi", "ari"),
                 "class_retrieval": ("precision_at_1", "map_at_r")}


def format_results(results: dict[str, Any], protocols: Sequence[str], raw_name: str) -> str:
    """The protocols' main figures as a table, with the raw-input baseline's column where it was scored,
    and the fine-tuning table (:func:`format_fine_tune`) where it was run."""
    raw = any(key.startswith("raw_") for key in results)
    lines = [f"{'protocol':<14}{'metric':<15}{'encoder':>9}" + (f"{raw_name:>12}" if raw else "")]
    for protocol in protocols:
        if protocol == "finetune":
            continue
        for metric in SHOWN_METRICS[protocol]:
            line = f"{PROTOCOL_NAMES[protocol]:<14}{metric:<15}{results[f'{protocol}_{metric}']:>9.4f}"
            if raw:
                line += f"{results[f'raw_{protocol}_{metric}']:>12.4f}"
            lines.append(line)
    table = "\n".join(lines) if len(lines) > 1 else ""
    fine_tuned = format_fine_tune(results)
    return "\n\n".join(part for part in (table, fine_tuned) if part)


def format_fine_tune(results: dict[str, Any]) -> str:
    """The ``finetune`` protocol's top-1 and F1 per label fraction, beside training from scratch where
    it was run; empty where fine-tuning was not run."""
    fractions = [fraction for fraction in LABEL_FRACTIONS if f"finetune_{fraction_name(fraction)}_top1" in results]
    if not fractions:
        return ""
    scratch = f"scratch_finetune_{fraction_name(fractions[0])}_top1" in results
    lines = [f"{'fine-tuning':<14}{'labels':>7}{'metric':>7}{'encoder':>9}" + (f"{'scratch':>10}" if scratch else "")]
    for fraction in fractions:
        name = fraction_name(fraction)
        for metric in ("top1", "f1"):
            line = (f"{f'{fraction:.0%}':<14}{results[f'finetune_{name}_labels']:>7}{metric:>7}"
                    f"{results[f'finetune_{name}_{metric}']:>9.4f}")
            if scratch:
                line += f"{results[f'scratch_finetune_{name}_{metric}']:>10.4f}"
            lines.append(line)
    return "\n".join(lines)


MODALITIES: Registry[Modality] = Registry("modality")


def register_modality(modality: Modality) -> Modality:
    """Register ``modality`` under its name, so that configs and the CLI can use it.

    Example:
        >>> from contrastkit.modalities import MODALITIES
        >>> MODALITIES.get("series").default_options  # registered when contrastkit.modalities is imported
        {'pooling': 'max'}
    """
    from contrastkit.config import FIELDS

    if modality.name in FIELDS:
        raise ValueError(f"a modality cannot be named {modality.name!r}: its options would clash with that config key")
    return MODALITIES.register(modality.name)(modality)


def resolve_modality(dataset: str, method: str | None = None, named: str | None = None) -> Modality:
    """The modality a run of ``method`` on ``dataset`` trains on: ``named`` when given, else the
    first registered modality that claims the dataset (the catch-all last), else, for a method that
    trains on one other modality only, that one where it adopts the dataset."""
    if named is not None:
        return MODALITIES.get(named)
    units = MODALITIES.values()
    claimed = next((unit for unit in units if not unit.catch_all and unit.claims(dataset)), None) \
        or next(unit for unit in units if unit.catch_all)
    if method is None:
        return claimed
    if claimed.trains(method):
        return claimed
    trained = [unit for unit in units if unit.trains(method)]
    if len(trained) == 1 and trained[0].adopts(dataset, claimed):
        return trained[0]
    return claimed
