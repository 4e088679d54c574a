"""Hyperparameter search over config keys, on Optuna: ``contrastkit tune``.

A search space is a YAML file that maps config keys, spelled as ``contrastkit train`` takes them
as ``key=value`` (dotted ones included), to the values to try::

    lr: {low: 0.01, high: 1.0, log: true}   # a range: low to high; log: sampled on a log scale
    temperature: {low: 0.05, high: 0.5}
    epochs: {low: 5, high: 20, step: 5}      # integer keys take integer ranges; step: the grid
    batch_size: [64, 128, 256]               # a list: one of these values
    method_options.queue_size: [1024, 4096]  # a method's (or a modality's: series.pooling) option

Every other key keeps the value the command line gives it (flags, ``--config``, ``key=value``),
else its recipe's. The space is checked before any trial runs: each bound and choice goes through
the config's own checks.

Each trial is a run folder ``STUDY/trial-NNNN`` trained by :func:`contrastkit.runs.train` and
scored by a summary.json key it maximises: ``knn_top1`` (test split), unless ``metric`` names
another, e.g. ``zero_shot_top1`` for an image-text run or ``<set>_spearman`` for a text run.

Pruning: after every epoch but the last, the kNN top-1 of frozen features on a held-out fifth of
the *train* split (a direct, cheap proxy of the score, which the trainer's health metrics such as
RankMe are not) goes to Optuna's MedianPruner; a trial whose embeddings collapse (the trainer's
health monitor, ``stop_on_collapse``) or whose loss diverges is pruned at once.

The study lives in ``STUDY/study.db`` (SQLite). ``--resume`` continues it after a kill or Ctrl-C:
finished trials are kept, the one that was running is marked failed and its parameters run again in
a new folder. The best trial's config is written to ``STUDY/best.yaml`` and printed as a
``contrastkit train`` command, beside a table of the trials.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import time
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import yaml

from contrastkit import config as config_module
from contrastkit import run_folder
from contrastkit.config import Config
from contrastkit.errors import ConfigError, ContrastkitError

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "contrastkit"
DATABASE = "study.db"
BEST = "best.yaml"
DEFAULT_METRIC = "knn_top1"
DEFAULT_TRIALS = 20
# The held-out kNN classifies a fifth of a fixed draw of at most this many training samples from the
# rest: enough to rank trials, and cheap beside an epoch (though the modality embeds the whole split).
PROBE_SAMPLES = 5000
# Set by tune on every trial, whatever the command line says: the folder, and the scoring tune does itself.
SET_BY_TUNE = ("out", "evaluate")
# Runtime keys tune sets unless given: no plots or raw-input baselines per trial (the same for every
# trial, so time lost), and a collapse stops (and prunes) the trial at once. None changes what a run learns.
TRIAL_DEFAULTS = {"plot": False, "raw_baseline": False, "stop_on_collapse": True}
# The train flags a printed command uses instead of key=value, as `contrastkit train --help` has them.
TRAIN_FLAGS = ("method", "dataset", "backbone", "epochs", "batch_size", "device")
RANGE_KEYS = ("low", "high", "log", "step")


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during a study; the message says what is kept and how to go on."""


