"""Run configuration: one dataclass, YAML in and out, ``key=value`` overrides.

The keys every run shares are flat; a modality's own options are a section named after it
(``series.pooling=pyramid``, ``series: {pooling: pyramid}`` in YAML), checked by its unit
(:mod:`contrastkit.modalities`). Precedence, lowest first: the field defaults, the recipes (fill
what is left unset, see :func:`resolve`), a YAML file, command-line flags, ``key=value`` overrides.
:func:`resolve` fills every unset field, so the ``config.yaml`` saved in a run folder states exactly
what ran, its modality included.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from contrastkit.errors import ConfigError


@dataclass
class Config:
    # what to train
    method: str = "simclr"
    dataset: str = "mnist"
    modality: str | None = None  # the kind of data; unset: recognised from the dataset
    data_root: str | None = None
    image_size: int | None = None
    backbone: str | None = None
    cifar_stem: bool | None = None
    preset: str | None = None
    preset_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's own settings, e.g. queue_size
    head: str | None = None
    hidden_dim: int | None = None
    projection_dim: int | None = None
    temperature: float | None = None
    similarity: str = "cosine"
    pooling: str = "mean"  # text encoders: mean, cls or max over the token states
    max_length: int | None = None  # text encoders: tokens kept per sentence
    # The options of each modality, by its name: series.pooling=pyramid sets {"series": {"pooling": ...}}.
    modality_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # how to train
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    lr_schedule: str | None = None
    seed: int = 0
    init_from: str | None = None  # a run folder whose last weights this run starts from
    device: str = "auto"
    data_placement: str = "auto"  # where images live while training: device, host (pinned) or stream (files)
    precision: str = "auto"
    channels_last: bool = True  # pays on GPUs and with oneDNN on CPUs (2.5x for small_cnn on two cores)
    compile: bool = False  # torch.compile the training step and the augmentation
    compile_mode: str = "default"  # torch.compile's mode; reduce-overhead adds CUDA graphs
    sync_batchnorm: bool | None = None  # batch norm over the global batch under torch.distributed
    world_size: int = 1  # recorded: the processes that train the run (set by the launcher, not an option)
    augment_backend: str = "auto"  # on CUDA: auto (fused Triton kernel where it applies), torch or triton
    log_every: int = 20
    health: bool = True  # health metrics of the representation at logged steps, and the collapse warning
    stop_on_collapse: bool = False
    progress: bool = True
    out: str | None = None
    # how to evaluate after training
    evaluate: bool = True
    knn_k: int | None = None
    knn_temperature: float = 0.1
    linear_weight_decay: float = 1e-3
    finetune_epochs: int = 30  # the finetune protocol (contrastkit eval --protocol finetune)
    raw_baseline: bool = True
    plot: bool = True
    embedding_method: str = "auto"
    plot_points: int = 3000


# Recipes fill what the user left unset, in this order of precedence (highest first): the dataset's
# entry for the method (the "methods" of its recipe), the method's recipe for the data
# (Method.recipes, under the key the modality gives: "small" for images with sides up to 64 pixels,
# "large" above, else the modality's name), the dataset's recipe (Modality.recipes, else the
# modality's default_recipe), FALLBACKS. "lr_per_256" is scaled linearly with the batch size where
# no recipe gives "lr"; the modality's options take their defaults.
FALLBACKS: dict[str, Any] = dict(optimizer="sgd", head="mlp2", projection_dim=128, weight_decay=5e-4,
                                 lr_per_256=0.12, warmup_epochs=0.0, lr_schedule="cosine",
                                 max_length=128)
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "lars", "adamw"),
    "lr_schedule": ("cosine", "constant"),
    "data_placement": ("auto", "device", "host", "stream"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "augment_backend": ("auto", "torch", "triton"),
    "similarity": ("cosine", "dot"),
    "embedding_method": ("auto", "tsne", "umap", "pca"),
    "head": ("identity", "linear", "mlp2", "mlp3"),
    "pooling": ("mean", "cls", "max"),
}
# What each key means, for `contrastkit train --help-config`.
DESCRIPTIONS: dict[str, str] = {
    "method": "self-supervised method (contrastkit list)",
    "dataset": ("dataset name (contrastkit list), an ImageFolder path, a text file or caption table, or "
                "ucr:NAME / uea:NAME (time series)"),
    "modality": ("the kind of data (contrastkit list); unset: recognised from the dataset. Name it where a file "
                 "could be several kinds"),
    "modality_options": ("the modality's own options (listed below), set as MODALITY.NAME=value, e.g. "
                         "series.pooling=pyramid"),
    "data_root": "where the dataset lives or is downloaded to (a folder or packed-JPEG .npz); unset: "
                 "$CONTRASTKIT_DATA or ~/.cache/contrastkit",
    "image_size": "side the images are resized to when loaded; unset: as stored",
    "backbone": "encoder (contrastkit list), or timm:<name>",
    "cifar_stem": ("ResNets: 3x3 stride-1 stem without max-pool; unset: on for images of side <= 64 (the CIFAR "
                   "recipes), off above"),
    "preset": "augmentation preset (contrastkit list); unset: the dataset's",
    "preset_options": "the preset's options, e.g. {jitter_strength: 0.5}",
    "method_options": "the method's own options (listed below); method_options.NAME=value sets one",
    "head": "projection head of the methods that take one",
    "hidden_dim": "width of the projection head's hidden layers",
    "projection_dim": "output width of the projection head",
    "temperature": "softmax temperature of contrastive losses; unset: the method has none",
    "similarity": "similarity of the contrastive losses",
    "pooling": "text encoders: how token states become one sentence embedding",
    "max_length": "text encoders: tokens kept per sentence (longer ones are truncated); unset: the recipe's",
    "epochs": "passes over the training set",
    "batch_size": ("samples (images, sentences, pairs) per optimizer step over all processes (the global "
                   "batch), each made into the method's views"),
    "optimizer": "optimizer",
    "lr": "peak learning rate (recipes: lr_per_256 * batch_size / 256)",
    "momentum": "SGD / LARS momentum, in [0, 1)",
    "weight_decay": "weight decay, >= 0",
    "warmup_epochs": "linear warm-up to the peak learning rate, in epochs; unset: the recipe's",
    "lr_schedule": "after the warm-up: cosine (decay to 0) or constant (the peak); unset: the recipe's",
    "seed": "seed of the initial weights, the data order and the augmentations, in [0, 2**32)",
    "init_from": ("a run folder: start from the weights of its last checkpoint (same method, backbone and "
                  "head), with a new optimizer and learning-rate schedule; how to train a finished run further"),
    "device": "auto, cpu, cuda or cuda:N",
    "data_placement": ("device: the whole uint8 dataset on the device; host: decoded in pinned host memory; "
                       "stream: kept in its files (an ImageFolder tree or tar shards) and decoded a batch at a "
                       "time; auto: stream what does not fit in half the host's memory, keep on the device what "
                       "fits in half its free memory, else host"),
    "precision": "auto: bf16 autocast on CUDA, fp32 elsewhere",
    "channels_last": "channels_last memory format for the model and the views",
    "compile": "torch.compile the training step and the augmentation",
    "compile_mode": "torch.compile's mode (reduce-overhead adds CUDA graphs)",
    "sync_batchnorm": ("with several processes, batch norm over the global batch (SyncBatchNorm); unset: on "
                       "for the methods whose papers use it"),
    "world_size": ("recorded, not set: the number of processes that trained the run (torchrun "
                   "--nproc_per_node=N starts N)"),
    "augment_backend": "on CUDA: auto (fused Triton kernel where it applies), torch or triton",
    "log_every": "steps between logged losses (the only host sync of the loop)",
    "health": ("log the representation's health (embedding std, RankMe, alignment, uniformity) at logged steps "
               "and warn when it collapses"),
    "stop_on_collapse": "end the run, its last checkpoint kept, when the embeddings collapse (self-supervised methods)",
    "progress": "show a progress bar",
    "out": "run folder (default runs/<method>-<dataset>-<time>)",
    "evaluate": ("score after training: kNN and linear probes (images), plus zero-shot or retrieval (image-text), "
                 "STS / probes / retrieval (text)"),
    "knn_k": "neighbours of the kNN evaluation",
    "knn_temperature": "temperature of the weighted kNN vote, > 0",
    "linear_weight_decay": "L2 penalty of the linear probe, >= 0",
    "finetune_epochs": ("epochs (at least 100 steps) of the finetune protocol: the whole encoder trained on 1 %, "
                        "10 % and 100 % of the labels, beside the same network from scratch"),
    "raw_baseline": "also evaluate the raw inputs, for comparison (pixels; 1-NN Euclidean and DTW for series)",
    "plot": "plot the loss curve and a 2-D map of the embeddings",
    "embedding_method": "2-D map of the embeddings",
    "plot_points": "test points in the embedding plot",
}
# A device: auto, cpu, cuda or cuda:N.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# Settings a resumed run may change: where and how visibly it runs, not what it computes.
RUNTIME_KEYS = ("device", "world_size", "progress", "log_every", "health", "stop_on_collapse", "evaluate", "plot",
                "raw_baseline", "embedding_method", "plot_points")
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _unknown_key(key: str, sections: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, [*FIELDS, *sections], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} Run `contrastkit train --help-config` "
                       "to list the keys.")


# The config's types and YAML's values in the words of someone editing a config file, to whom the
# annotations themselves (dict[str, typing.Any], int | None) mean nothing.
_EXPECTED_IN_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text",
                      dict: "a mapping of option names to values", type(None): "empty (null)"}
_GIVEN_IN_WORDS = {bool: "a true/false value", int: "an integer", float: "a number", str: "text", list: "a list",
                   dict: "a mapping"}
_OPTIONS_EXAMPLES = {"method_options": "{queue_size: 8192}", "preset_options": "{min_scale: 0.5}"}


def _expected_in_words(key: str, options: tuple[Any, ...]) -> str:
    """What the field ``key`` takes, e.g. "an integer or empty (null)", from its annotation's options."""
    words = []
    for option in options:
        base = typing.get_origin(option) or option
        example = f", e.g. {_OPTIONS_EXAMPLES[key]}" if base is dict and key in _OPTIONS_EXAMPLES else ""
        words.append(_EXPECTED_IN_WORDS[base] + example)
    return " or ".join(words)


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's annotation, converting where it is lossless (int -> float)."""
    annotation = typing.get_type_hints(Config)[key]
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} cannot be empty; give it {_expected_in_words(key, options)}.")
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; it is the number the user wrote.
            try:
                return float(value)
            except ValueError:
                pass
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is str and isinstance(value, str):
            return value
        if base is dict and isinstance(value, dict):
            if not all(isinstance(name, str) for name in value):
                raise ConfigError(f"{key} takes option names as keys, got {value!r}.")
            return value
    given = _GIVEN_IN_WORDS.get(type(value), "another kind of value")
    raise ConfigError(f"{key} must be {_expected_in_words(key, options)}, got {value!r} ({given}).")


