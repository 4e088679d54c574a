"""The audio encoders, and audio as a registered modality: recipes, training with SimCLR and
SupCon on speakers through contrastkit.runs and the CLI, and its evaluation."""

import json

import pytest
import torch

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.config import Config
from contrastkit.errors import ConfigError, InputError
from contrastkit.models import create_backbone
from contrastkit.models.audio import create_audio_backbone


def _csv_corpus(root, corpus):
    """The two-tone corpus with two speakers (even and odd clip numbers) and a split column."""
    corpus(root, per_class=8)
    rows = ["path,label,speaker,split"] + [f"{label}/{index:02d}.wav,{label},s{index % 2},"
                                           f"{'test' if index >= 6 else 'train'}"
                                           for label in ("low", "high") for index in range(8)]
    (root / "clips.csv").write_text("\n".join(rows) + "\n")
    return root / "clips.csv"


@pytest.mark.parametrize("name", ["wave_cnn", "mel_cnn", "ecapa"])
def test_encoders_embed_waveforms_and_mel_encoders_take_log_mels_too(name):
    encoder = create_backbone(name, in_channels=1, sample_rate=8000).eval()
    clips = torch.randn(3, 1, 4000)
    features = encoder(clips)
    assert features.shape == (3, encoder.feature_dim) and torch.isfinite(features).all()
    if encoder.frontend is not None:
        assert torch.allclose(encoder(encoder.frontend(clips)), features)
        # Each log-mel is standardised, so a gain (a shift of the log-mel) changes nothing.
        assert torch.allclose(encoder(4 * clips), features, atol=1e-4)


def test_audio_encoders_refuse_what_they_cannot_take():
    with pytest.raises(ConfigError, match="audio encoder"):
        create_audio_backbone("resnet18", 8000)
    with pytest.raises(ConfigError, match="mono"):
        create_backbone("mel_cnn", in_channels=2, sample_rate=8000)
    with pytest.raises(InputError, match=r"\(B, 1, n_mels, frames\)"):
        create_backbone("mel_cnn", in_channels=1, sample_rate=8000)(torch.randn(2, 3, 40, 10))


def test_fsdd_and_audio_paths_resolve_to_the_audio_recipe():
    config = config_module.resolve(Config(dataset="fsdd"))
    assert config.modality == "audio" and config.backbone == "mel_cnn" and config.temperature == 0.2
    assert config.modality_options == {"audio": {"target": "label", "seconds": 1.0, "sample_rate": 0}}
    supcon = config_module.resolve(Config(dataset="audio:/clips.csv", method="supcon"))
    assert supcon.modality == "audio" and supcon.temperature == 0.1
    with pytest.raises(ConfigError, match="audio.target must be one of label, speaker"):
        config_module.resolve(config_module.update(Config(dataset="fsdd"), {"audio.target": "digit"}))


def test_simclr_trains_and_evaluates_digits_speakers_and_verification_through_runs(tmp_path, corpus):
    csv_path = _csv_corpus(tmp_path / "clips", corpus)
    config = config_module.update(Config(dataset=f"audio:{csv_path}", backbone="wave_cnn", epochs=1, batch_size=8,
                                         device="cpu", out=str(tmp_path / "run"), progress=False, plot=False,
                                         knn_k=3), {"audio.seconds": 0.5})
    summary = json.loads((runs.train(config) / "summary.json").read_text())
    for key in ("knn_top1", "linear_top1", "speaker_knn_top1", "speaker_linear_top1", "eer", "min_dcf"):
        assert 0 <= summary[key] <= 1 and 0 <= summary[f"raw_{key}"] <= 1
    # Two tones an octave and more apart: the MFCC statistics tell them apart.
    assert summary["raw_linear_top1"] == 1.0
    run = runs.Run.load(tmp_path / "run")
    assert run.splits.train.waveforms.shape == (12, 1, 4000) and run.config.preset == "simclr"


def test_supcon_trains_on_speakers_through_the_cli(tmp_path, corpus, run_cli, capsys):
    csv_path = _csv_corpus(tmp_path / "clips", corpus)
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", f"audio:{csv_path}", "--method", "supcon", "--epochs", "1", "--device", "cpu",
                   "--out", str(out), "backbone=wave_cnn", "batch_size=8", "knn_k=3", "audio.target=speaker",
                   "audio.seconds=0.5", "audio.sample_rate=4000", "progress=false", "plot=false") == 0
    printed = capsys.readouterr().out
    assert "eer" in printed and "MFCC stats" in printed
    summary = json.loads((out / "summary.json").read_text())
    # The labels are the speakers, so there is no separate speaker probe.
    assert "knn_top1" in summary and "speaker_knn_top1" not in summary and "eer" in summary
    assert config_module.load_yaml(out / "config.yaml")["audio"]["target"] == "speaker"
    assert run_cli("list") == 0
    assert "fsdd" in capsys.readouterr().out
    assert run_cli("train", "--dataset", f"audio:{csv_path}", "--out", str(tmp_path / "bad"), "backbone=small_cnn") == 2
    assert "audio encoder" in capsys.readouterr().err


@pytest.mark.parametrize("method,preset", [("supcon", None), ("aam_softmax", None), ("simclr", "cola")])
def test_unseen_test_speakers_are_scored_by_verification_only(tmp_path, corpus, capsys, method, preset):
    corpus(tmp_path / "clips", per_class=8)
    rows = ["path,label,speaker,split"] + [f"{label}/{index:02d}.wav,{label},s{index % 4},"
                                           f"{'test' if index % 4 >= 2 else 'train'}"
                                           for label in ("low", "high") for index in range(8)]
    (tmp_path / "clips" / "clips.csv").write_text("\n".join(rows) + "\n")
    config = config_module.update(Config(dataset=f"audio:{tmp_path / 'clips' / 'clips.csv'}", method=method,
                                         backbone="wave_cnn", epochs=1, batch_size=8, device="cpu", preset=preset,
                                         out=str(tmp_path / "run"), progress=False, plot=False),
                                  {"audio.seconds": 0.5, "audio.target": "speaker"})
    summary = json.loads((runs.train(config) / "summary.json").read_text())
    assert "unseen speakers" in capsys.readouterr().out
    assert "knn_top1" not in summary and 0 <= summary["eer"] <= 1 and 0 <= summary["raw_eer"] <= 1
    # Reloaded, the run is rebuilt as trained: AAM-softmax's classifier sized by the speakers' names.
    run = runs.Run.load(tmp_path / "run")
    if method == "aam_softmax":
        assert run.method.criterion.weight.shape == (4, run.method.backbone.feature_dim)


def test_aam_softmax_trains_on_audio_only(tmp_path, run_cli, capsys):
    assert run_cli("train", "--dataset", "digits", "--method", "aam_softmax", "--out", str(tmp_path / "run")) == 2
    assert "aam_softmax" in capsys.readouterr().err
