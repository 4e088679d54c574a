"""Recommenders through the application: `contrastkit train`, `eval`, `embed` and `list` on an
interaction file and on ML-100K, with no branch of their own in the CLI or runs."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.config import Config

needs_recbole = pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                                   reason="ML-100K is read from the recbole package: pip install --no-deps recbole")
QUIET = ("progress=false", "plot=false", "batch_size=64")


def test_train_eval_and_embed_an_interaction_file(tmp_path, ratings, run_cli, capsys):
    data = ratings(tmp_path / "ratings.csv", users=30, items=25)
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", str(data), "--method", "xsimgcl", "--epochs", "2", "--device", "cpu",
                   "--out", str(out), "modality=interactions", "interactions.split=time",
                   "interactions.embedding_dim=16", *QUIET) == 0
    printed = capsys.readouterr().out
    assert "recall@20" in printed and "popularity" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["recall@20"] <= 1 and "raw_ndcg@10" in summary and "valid_hit@10" in summary
    saved = config_module.load_yaml(out / "config.yaml")
    assert saved["modality"] == "interactions" and saved["interactions"]["split"] == "time"
    assert saved["backbone"] == "id_embeddings" and saved["preset"] == "uniform_negatives"
    assert run_cli("eval", str(out)) == 0
    assert run_cli("embed", str(out), "--out", str(tmp_path)) == 0
    features, kinds = np.load(tmp_path / "test.npy"), np.load(tmp_path / "test_labels.npy")
    assert features.shape == (30 + 25, 16) and kinds.tolist() == [0] * 30 + [1] * 25
    assert run_cli("list") == 0
    listed = capsys.readouterr().out
    assert "interactions methods" in listed and "lightgcn" in listed and "two_tower" in listed


@pytest.mark.parametrize("method", ["simgcl", "two_tower"])
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(tmp_path, ratings, method):
    data = str(ratings(tmp_path / "ratings.csv", users=20, items=15))

    def config(name):
        return Config(dataset=data, method=method, modality="interactions", epochs=3, batch_size=32, device="cpu",
                      out=str(tmp_path / name), progress=False, plot=False, evaluate=False)

    def stop_after_epoch_1(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    whole = runs.train(config("whole"))
    with pytest.raises(runs.RunInterrupted):
        runs.train(config("resumed"), callbacks=[stop_after_epoch_1])
    resumed = runs.train(config("resumed"), resume=True)
    weights = [torch.load(folder / "checkpoints" / "last.pt", weights_only=False)["method"]
               for folder in (whole, resumed)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_wrong_backbone_and_other_modalities_methods_are_refused(tmp_path, ratings, run_cli, capsys):
    data = str(ratings(tmp_path / "ratings.csv", users=10, items=10))
    assert run_cli("train", "--dataset", data, "--method", "lightgcn", "--backbone", "resnet18", "--out",
                   str(tmp_path / "a"), "modality=interactions", *QUIET) == 2
    assert "whose encoder is id_embeddings" in capsys.readouterr().err
    assert run_cli("train", "--dataset", data, "--method", "simclr", "--out", str(tmp_path / "b"),
                   "modality=interactions", *QUIET) == 2
    assert "simclr trains on" in capsys.readouterr().err


@needs_recbole
def test_lightgcn_on_ml_100k_through_the_cli(tmp_path, run_cli, capsys):
    out = tmp_path / "ml"
    assert run_cli("train", "--dataset", "ml-100k", "--method", "lightgcn", "--epochs", "1", "--device", "cpu",
                   "--out", str(out), "progress=false", "plot=false") == 0
    summary = json.loads((out / "summary.json").read_text())
    # One epoch already ranks above chance (20 / 1682 items) and near popularity.
    assert summary["recall@20"] > 0.1 and summary["raw_recall@20"] > 0.1
    assert "nearest to Star Wars" in capsys.readouterr().out


def test_two_tower_reads_feature_tables_named_in_the_config(tmp_path, ratings):
    data = ratings(tmp_path / "ratings.csv", users=12, items=10)
    genres = tmp_path / "items.csv"
    genres.write_text("item_id,genre\n" + "".join(f"i{item},{'ab'[item % 2]}\n" for item in range(10)))
    config = Config(dataset=str(data), method="two_tower", modality="interactions", epochs=1, batch_size=16,
                    device="cpu", out=str(tmp_path / "run"), progress=False, plot=False, evaluate=False,
                    modality_options={"interactions": {"item_features": str(genres)}})
    run = runs.Run.load(runs.train(config))
    assert list(run.method.feature_bags) == ["item"]
    assert run.splits.item_features.vocabulary == ["genre=a", "genre=b"]
