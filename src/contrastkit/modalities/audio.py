"""Audio: spoken words and speakers. Clips resampled and cut or padded to one length, resident on
the device (:mod:`contrastkit.data.audio`); a waveform or log-mel encoder (:mod:`contrastkit.models.audio`);
waveform views with SpecAugment on log-mels (:mod:`contrastkit.augment.audio`); kNN and linear probes of
the labels and of the speakers, and speaker verification (EER, minDCF) by cosine scoring, each beside
MFCC statistics as the raw baseline.

Datasets: ``fsdd`` (the Free Spoken Digit Dataset under ``data_root``), or ``audio:PATH``, a folder of
class folders or a CSV ``path,label,speaker[,split]``. Options: ``audio.target`` (train and probe on
the ``label`` or on the ``speaker``), ``audio.seconds`` (clip length), ``audio.sample_rate``
(0: the data's).

Example::

    contrastkit train --dataset fsdd --method simclr data_root=../shared/data
    contrastkit train --dataset fsdd --method supcon audio.target=speaker data_root=../shared/data
    contrastkit train --dataset fsdd --method aam_softmax audio.target=speaker data_root=../shared/data
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import Tensor

from contrastkit.augment.audio import AUDIO_PRESETS, audio_preset
from contrastkit.config import Config
from contrastkit.data.audio import AudioSet, AudioSplits, load_audio_folder, load_fsdd
from contrastkit.errors import ConfigError, DatasetError
from contrastkit.evaluate.verification import verification_scores
from contrastkit.methods import Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, format_results, frozen_scores, probe_results, \
    register_modality
from contrastkit.models.audio import AUDIO_BACKBONES, create_audio_backbone, mfcc_statistics

AUDIO_PREFIX = "audio:"
# On FSDD (2,700 one-second clips at 8 kHz) a run takes a few minutes on two CPU cores.
FSDD_RECIPE = dict(backbone="mel_cnn", epochs=10, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                   warmup_epochs=1.0, temperature=0.2, head="mlp2", projection_dim=128, knn_k=10,
                   methods={"supcon": dict(temperature=0.1)})


def with_target(splits: AudioSplits, target: str) -> AudioSplits:
    """``splits`` labelled by ``target``: ``"label"`` as loaded, ``"speaker"`` the speaker ids.

    Args:
        splits: the loaded clips.
        target: ``label`` or ``speaker``.
    """
    if target == "label":
        return splits
    if (splits.train.speakers < 0).any() or (splits.test.speakers < 0).any():
        raise DatasetError("audio.target=speaker needs every clip's speaker: give a CSV with a speaker column.")
    return dataclasses.replace(splits, train=dataclasses.replace(splits.train, labels=splits.train.speakers),
                               test=dataclasses.replace(splits.test, labels=splits.test.speakers),
                               classes=list(splits.speaker_names))


class AudioModality(Modality):
    """Mono clips of one length and rate, labelled, with speakers where known."""

    name = "audio"
    methods = ("simclr", "supcon")
    default_options = {"target": "label", "seconds": 1.0, "sample_rate": 0}
    option_choices = {"target": ("label", "speaker")}
    option_descriptions = {"target": "what the labels are, for supervised methods and the probes: label or speaker",
                           "seconds": "the length clips are cut (centre) or zero-padded to",
                           "sample_rate": "the rate clips are resampled to (windowed-sinc polyphase); 0: the data's"}
    recipes = {"fsdd": FSDD_RECIPE}
    default_recipe = FSDD_RECIPE
    raw_name = "MFCC stats"

    def claims(self, dataset: str) -> bool:
        return dataset == "fsdd" or dataset.startswith(AUDIO_PREFIX)

    def datasets(self) -> list[str]:
        return ["fsdd", f"{AUDIO_PREFIX}<folder of class folders, or CSV path,label,speaker[,split]>"]

    def list_entries(self) -> dict[str, list[str]]:
        return {"backbones": [*AUDIO_BACKBONES, "hf:<a Hugging Face audio model: wav2vec 2.0, HuBERT, WavLM>"],
                "presets": list(AUDIO_PRESETS)}

    def load(self, config: Config) -> AudioSplits:
        """The clips ``config.dataset`` names, at the options' rate and length, labelled by the target."""
        options = self.options(config.modality_options.get(self.name))
        rate, seconds = options["sample_rate"], options["seconds"]
        if not (isinstance(rate, int) and rate >= 0) or not (isinstance(seconds, (int, float)) and seconds > 0):
            raise ConfigError(f"audio.sample_rate must be an integer >= 0 and audio.seconds a number > 0, got "
                              f"{rate!r} and {seconds!r}.")
        if config.dataset == "fsdd":
            splits = load_fsdd(config.data_root, sample_rate=rate or None, seconds=seconds)
        else:
            splits = load_audio_folder(config.dataset[len(AUDIO_PREFIX):], sample_rate=rate or None, seconds=seconds)
        return with_target(splits, options["target"])

    def build(self, config: Config, method_class: type[Method], splits: AudioSplits | None,
              device: torch.device) -> Built:
        if config.backbone not in AUDIO_BACKBONES and not config.backbone.startswith("hf:"):
            raise ConfigError(f"{config.dataset} holds audio, so its encoder is an audio encoder "
                              f"({', '.join(AUDIO_BACKBONES)}, or hf:<a Hugging Face audio model>), not "
                              f"{config.backbone!r}.")
        splits = splits or self.load(config)
        torch.manual_seed(config.seed)
        backbone = create_audio_backbone(config.backbone, splits.sample_rate)
        if "classes" in method_class.default_options:
            # A classifier head (AAM-softmax) is sized by the labels of the data.
            config = dataclasses.replace(config, method_options={**config.method_options,
                                                                 "classes": len(splits.classes)})
        method = method_class.from_config(backbone, config).to(device)
        preset_name = config.preset or "simclr"
        # Log-mel encoders get log-mel views (SpecAugment on them); evaluation feeds them the clips.
        views = audio_preset(preset_name, frontend=getattr(method.backbone, "frontend", None), **config.preset_options)
        return Built(splits, method, method.configure_views(views), preset_name)

    def inputs(self, data: AudioSet) -> Tensor:
        return data.waveforms

    def raw_inputs(self, run: BuiltRun) -> tuple[Tensor, Tensor]:
        rate = run.splits.sample_rate
        return tuple(mfcc_statistics(data.waveforms, data.lengths, rate)
                     for data in (run.splits.train, run.splits.test))

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """The probes of the labels (:func:`probe_results`, beside MFCC statistics), the kNN and
        linear probes of the speakers (``speaker_`` keys) where the labels are not the speakers, and
        speaker verification on the test split, every pair of clips a trial (``eer``, ``min_dcf`` at
        p_target 0.01, C_miss = C_fa = 1; ``raw_`` beside them for MFCC statistics)."""
        config, splits = run.config, run.splits
        results: dict[str, Any] = {}
        if set(splits.test.labels.tolist()) <= set(splits.train.labels.tolist()):
            results = probe_results(self, run, protocols)
            if results:
                print(format_results(results, protocols, self.raw_name), flush=True)
        else:
            # Held-out speakers (an espeak corpus' test voices): no probe can name a class it never saw.
            print(f"note: the test split of {config.dataset} holds classes the train split lacks (unseen speakers), so "
                  "kNN and linear probes are skipped; verification scores it.", flush=True)
        train_x, _ = run.features("train")
        test_x, _ = run.features("test")
        inputs = {"": (train_x, test_x)}
        if config.raw_baseline:
            inputs["raw_"] = self.raw_inputs(run)
        speakers_known = bool((splits.test.speakers >= 0).all() and (splits.train.speakers >= 0).all())
        speaker_probe = speakers_known and self.options(config.modality_options.get(self.name))["target"] == "label"
        for prefix, (train_features, test_features) in inputs.items():
            if speaker_probe:
                for protocol in [protocol for protocol in protocols if protocol in ("knn", "linear")]:
                    metrics = frozen_scores(protocol, train_features, splits.train.speakers, test_features,
                                            splits.test.speakers, len(splits.speaker_names), config)
                    results.update({f"{prefix}speaker_{protocol}_{key}": round(value, 4)
                                    for key, value in metrics.items()})
            if speakers_known and splits.test.speakers.unique().numel() > 1:
                scores = verification_scores(test_features, splits.test.speakers)
                results.update({f"{prefix}eer": round(scores["eer"], 4),
                                f"{prefix}min_dcf": round(scores["min_dcf"], 4)})
        table = format_audio(results, self.raw_name)
        if table:
            print(table, flush=True)
        return results


def format_audio(results: dict[str, Any], raw_name: str) -> str:
    """The speaker probes and verification figures of :meth:`AudioModality.evaluate` as a table."""
    keys = [key for key in ("speaker_knn_top1", "speaker_linear_top1", "eer", "min_dcf") if key in results]
    raw = all(f"raw_{key}" in results for key in keys)
    lines = [f"{'speakers':<29}{'encoder':>9}" + (f"{raw_name:>12}" if raw else "")]
    for key in keys:
        lines.append(f"{key:<29}{results[key]:>9.4f}" + (f"{results[f'raw_{key}']:>12.4f}" if raw else ""))
    return "\n".join(lines) if keys else ""


AUDIO = register_modality(AudioModality())