def _import_optuna() -> Any:
    """The optuna module; where it is missing, a one-line error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise ContrastkitError("contrastkit tune needs Optuna, which is not installed; install it with: "
                               "pip install 'contrastkit[tune]'") from None
    return optuna


@dataclass(frozen=True)
class Parameter:
    """One searched key: a range of integers or numbers, or a list of choices.

    Args:
        key: the config key, as ``key=value`` takes it (``lr``, ``method_options.queue_size``).
        kind: ``int`` or ``float`` (a range), or ``choice``.
        low: the range's lower bound.
        high: the range's upper bound.
        log: sample the range on a log scale.
        step: the range's grid (None: continuous, or every integer).
        choices: the values of a ``choice``.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: "optuna.Trial") -> Any:
        """The trial's value of the key (the enqueued one, for a trial that reruns one a kill stopped)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def _number(value: Any) -> int | float | None:
    """``value`` as a number, or None where it is none (true/false, a list, text that is no number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; it is the number the user wrote
        except ValueError:
            return None
    return None


def _numeric_kind(key: str, resolved: Config, low: Any, high: Any) -> str | None:
    """``int`` or ``float`` for a key that takes numbers, None for one that takes other values:
    a config field by its annotation, a method's or modality's option by its default, an option
    without a default (preset_options) by its bounds."""
    if key in config_module.FIELDS:
        annotation = typing.get_type_hints(Config)[key]
        options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
        return "int" if int in options else "float" if float in options else None
    default = config_module.value_of(resolved, key)
    if isinstance(default, bool) or (default is not None and not isinstance(default, (int, float))):
        return None
    if isinstance(default, float):
        return "float"
    if isinstance(default, int):
        return "int"
    return "int" if all(isinstance(bound, int) and not isinstance(bound, bool) for bound in (low, high)) else "float"


def _unsearchable(key: str) -> str | None:
    """Why ``key`` cannot be searched, or None."""
    head, dot, _ = key.partition(".")
    if key in SET_BY_TUNE:
        return "tune sets it for every trial (each trial's folder is STUDY/trial-NNNN, scored by tune); drop it"
    if key in config_module.RUNTIME_KEYS or key == "world_size":
        return (f"it changes where or how visibly a run trains, not what it learns; set it on the command line "
                f"as {key}=VALUE instead")
    from contrastkit.modalities import MODALITIES

    if not dot and (key in ("method_options", "preset_options", "modality_options") or key not in config_module.FIELDS
                    and key in MODALITIES.names()):
        return f"search one option per key, e.g. {key if key != 'modality_options' else 'series'}.NAME: [A, B]"
    return None


def _check_value(key: str, value: Any, base: Config) -> Any:
    """``value`` as the config holds it for ``key``, refused as the config refuses it."""
    config = config_module.update(base, {key: value})
    config_module.resolve(config)
    return config_module.value_of(config, key)


def _parse_entry(key: str, spec: Any, base: Config, resolved: Config) -> Parameter:
    """The parameter ``spec`` describes for ``key``.

    Args:
        key: the config key searched.
        spec: its range (a mapping) or choices (a list), as read from YAML.
        base: the config the trials start from, unresolved (a trial's values go into it).
        resolved: ``base`` resolved, whose values tell the type of a method's or modality's option.
    """
    reason = _unsearchable(key)
    if reason:
        raise ConfigError(f"{key} cannot be searched: {reason}.")
    if key.partition(".")[0] not in config_module.FIELDS:
        config_module.update(base, {key: None})  # refuses an unknown key, with the nearest known one
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{key}: the list of choices is empty; give the values to try, e.g. {key}: [A, B].")
        if any(isinstance(choice, (list, dict)) for choice in spec):
            raise ConfigError(f"{key}: each choice must be one value (a number, text, true/false or null), got "
                              f"{spec!r}.")
        choices = tuple(_check_value(key, choice, base) for choice in spec)
        if _numeric_kind(key, resolved, None, None) == "float" and key not in config_module.FIELDS:
            # An option without a type of its own keeps what YAML read; 1e-3 must reach it as a number.
            choices = tuple(_number(choice) if _number(choice) is not None else choice for choice in choices)
        return Parameter(key, "choice", choices=choices)
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: give a range, {key}: {{low: A, high: B}}, or a list of choices, {key}: [A, B], "
                          f"not {spec!r}; a fixed value goes on the command line as {key}={spec}.")
    unknown = [name for name in spec if name not in RANGE_KEYS]
    if unknown or "low" not in spec or "high" not in spec:
        wrong = f" ({', '.join(map(str, unknown))} is not one of them)" if unknown else ""
        raise ConfigError(f"{key}: a range takes low and high, and optionally log (true/false) and step{wrong}, e.g. "
                          f"{key}: {{low: 0.01, high: 1.0, log: true}}.")
    low, high = _number(spec["low"]), _number(spec["high"])
    for name, bound in (("low", low), ("high", high)):
        if bound is None:
            raise ConfigError(f"{key}: {name} must be a number, got {spec[name]!r}.")
    kind = _numeric_kind(key, resolved, low, high)
    if kind is None:
        current = config_module.value_of(resolved, key)
        raise ConfigError(f"{key} does not take numbers, so it has no range; list its choices instead, e.g. "
                          f"{key}: [{current if current is not None else 'A'}, B].")
    if kind == "int" and not all(float(bound).is_integer() for bound in (low, high)):
        raise ConfigError(f"{key} takes whole numbers; give whole-number bounds, got low {low} and high {high}.")
    if low > high:
        raise ConfigError(f"{key}: low {low} is above high {high}; swap them.")
    if low == high:
        raise ConfigError(f"{key}: the range from {low} to {high} is empty; give low < high, or fix the value on the "
                          f"command line as {key}={low}.")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}: log must be true or false, got {log!r}.")
    if log and low <= 0:
        raise ConfigError(f"{key}: log: true samples on a log scale, which needs low > 0, got low {low}.")
    step = spec.get("step")
    if step is not None:
        step = _number(step)
        if step is None or step <= 0 or (kind == "int" and not float(step).is_integer()):
            whole = " whole" if kind == "int" else ""
            raise ConfigError(f"{key}: step must be a{whole} number > 0, got {spec['step']!r}.")
        if log:
            raise ConfigError(f"{key}: a range takes step or log: true, not both (Optuna samples a grid evenly).")
    convert = int if kind == "int" else float
    low, high = _check_value(key, convert(low), base), _check_value(key, convert(high), base)
    return Parameter(key, kind, convert(low), convert(high), log, convert(step) if step is not None else None)