def _modality_keys() -> tuple[list[str], dict[str, tuple[str, Any]]]:
    """The registered modalities' names (their option sections) and their renamed flat keys of
    earlier releases: old key -> ("modality.option", the option's default)."""
    from contrastkit.modalities import MODALITIES

    renamed = {old: (f"{unit.name}.{option}", unit.default_options[option]) for unit in MODALITIES.values()
               for old, option in unit.renamed_keys.items()}
    return MODALITIES.names(), renamed


_renames_said: set[str] = set()


def _say_renamed(old: str, new: str) -> None:
    """One notice per process that a config key has a new name."""
    if old not in _renames_said:
        _renames_said.add(old)
        print(f"note: config key {old} is now {new}; the old name is accepted until the next release.",
              file=sys.stderr, flush=True)


def value_of(config: Config, key: str) -> Any:
    """The value ``key`` names in ``config``: a field's, one option of a dict field
    (``method_options.queue_size``), a modality's option (``series.pooling``, or under a renamed
    flat key such as ``series_pooling``) or a modality's whole section (``series``)."""
    head, dot, option = key.partition(".")
    if head in FIELDS:
        value = getattr(config, head)
        return value.get(option) if dot and isinstance(value, dict) else value
    head, dot, option = _modality_keys()[1].get(key, (key,))[0].partition(".")
    section = config.modality_options.get(head, {})
    return section.get(option) if dot else section


