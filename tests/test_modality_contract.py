"""A new kind of data is one registered unit: a toy modality, defined here and nowhere in the library
(float vectors in Gaussian blobs, Gaussian-noise views, a small MLP), trains, resumes, evaluates,
embeds and plots through contrastkit.runs and the CLI."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.config import Config
from contrastkit.errors import ConfigError
from contrastkit.modalities import MODALITIES, Built, Modality, register_modality


# --- the toy modality: everything a kind of data has to say ---------------------------------------
@dataclass
class Vectors:
    values: torch.Tensor  # (N, F) float
    labels: torch.Tensor  # (N,) class ids

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class VectorSplits:
    train: Vectors
    test: Vectors
    classes: list[str]


def blobs(classes: int = 4, features: int = 8, seed: int = 0) -> VectorSplits:
    """Points around ``classes`` random centres, 64 per class for training and 32 for testing."""
    generator = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(classes, features, generator=generator)

    def split(n: int) -> Vectors:
        labels = torch.arange(n) % classes
        return Vectors(centres[labels] + torch.randn(n, features, generator=generator), labels)

    return VectorSplits(split(64 * classes), split(32 * classes), [f"blob {i}" for i in range(classes)])


class NoiseViews:
    """Two views of a batch of vectors, each with its own Gaussian noise."""

    def __init__(self, noise: float) -> None:
        self.noise = noise

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [batch + self.noise * torch.randn(batch.shape, generator=generator) for _ in range(2)]


class MLP(nn.Sequential):
    def __init__(self, features: int, width: int = 32) -> None:
        super().__init__(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width))
        self.feature_dim = width


class VectorModality(Modality):
    name = "vectors"
    methods = ("simclr",)
    default_options = {"noise": 0.5}
    default_recipe = dict(backbone="mlp", epochs=3, batch_size=32, knn_k=5, temperature=0.2, optimizer="adamw",
                          lr=1e-3, weight_decay=0.0)

    def claims(self, dataset: str) -> bool:
        return dataset == "blobs"

    def datasets(self) -> list[str]:
        return ["blobs"]

    def build(self, config, method_class, splits, device) -> Built:
        splits = splits or blobs(seed=config.seed)
        torch.manual_seed(config.seed)
        method = method_class.from_config(MLP(splits.train.values.shape[1]), config).to(device)
        noise = self.options(config.modality_options.get(self.name))["noise"]
        return Built(splits, method, method.configure_views(NoiseViews(noise)), preset="noise")

    def inputs(self, data: Vectors) -> torch.Tensor:
        return data.values


if "vectors" not in MODALITIES:
    register_modality(VectorModality())
# ----------------------------------------------------------------------------------------------------


def _config(out, **values) -> Config:
    return Config(dataset="blobs", device="cpu", out=str(out), progress=False, plot=False, **values)


def test_the_toy_modality_trains_resumes_bitwise_evaluates_and_embeds_through_runs(tmp_path):
    whole = runs.train(_config(tmp_path / "whole", epochs=4))
    summary = json.loads((whole / "summary.json").read_text())
    # Noise views of well-separated blobs: the features keep the classes apart, as the raw vectors do.
    assert summary["knn_top1"] > 0.9 and summary["linear_top1"] > 0.9 and summary["raw_knn_top1"] > 0.9
    saved = config_module.load_yaml(whole / "config.yaml")
    assert saved["modality"] == "vectors" and saved["vectors"] == {"noise": 0.5} and saved["preset"] == "noise"

    def stop_after_epoch_2(state):
        if state.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.RunInterrupted, match="epoch 2 of 4 is checkpointed"):
        runs.train(_config(tmp_path / "resumed", epochs=4), callbacks=[stop_after_epoch_2])
    resumed = runs.train(_config(tmp_path / "resumed", epochs=4), resume=True)
    weights = [torch.load(folder / "checkpoints" / "last.pt", weights_only=False)["method"]
               for folder in (whole, resumed)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])

    run = runs.Run.load(resumed)
    path = runs.embed(run, tmp_path / "test.npy")
    features, labels = np.load(path), np.load(tmp_path / "test_labels.npy")
    assert features.shape == (128, 32) and np.array_equal(labels, blobs().test.labels.numpy())
    scores = runs.evaluate(run, resumed, protocols=["knn"])
    assert scores["knn_top1"] == json.loads((whole / "summary.json").read_text())["knn_top1"]


def test_the_toy_modality_through_the_cli(tmp_path, run_cli, capsys):
    assert run_cli("list") == 0
    listed = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split()[-1] for line in listed.splitlines()}
    assert rows["modalities"].endswith("vectors") and rows["vectors methods"] == "simclr"
    assert rows["vectors datasets"] == "blobs"
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "blobs", "--epochs", "2", "--device", "cpu", "--out", str(out),
                   "vectors.noise=0.3", "progress=false", "plot=false") == 0
    assert config_module.load_yaml(out / "config.yaml")["vectors"] == {"noise": 0.3}
    assert run_cli("train", "--out", str(out), "--resume", "progress=false", "plot=false") == 0
    # The first command repeated resumes; a changed option is refused.
    assert run_cli("train", "--dataset", "blobs", "--epochs", "2", "--out", str(out), "--resume",
                   "vectors.noise=0.3", "progress=false", "plot=false") == 0
    capsys.readouterr()
    assert run_cli("train", "--out", str(out), "--resume", "vectors.noise=0.4") == 2
    assert "cannot change vectors.noise" in capsys.readouterr().err
    assert run_cli("eval", str(out), "--protocol", "linear") == 0
    assert "linear probe" in capsys.readouterr().out
    assert run_cli("embed", str(out), "--out", str(tmp_path), "--split", "train") == 0
    assert np.load(tmp_path / "train.npy").shape == (256, 32)
    assert run_cli("plot", str(out)) == 0
    assert (out / "plots" / "embedding.png").is_file()
    assert run_cli("train", "--dataset", "blobs", "--out", str(tmp_path / "typo"), "vectors.nois=1") == 2
    assert "unknown option vectors.nois; did you mean vectors.noise?" in capsys.readouterr().err


def test_a_modality_can_be_named_where_the_data_could_be_several_kinds(tmp_path):
    config = config_module.resolve(Config(dataset="digits", modality="vectors"))
    assert config.modality == "vectors" and config.backbone == "mlp"
    with pytest.raises(ConfigError, match="ts2vec trains on series data, but 'blobs' is vectors data"):
        config_module.resolve(Config(dataset="blobs", method="ts2vec"))
    with pytest.raises(ConfigError, match="unknown modality 'vector'; did you mean 'vectors'"):
        config_module.resolve(Config(dataset="blobs", modality="vector"))
