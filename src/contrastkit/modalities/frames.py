"""Frames an agent observed: state representations pretrained on collected rollouts, without rewards.

The data is a folder written by ``contrastkit collect ENV`` (:mod:`contrastkit.data.collect`), named
``rollouts:DIR``. Its episodes are split whole, seeded, 70 / 10 / 20 % into train, val and test
(AtariARI's split); an observation is the stack of the last ``frames.stack`` frames. ATC trains on
the stacks at t and t + gap of one train episode, CURL on the stack at t twice, each view randomly
shifted by up to ``frames.shift`` pixels (DrQ); the encoder is AtariARI's Nature-DQN CNN
(``atari_cnn``, :class:`contrastkit.models.atari.AtariEncoder`).

Evaluation, where the environment is an Atari game AtariARI annotates (``ALE/Pong-v5``, ...):
AtariARI's probes (:mod:`contrastkit.evaluate.state_probe`), one linear probe per RAM state
variable on the frozen features of the train frames, early-stopped on val, scored by weighted F1
on test: the mean over variables and the paper's mean over categories, beside the same encoder
untrained (AtariARI's random-CNN baseline). Variables nearly constant over the train frames
(label entropy under 0.6 nats, as AtariARI drops them) are left out. Other environments have no
state labels; their runs report the training health only.

Example::

    contrastkit collect ALE/Pong-v5 --steps 50000 --size 84 --out rollouts/pong
    contrastkit train --dataset rollouts:rollouts/pong --method atc
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from contrastkit.augment.frames import RandomShift
from contrastkit.config import Config
from contrastkit.data.atariari import MIN_LABEL_ENTROPY, annotated_game, label_entropy, ram_labels
from contrastkit.data.collect import MANIFEST, load_rollouts
from contrastkit.data.device_loader import BatchLoader, DeviceLoader
from contrastkit.data.rollouts import Rollout, split_episodes
from contrastkit.errors import ConfigError, DatasetError
from contrastkit.evaluate import extract_features, state_probe_scores
from contrastkit.methods import Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, register_modality

ROLLOUTS_PREFIX = "rollouts:"
BACKBONE = "atari_cnn"
# ATC's Atari settings where they fit a CPU: Adam 1e-3 (AdamW without decay), batch 128 (ATC: 512), few epochs.
FRAMES_RECIPE = dict(backbone=BACKBONE, epochs=5, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.0,
                     warmup_epochs=0.0, knn_k=20)


@dataclass
class FrameSet:
    """The steps of one split: indices into the rollout. Unlabelled for the shared probes (the
    state variables are scored by the modality itself)."""

    steps: Tensor
    labels: Tensor | None = None

    def __len__(self) -> int:
        return self.steps.numel()


@dataclass
class FrameSplits:
    """A collection split by episodes; ``game`` is the AtariARI game where the RAM can be labelled."""

    rollout: Rollout
    train: FrameSet
    val: FrameSet
    test: FrameSet
    game: str | None
    classes: list[str] = field(default_factory=list)


def _game(folder: Path) -> str | None:
    """The AtariARI game of a collection's environment, or None where AtariARI annotates none."""
    env = json.loads((folder / MANIFEST).read_text())["env"]
    return annotated_game(env) if env.startswith("ALE/") else None