def _with_modality_option(sections: dict[str, dict[str, Any]], key: str, value: Any) -> dict[str, dict[str, Any]]:
    """``sections`` with the option ``key`` ("series.pooling", or a whole "series" mapping) set;
    the values are checked when the run's modality is known (:func:`resolve`)."""
    name, dot, option = key.partition(".")
    section = dict(sections.get(name, {}))
    if dot and option:
        section[option] = value
    elif not dot and isinstance(value, dict) and all(isinstance(item, str) for item in value):
        section.update(value)
    else:
        raise ConfigError(f"{key} takes the {name} options as a mapping, e.g. {name}: {{NAME: value}} in YAML, or "
                          f"{name}.NAME=value on the command line (`contrastkit train --help-config` lists them).")
    return {**sections, name: section}


def update(config: Config, values: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with ``values`` set, each key and value checked; a modality's options
    (``series.pooling``) are checked against the run's modality by :func:`resolve`."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key.partition(".")[0] not in FIELDS:
            sections, renamed = _modality_keys()
            if key in renamed:
                new_key, default = renamed[key]
                if value is None or value == default:
                    # Changes nothing; the previous release wrote every key into each config.yaml.
                    continue
                _say_renamed(key, new_key)
                key = new_key
            if key.partition(".")[0] not in sections:
                raise _unknown_key(key.partition(".")[0], sections)
            checked["modality_options"] = _with_modality_option(
                checked.get("modality_options", config.modality_options), key, value)
            continue
        key, dot, option = key.partition(".")
        if key == "modality_options":
            raise ConfigError("a modality's options are set under its name: series.pooling=pyramid on the command "
                              "line, series: {pooling: pyramid} in YAML (`contrastkit train --help-config` lists them).")
        if dot:  # method_options.queue_size=8192 sets one entry of a dict field
            if not isinstance(getattr(config, key), dict) or not option:
                raise ConfigError(f"{key}.{option} is not a valid key: only the dict keys (method_options, "
                                  "preset_options) take a dotted option name, e.g. method_options.queue_size=8192.")
            merged = dict(checked.get(key, getattr(config, key)))
            merged[option] = value
            checked[key] = merged
        else:
            checked[key] = _coerce(key, value)
    return dataclasses.replace(config, **checked)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML (``lr=0.1``, ``compile=true``)."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key=value (e.g. lr=0.1).")
        try:
            values[key.strip()] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot read the value of override {pair!r}: {' '.join(str(error).split())}") from None
    return values


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the path of a YAML file.")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "save it as UTF-8 YAML.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(values).__name__}.")
    return values