def parse_space(space: Mapping[str, Any], base_values: Mapping[str, Any] | None = None,
                source: str = "the search space") -> list[Parameter]:
    """The parameters of a search space (see the module docstring), each bound and choice checked
    against the config that the trials start from.

    Args:
        space: config key -> ``{low, high[, log][, step]}`` or a list of choices, as read from YAML.
        base_values: the config keys every trial starts from (flags, ``--config``, ``key=value``).
        source: the space's name in error messages (its file).

    Example:
        >>> [p.kind for p in parse_space({"lr": {"low": 0.01, "high": 1, "log": True}, "batch_size": [64, 128]},
        ...                               {"dataset": "digits"})]
        ['float', 'choice']
    """
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{source} must map config keys to ranges or choices, e.g. lr: {{low: 0.01, high: 1.0, "
                          f"log: true}} and batch_size: [64, 128]; got {space!r}.")
    base = config_module.update(Config(), base_values or {})
    resolved = config_module.resolve(base)  # an error here is the command line's, not the space's
    parameters = []
    for key, spec in space.items():
        try:
            parameters.append(_parse_entry(str(key), spec, base, resolved))
        except ConfigError as error:
            # The config's own messages name the key they refuse; the others get it named here.
            where = source if str(key) in str(error) else f"{source}, key {key}"
            raise ConfigError(f"{where}: {error}") from None
    return parameters


class HeldOutKnn:
    """The pruning signal, a trainer callback: after each epoch, the kNN top-1 of the checkpoint's
    frozen features, one fifth of (a sample of) the train split classified from the rest, reported
    to the trial; raises ``optuna.TrialPruned`` when the pruner says so.

    The test split is left for the trial's score; a dataset without class labels reports nothing
    (its trials are pruned only on collapse or divergence).

    Args:
        run: a :class:`contrastkit.runs.Run` of the trial's resolved config, built before training
            starts (building seeds torch's global generator, which training must not see reset).
        trial_dir: the trial's run folder, whose checkpoint is read.
        trial: the Optuna trial reported to.
    """

    def __init__(self, run: Any, trial_dir: Path, trial: "optuna.Trial") -> None:
        self.run = run
        self.trial_dir = trial_dir
        self.trial = trial
        self.labelled = len(run.splits.classes) >= 2

    def load_last_weights(self) -> None:
        from contrastkit.train import load_checkpoint

        checkpoint = load_checkpoint(self.trial_dir / run_folder.CHECKPOINT, map_location=self.run.device)
        self.run.method.load_state_dict(checkpoint["method"])

    def score(self) -> float:
        """The held-out kNN top-1 of the current weights."""
        from contrastkit.evaluate import knn_predict

        features, labels = self.run.features("train")
        generator = torch.Generator().manual_seed(self.run.config.seed)
        order = torch.randperm(len(labels), generator=generator)[:PROBE_SAMPLES]
        queries, references = order[:max(1, len(order) // 5)], order[max(1, len(order) // 5):]
        predicted = knn_predict(features[references], labels[references], features[queries],
                                k=min(self.run.config.knn_k, len(references)),
                                temperature=self.run.config.knn_temperature, num_classes=len(self.run.splits.classes))
        return (predicted == labels[queries]).float().mean().item()

    def __call__(self, state: Any) -> None:
        if not self.labelled:
            return
        optuna = _import_optuna()
        self.load_last_weights()
        value = self.score()
        self.trial.report(value, state.epoch)
        print(f"held-out kNN {value:.4f} after epoch {state.epoch}", flush=True)
        # The last epoch is not judged: its trial is as good as scored, and a score teaches the sampler more.
        if state.epoch < self.run.config.epochs and self.trial.should_prune():
            self.trial.set_user_attr("pruned", f"epoch {state.epoch}")
            raise optuna.TrialPruned(f"held-out kNN {value:.4f} after epoch {state.epoch} is behind the other "
                                     "trials'")


def _run_trial(trial: "optuna.Trial", parameters: list[Parameter], base_values: Mapping[str, Any], study_dir: Path,
               metric: str) -> float:
    """Train and score one trial in ``study_dir/trial-NNNN``; the value of ``metric`` in its summary."""
    from contrastkit import runs
    from contrastkit.train import TrainingDiverged
    from contrastkit.train.health import TrainingCollapsed

    optuna = _import_optuna()
    params = {parameter.key: parameter.suggest(trial) for parameter in parameters}
    trial_dir = study_dir / f"trial-{trial.number:04d}"
    shown = " ".join(f"{key}={_shown(value)}" for key, value in params.items())
    print(f"\ntrial {trial.number}: {shown} -> {trial_dir}", flush=True)
    config = config_module.update(Config(), {**TRIAL_DEFAULTS, **base_values, **params, "out": str(trial_dir),
                                             "evaluate": False})
    probe = HeldOutKnn(runs.Run(config_module.resolve(config)), trial_dir, trial)
    try:
        runs.train(config, callbacks=[probe])
    except (TrainingCollapsed, TrainingDiverged) as error:
        # Pruned, not failed: Optuna's samplers learn from pruned trials and ignore failed ones, so
        # a learning rate that diverges steers the search away from itself.
        trial.set_user_attr("pruned", "collapsed" if isinstance(error, TrainingCollapsed) else "diverged")
        raise optuna.TrialPruned(" ".join(str(error).split())) from None
    protocols = ("knn",) if metric == DEFAULT_METRIC else runs.DEFAULT_PROTOCOLS
    with run_folder.locked(trial_dir, action="evaluation"):
        probe.load_last_weights()
        summary = runs.evaluate(probe.run, trial_dir, protocols=protocols)
    value = summary.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        scores = ", ".join(key for key, item in summary.items()
                           if isinstance(item, float) and not key.endswith("_seconds"))
        raise ContrastkitError(f"trial {trial.number} has no {metric} in {trial_dir / 'summary.json'} "
                               f"({'its scores: ' + scores if scores else 'nothing was scored'}); name the score to "
                               "maximise with --metric.")
    return float(value)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _as_argument(value: Any) -> str:
    """``value`` as ``key=value`` reads it back (YAML), quoted for the shell."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return shlex.quote(text.removesuffix("...").strip())


def train_command(values: Mapping[str, Any]) -> str:
    """The ``contrastkit train`` command that sets ``values`` (config keys; dicts become dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    words = ["contrastkit", "train"]
    words += [f"--{key.replace('_', '-')} {_as_argument(flat[key])}" for key in TRAIN_FLAGS if key in flat]
    words += [f"{key}={_as_argument(value)}" for key, value in flat.items() if key not in TRAIN_FLAGS]
    return " ".join(words)


def _write_best(study: "optuna.Study", study_dir: Path, base_values: Mapping[str, Any]) -> Path:
    """``STUDY/best.yaml``: the best trial's resolved config, without its folder and with the runtime
    keys tune set for trials back at the command line's values (or their defaults)."""
    trial_dir = study_dir / f"trial-{study.best_trial.number:04d}"
    config = config_module.update(Config(), config_module.load_yaml(trial_dir / "config.yaml"))
    restored = {key: base_values.get(key, config_module.FIELDS[key].default)
                for key in (*TRIAL_DEFAULTS, "evaluate")}
    config = dataclasses.replace(config_module.update(config, restored), out=None)
    path, temporary = study_dir / BEST, study_dir / f".{BEST}.tmp"
    config_module.save_yaml(config, temporary)
    os.replace(temporary, path)  # whole or not at all, as every file of a run folder
    return path


def _state(trial: "optuna.trial.FrozenTrial") -> str:
    name = trial.state.name.lower().replace("fail", "failed")
    reason = trial.user_attrs.get("pruned") or trial.user_attrs.get("failed")
    retry = trial.user_attrs.get("retry_of")
    note = ", ".join(part for part in (reason, f"rerun of {retry}" if retry is not None else None) if part)
    return f"{name} ({note})" if note else name


def format_trials(study: "optuna.Study", metric: str) -> str:
    """One table of the study's trials: number, state, value and parameters; ``*`` marks the best."""
    optuna = _import_optuna()
    trials = [trial for trial in study.get_trials(deepcopy=False)
              if trial.state != optuna.trial.TrialState.WAITING]
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda trial: trial.value).number if complete else None
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))
    rows = [["trial", "state", metric, *keys]]
    for trial in trials:
        value = f"{trial.value:.4f}" if trial.state == optuna.trial.TrialState.COMPLETE else "-"
        rows.append([f"{trial.number}{'*' if trial.number == best else ''}", _state(trial), value,
                     *(_shown(trial.params[key]) if key in trial.params else "-" for key in keys)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows)


def _recover_killed(study: "optuna.Study", storage: Any) -> list[int]:
    """Mark the trials a killed study left RUNNING as failed, and queue their parameters to run again.

    The study folder's lock is held, so no other process is running them: they were stopped
    without a word (SIGKILL, a lost machine) and never finished.
    """
    optuna = _import_optuna()
    study_id = storage.get_study_id_from_name(study.study_name)
    stopped = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stopped:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "failed", "killed")
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return [trial.number for trial in stopped]


def _resumed_values(saved: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The study's saved config keys; the command line may repeat them and change only runtime keys."""
    changed = sorted(key for key, value in given.items()
                     if key.partition(".")[0] not in config_module.RUNTIME_KEYS and saved.get(key) != value)
    if changed:
        raise ContrastkitError(f"--resume continues the study with the config keys it was started with, so it cannot "
                               f"change {', '.join(changed)}; drop those options, or start a new study (--study "
                               "NEW_DIR).")
    return {**saved, **given}


def default_study_dir(values: Mapping[str, Any]) -> Path:
    dataset = Path(str(values.get("dataset", Config.dataset))).name or "data"
    return Path("runs") / f"tune-{values.get('method', Config.method)}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def tune(space: str | os.PathLike | Mapping[str, Any] | None, values: Mapping[str, Any], *,
         study_dir: str | os.PathLike | None = None, trials: int | None = None, minutes: float | None = None,
         resume: bool = False, metric: str | None = None, pruner: Any = None, sampler: Any = None) -> "optuna.Study":
    """Search ``space`` for the config that maximises ``metric``; each trial a run folder in ``study_dir``.

    Args:
        space: the search space (a YAML file or its mapping, see the module docstring); with
            ``resume`` it may be left out (the study's is used) or repeated unchanged.
        values: the config keys every trial starts from (flags, ``--config``, ``key=value``).
        study_dir: the study's folder (default runs/tune-<method>-<dataset>-<time>).
        trials: finished (complete or pruned) trials the study should hold, counting those of
            earlier sessions; when neither it nor ``minutes`` is given, 20, or with ``resume`` the
            number the study was last given.
        minutes: start no trial after this many minutes of this session (the one under way finishes).
        resume: continue the study in ``study_dir`` (after a kill, its unfinished trial runs again).
        metric: the summary.json score to maximise (default knn_top1; with --resume, the study's).
        pruner: an Optuna pruner (default: median of the earlier trials' held-out kNN, from epoch 2,
            after 2 complete trials).
        sampler: an Optuna sampler (default: TPE seeded by the config's seed).

    Returns:
        The Optuna study.
    """
    from contrastkit.train.distributed import launcher_environment

    optuna = _import_optuna()
    if launcher_environment().world_size > 1:
        raise ContrastkitError("contrastkit tune runs its trials one after another in one process; start it without "
                               "torchrun or srun.")
    for name, budget in (("trials", trials), ("minutes", minutes)):
        if budget is not None and budget <= 0:
            raise ConfigError(f"--{name} must be > 0, got {budget}.")
    if study_dir is None:
        if resume:
            raise ContrastkitError("--resume needs --study DIR, the folder of the study to continue.")
        study_dir = default_study_dir(values)
    study_dir = Path(study_dir)
    database = study_dir / DATABASE
    if resume and not database.is_file():
        raise ContrastkitError(f"nothing to resume in {study_dir}: it holds no {DATABASE}. Start the study without "
                               "--resume.")
    if not resume and study_dir.is_dir() and any(study_dir.iterdir()):
        held = "already holds a study; continue it with --resume" if database.is_file() else "is not empty"
        raise ContrastkitError(f"{study_dir} {held}, or choose a new --study folder.")
    mapping = config_module.load_yaml(space) if isinstance(space, (str, os.PathLike)) else space
    source = f"search space {space}" if isinstance(space, (str, os.PathLike)) else "the search space"
    values = {key: value for key, value in values.items() if key not in SET_BY_TUNE}
    if not resume:
        if mapping is None:
            raise ContrastkitError("give the search space with --space SPACE.yaml (keys to search, e.g. lr: "
                                   "{low: 0.01, high: 1.0, log: true}).")
        # Checked before the study folder is made: a refused space leaves nothing behind.
        metric = metric or DEFAULT_METRIC
        parameters = parse_space(mapping, values, source)
    # Optuna's INFO lines (study created, trial finished) repeat what tune prints, in its own words.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with run_folder.locked(study_dir, action="tuning"):
            storage = optuna.storages.RDBStorage(f"sqlite:///{database.resolve()}")
            if resume:
                study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
                saved = study.user_attrs
                values = _resumed_values(saved["values"], values)
                if mapping is not None and dict(mapping) != saved["space"]:
                    raise ContrastkitError(f"{source} differs from the one {study_dir} was started with; resume "
                                           "without --space, or start a new study (--study NEW_DIR).")
                if metric is not None and metric != saved["metric"]:
                    raise ContrastkitError(f"{study_dir} maximises {saved['metric']}; resume it without --metric, "
                                           "or start a new study (--study NEW_DIR).")
                mapping, metric = saved["space"], saved["metric"]
                if trials is None and minutes is None:
                    trials = saved.get("trials")  # the budget it was last given, not the default's
                parameters = parse_space(mapping, values, "the study's search space")
            else:
                study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
                for name, value in (("values", values), ("space", dict(mapping)), ("metric", metric)):
                    study.set_user_attr(name, value)
            if trials is None and minutes is None:
                trials = DEFAULT_TRIALS
            if trials is not None:
                study.set_user_attr("trials", trials)
            # Seeded past the trials already drawn, so that a resumed study does not draw them again.
            study.sampler = sampler or optuna.samplers.TPESampler(
                seed=config_module.update(Config(), values).seed + len(study.trials),
                # Optuna starts TPE after 10 random trials: a budget of a few would be random search only.
                n_startup_trials=min(10, max(2, trials // 3)) if trials else 10)
            study.pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
            rerun = _recover_killed(study, storage)
            if rerun:
                print(f"trial {', '.join(map(str, rerun))} was stopped by a kill; it runs again", flush=True)
            _optimize(study, parameters, values, study_dir, metric, trials, minutes)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def _finished(study: "optuna.Study") -> int:
    optuna = _import_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _optimize(study: "optuna.Study", parameters: list[Parameter], values: Mapping[str, Any], study_dir: Path,
              metric: str, trials: int | None, minutes: float | None) -> None:
    """Run trials until the budget is spent, then print the table and the best trial's command."""
    optuna = _import_optuna()
    start = time.monotonic()
    # Ask and tell, rather than study.optimize: a kill or Ctrl-C is handled here (the trial is
    # queued to run again), and an error is one line instead of Optuna's logged traceback.
    while (trials is None or _finished(study) < trials) and (minutes is None
                                                             or time.monotonic() - start < minutes * 60):
        trial = study.ask()
        try:
            value = _run_trial(trial, parameters, values, study_dir, metric)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {trial.number} pruned: {pruned}", flush=True)
            continue
        except KeyboardInterrupt:
            trial.set_user_attr("failed", "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise TuneInterrupted(f"interrupted; {_finished(study)} finished trial(s) are kept in {study_dir}, and "
                                  f"trial {trial.number} will run again. Continue with: contrastkit tune --study "
                                  f"{study_dir} --resume") from None
        except ContrastkitError as error:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise ContrastkitError(f"trial {trial.number} failed: {error} Fix the space or the options, then "
                                   f"continue with: contrastkit tune --study {study_dir} --resume") from error
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)
        best = study.best_trial
        if best.number == trial.number:
            _write_best(study, study_dir, values)
        print(f"trial {trial.number}: {metric} {value:.4f} (best {best.value:.4f}, trial {best.number})", flush=True)
    _report(study, study_dir, values, metric, time.monotonic() - start)


def _report(study: "optuna.Study", study_dir: Path, values: Mapping[str, Any], metric: str, seconds: float) -> None:
    optuna = _import_optuna()
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in optuna.trial.TrialState}
    print(f"\nstudy {study_dir}: {counts[optuna.trial.TrialState.COMPLETE]} complete, "
          f"{counts[optuna.trial.TrialState.PRUNED]} pruned, {counts[optuna.trial.TrialState.FAIL]} failed; this "
          f"session {seconds / 60:.1f} min", flush=True)
    print(format_trials(study, metric))
    if not counts[optuna.trial.TrialState.COMPLETE]:
        print("no trial completed, so there is no best config yet; continue the study with a larger budget: "
              f"contrastkit tune --study {study_dir} --resume --trials N", flush=True)
        return
    best = study.best_trial
    path = _write_best(study, study_dir, values)
    print(f"\nbest: trial {best.number}, {metric} {best.value:.4f}; its config is in {path}. Train it with:\n"
          f"  {train_command({**values, **best.params})}", flush=True)