class FrameViews:
    """Two randomly shifted observations of each sampled step t: the stacks at t and t + ``gap``
    (ATC), or at t twice (``gap`` 0, CURL). The loader draws only steps whose t + gap is in t's
    episode.

    Args:
        rollout: the collection, its tensors on the device the views are made on.
        stack: frames per observation.
        gap: steps between the two observations (0: the same one).
        shift: the largest random shift in pixels (DrQ's pad).
    """

    def __init__(self, rollout: Rollout, stack: int, gap: int, shift: int) -> None:
        self.rollout, self.stack, self.gap = rollout, stack, gap
        self.shift = RandomShift(shift)

    def to(self, device: str | torch.device) -> "FrameViews":
        return self

    def __call__(self, steps: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        steps = steps.to(self.rollout.frames.device)
        return [self.shift(self.rollout.stacks(at, self.stack), generator) for at in (steps, steps + self.gap)]


def anchors(episode: Tensor, steps: Tensor, gap: int) -> Tensor:
    """The steps of ``steps`` whose step ``gap`` later lies in the same episode."""
    later = steps + gap
    inside = later < episode.numel()
    same = torch.zeros_like(inside)
    same[inside] = episode[later[inside]] == episode[steps[inside]]
    return steps[same]


class FramesModality(Modality):
    """Observations of an environment, as collected by ``contrastkit collect``."""

    name = "frames"
    default_options = {"stack": 3, "shift": 4, "probe_epochs": 100}
    option_descriptions = {"stack": "frames per observation (the last ones, oldest first)",
                           "shift": "the largest random shift of a view in pixels (DrQ: 4 at 84 x 84)",
                           "probe_epochs": "the most epochs a state probe trains (AtariARI: 100, early-stopped)"}
    default_recipe = FRAMES_RECIPE
    raw_name = "random CNN"

    def claims(self, dataset: str) -> bool:
        return dataset.startswith(ROLLOUTS_PREFIX)

    def datasets(self) -> list[str]:
        return [f"{ROLLOUTS_PREFIX}<folder written by contrastkit collect>"]

    def list_entries(self) -> dict[str, list[str]]:
        return {"backbones": [BACKBONE]}

    def _options(self, config: Config) -> dict[str, Any]:
        options = self.options(config.modality_options.get(self.name))
        for key, low in (("stack", 1), ("shift", 0), ("probe_epochs", 1)):
            if not (isinstance(options[key], int) and not isinstance(options[key], bool) and options[key] >= low):
                raise ConfigError(f"frames.{key} must be an integer >= {low}, got {options[key]!r}.")
        return options

    def load(self, config: Config) -> FrameSplits:
        folder = Path(config.dataset[len(ROLLOUTS_PREFIX):])
        rollout = load_rollouts(folder)
        train, val, test = split_episodes(rollout.episode, config.seed)
        return FrameSplits(rollout, FrameSet(train), FrameSet(val), FrameSet(test),
                           _game(folder) if rollout.ram is not None else None)

    def encoder(self, config: Config, splits: FrameSplits) -> torch.nn.Module:
        """AtariARI's CNN for stacks of the collection's frames (seeded by ``config.seed``)."""
        from contrastkit.models.atari import AtariEncoder

        channels, height, width = splits.rollout.frames.shape[1:]
        torch.manual_seed(config.seed)
        return AtariEncoder(in_channels=channels * self._options(config)["stack"], frame_size=(height, width))

    def build(self, config: Config, method_class: type[Method], splits: FrameSplits | None,
              device: torch.device) -> Built:
        if config.backbone != BACKBONE:
            raise ConfigError(f"{config.dataset} holds frames, whose encoder is {BACKBONE} (AtariARI's CNN), not "
                              f"{config.backbone!r}; drop backbone= or set backbone={BACKBONE}.")
        options = self._options(config)
        splits = splits or self.load(config)
        method = method_class.from_config(self.encoder(config, splits), config).to(device)
        gap = getattr(method, "frame_gap", None)
        if gap is None:
            raise ConfigError(f"{config.method} does not say which frames form its views; frames train with atc or "
                              "curl.")
        on_device = Rollout(splits.rollout.frames.to(device), splits.rollout.actions, splits.rollout.rewards,
                            splits.rollout.episode.to(device))
        return Built(splits, method, FrameViews(on_device, options["stack"], gap, options["shift"]), "shift")

    def inputs(self, data: FrameSet) -> Tensor:
        return data.steps

    def loader(self, run: BuiltRun) -> BatchLoader:
        splits, config = run.splits, run.config
        starts = anchors(splits.rollout.episode, splits.train.steps, run.augment.gap)
        if starts.numel() < 2:
            raise DatasetError(f"the train episodes of {config.dataset} hold {starts.numel()} step(s) with a step "
                               f"{run.augment.gap} later in the same episode; collect longer episodes.")
        return DeviceLoader(starts, torch.zeros(starts.numel(), dtype=torch.long), config.batch_size,
                            device=run.device, seed=config.seed)

    def _stacks(self, run: BuiltRun, data: FrameSet) -> Tensor:
        return run.splits.rollout.stacks(data.steps, self._options(run.config)["stack"])

    def features(self, run: BuiltRun, data: FrameSet) -> tuple[Tensor, Tensor]:
        return extract_features(run.method.backbone, self._stacks(run, data), device=run.device), data.labels

    def fine_tune_task(self, run: BuiltRun) -> None:
        print("note: frames have no class labels to fine-tune on; AtariARI's probes score them.", flush=True)
        return None

    def raw_inputs(self, run: BuiltRun) -> None:
        return None

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        return False

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """AtariARI's probes of the encoder and of the random CNN (module docstring)."""
        splits, config = run.splits, run.config
        if splits.game is None:
            print(f"note: {config.dataset} is not an Atari game AtariARI annotates, so it has no state variables to "
                  "probe; see the training health in metrics.jsonl.", flush=True)
            return {}
        labels = ram_labels(splits.game, splits.rollout.ram)
        kept = {name: values for name, values in labels.items()
                if label_entropy(values[splits.train.steps]) >= MIN_LABEL_ENTROPY}
        if not kept:
            print(f"note: every state variable of {splits.game} is nearly constant over the train frames; nothing "
                  "to probe (collect more steps).", flush=True)
            return {}
        parts = [splits.train, splits.val, splits.test]
        encoders = {"": run.method.backbone}
        if config.raw_baseline:
            encoders["raw_"] = self.encoder(config, splits)
        results: dict[str, Any] = {}
        for prefix, encoder in encoders.items():
            features = [extract_features(encoder, self._stacks(run, part), device=run.device) for part in parts]
            arguments = []
            for part, part_features in zip(parts, features):
                arguments += [part_features, {name: values[part.steps] for name, values in kept.items()}]
            scores = state_probe_scores(*arguments, seed=config.seed, epochs=self._options(config)["probe_epochs"],
                                        train_episode=splits.rollout.episode[splits.train.steps],
                                        val_episode=splits.rollout.episode[splits.val.steps])
            results[f"{prefix}state_f1"] = round(float(scores["mean_f1"]), 4)
            results[f"{prefix}state_f1_by_category"] = round(float(scores["across_categories_f1"]), 4)
            results[f"{prefix}state_f1_per_variable"] = {name: round(float(value), 4)
                                                         for name, value in scores["f1"].items()}
        print(format_state_probes(results, splits.game, self.raw_name), flush=True)
        return results


def format_state_probes(results: dict[str, Any], game: str, raw_name: str) -> str:
    """The per-variable F1 of :meth:`FramesModality.evaluate` as a table."""
    raw = "raw_state_f1" in results
    lines = [f"{'AtariARI probes: ' + game:<34}{'encoder':>9}" + (f"{raw_name:>12}" if raw else "")]
    for name, value in results["state_f1_per_variable"].items():
        lines.append(f"{name:<34}{value:>9.4f}" + (f"{results['raw_state_f1_per_variable'][name]:>12.4f}"
                                                   if raw else ""))
    for key in ("state_f1", "state_f1_by_category"):
        lines.append(f"{key:<34}{results[key]:>9.4f}" + (f"{results['raw_' + key]:>12.4f}" if raw else ""))
    return "\n".join(lines)


FRAMES = register_modality(FramesModality())