def save_yaml(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML, each modality's options as a section of its name after ``modality``."""
    values: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if key == "modality_options":
            continue
        values[key] = value
        if key == "modality":
            values.update({name: options for name, options in config.modality_options.items() if options})
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))


def resolve(config: Config) -> Config:
    """Fill every unset field by the one rule of precedence (see FALLBACKS above): the modality is
    named or recognised once (:func:`contrastkit.modalities.resolve_modality`), its recipes and the
    method's fill what is unset, its options take their defaults; then the whole config is checked."""
    from contrastkit.methods import METHODS
    from contrastkit.modalities import MODALITIES, resolve_modality

    method = METHODS.get(config.method)
    unit = resolve_modality(config.dataset, config.method, config.modality)
    if not unit.trains(config.method):
        trains_on = " or ".join(other.in_words for other in MODALITIES.values() if other.trains(config.method))
        raise ConfigError(f"{config.method} trains on {trains_on} data, but {config.dataset!r} is {unit.in_words} "
                          f"data; choose {unit.with_article} method (contrastkit list) or another dataset.")
    if config.data_placement == "stream" and not unit.streams_from_files:
        raise ConfigError(f"data_placement=stream streams image datasets from their files; {config.dataset!r} is "
                          f"{unit.in_words} data for {config.method}, which is held in memory. Use "
                          "data_placement=auto.")
    dataset_recipe = unit.recipe(config.dataset)
    per_method = dataset_recipe.pop("methods", {}).get(config.method, {})
    recipe = {**FALLBACKS, **dataset_recipe, **method.recipes.get(unit.recipe_key(config), {}), **per_method}
    lr_per_256 = recipe.pop("lr_per_256")
    options = {**recipe.pop("method_options", {}), **config.method_options}
    filled = {key: value for key, value in recipe.items() if getattr(config, key) is None}
    config = dataclasses.replace(config, **filled, method_options=method.options(options),
                                 modality=unit.name, modality_options=_run_options(config, unit))
    if config.sync_batchnorm is None:
        config = dataclasses.replace(config, sync_batchnorm=method.sync_batchnorm)
    derived = {key: value for key, value in unit.derived_defaults(config).items() if getattr(config, key) is None}
    config = dataclasses.replace(config, **derived)
    if config.lr is None:
        # The linear scaling rule of SimCLR's and lightly's recipes.
        config = dataclasses.replace(config, lr=lr_per_256 * config.batch_size / 256)
    validate(config)
    return config


def _run_options(config: Config, unit: Any) -> dict[str, dict[str, Any]]:
    """The options of the run's modality, checked and with their defaults; another modality's
    section is dropped when it holds only that modality's defaults (it changes nothing), and
    refused otherwise (it would be ignored)."""
    from contrastkit.modalities import MODALITIES

    for name, given in config.modality_options.items():
        other = MODALITIES.get(name)
        if other is not unit and other.options(given) != other.default_options:
            set_keys = ", ".join(f"{name}.{key}" for key in given)
            raise ConfigError(f"{set_keys} configures {other.in_words} runs, but this run trains on {unit.in_words} "
                              f"data ({config.dataset}); drop it, or name the modality with modality={name}.")
    options = unit.options(config.modality_options.get(unit.name))
    return {unit.name: options} if options else {}


def check_device(name: str) -> None:
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}.")


def validate(config: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}.")
    check_device(config.device)
    for key in FIELDS:
        value = getattr(config, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}.")
    positive = ("epochs", "batch_size", "image_size", "hidden_dim", "projection_dim", "max_length", "log_every",
                "knn_k", "finetune_epochs", "plot_points")
    for key in positive:
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}.")
    for key in ("temperature", "lr", "knn_temperature"):
        value = getattr(config, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}.")
    for key in ("weight_decay", "linear_weight_decay"):
        value = getattr(config, key)
        if value is not None and value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}.")
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum must lie in [0, 1), got {config.momentum}; recipes use 0.9.")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed must lie in [0, 2**32), got {config.seed}.")
    warmup = config.warmup_epochs or 0.0
    if warmup < 0 or (config.epochs is not None and warmup > config.epochs):
        raise ConfigError(f"warmup_epochs must lie in [0, epochs], got {config.warmup_epochs}.")
