"""Time series through the shared core: the CLI trains TS2Vec and SimCLR on a UCR set and scores
the representation beside 1-NN Euclidean and DTW; series data is recognised and mismatches are
refused with the fix."""

import json

import pytest

from contrastkit import config as config_module
from contrastkit.config import Config, resolve
from contrastkit.errors import ConfigError, ContrastkitError
from contrastkit.modalities import resolve_modality
from contrastkit.modalities.series import series_name
from contrastkit.runs import Run

pytest.importorskip("aeon", reason="UCR/UEA datasets load through aeon (pip install aeon)")


def test_series_names_are_recognised():
    assert series_name("gunpoint") == "GunPoint"
    assert series_name("ucr:Coffee") == "Coffee"
    assert series_name("uea:Epilepsy") == "Epilepsy"
    assert series_name("digits") is None
    assert resolve_modality("ItalyPowerDemand").name == "series"


def test_a_ts2vec_run_scores_the_representation_beside_raw_baselines(tmp_path, run_cli):
    out = tmp_path / "ts2vec"
    assert run_cli("train", "--method", "ts2vec", "--dataset", "GunPoint", "--out", str(out), "epochs=2",
                   "progress=false", "plot=false") == 0
    summary = json.loads((out / "summary.json").read_text())
    # The archive's published 1-NN baselines on GunPoint's official split: 0.913 and 0.907.
    assert summary["raw_1nn_euclidean_top1"] == pytest.approx(0.9133, abs=1e-4)
    assert summary["raw_1nn_dtw_top1"] == pytest.approx(0.9067, abs=1e-4)
    assert summary["svm_top1"] > 0.8 and {"knn_top1", "linear_f1"} <= set(summary)
    config = config_module.load_yaml(out / "config.yaml")
    assert config["backbone"] == "ts2vec_cnn" and config["preset"] == "ts2vec"
    assert config["modality"] == "series"
    assert config["series"] == {"pooling": "max"}  # TS2Vec's one maximum (a pyramid is series.pooling=pyramid)


def test_series_runs_are_clustered_and_retrieved_when_asked(tmp_path, capsys, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "--method", "simclr", "--dataset", "gunpoint", "--out", str(out), "epochs=1",
                   "progress=false", "plot=false", "evaluate=false") == 0
    assert run_cli("eval", str(out), "--protocol", "kmeans", "--protocol", "class_retrieval") == 0
    assert "kmeans_nmi" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert -1 <= summary["kmeans_ari"] <= 1  # adjusted for chance: below 0 for worse than chance
    for key in ("kmeans_nmi", "class_retrieval_precision_at_1", "class_retrieval_map_at_r"):
        assert 0 <= summary[key] <= 1, key


def test_a_series_run_is_fine_tuned_on_its_own_series():
    # The protocol's 100-step floor is minutes of a dilated CNN on two cores: the run's task is
    # checked here, and a few steps of it trained.
    from contrastkit.evaluate import label_fraction_scores

    run = Run(resolve(Config(method="simclr", dataset="gunpoint", progress=False)))
    task = run.modality.fine_tune_task(run)
    assert task.train_inputs is run.splits.train.values and task.test_inputs is run.splits.test.values
    assert task.num_classes == 2 and task.transform is None
    scores = label_fraction_scores(run.method.backbone, task, (0.1,), epochs=1, min_steps=2, batch_size=8)
    assert scores["finetune_10pct_labels"] == 5  # 10 % of GunPoint's 24 and 26 training series, rounded
    assert 0 <= scores["finetune_10pct_top1"] <= 1 and 0 <= scores["scratch_finetune_10pct_top1"] <= 1


def test_simclr_trains_on_series_views_and_a_pyramid(tmp_path, run_cli):
    out = tmp_path / "simclr"
    assert run_cli("train", "--method", "simclr", "--dataset", "gunpoint", "--out", str(out), "epochs=2",
                   "series.pooling=pyramid", "progress=false", "plot=false", "raw_baseline=false") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["svm_top1"] > 0.8 and "raw_1nn_dtw_top1" not in summary
    config = config_module.load_yaml(out / "config.yaml")
    assert config["preset"] == "simclr" and config["series"] == {"pooling": "pyramid"}


def test_series_mismatches_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="ts2vec trains on series data, but 'digits' is image data"):
        resolve(Config(method="ts2vec", dataset="digits"))
    with pytest.raises(ConfigError, match="clip trains on image-text data, but 'GunPoint' is series data"):
        resolve(Config(method="clip", dataset="GunPoint"))
    with pytest.raises(ContrastkitError, match="series encoder .*ts2vec_cnn.*not 'resnet18'"):
        Run(resolve(Config(method="simclr", dataset="GunPoint", backbone="resnet18", device="cpu")))
    with pytest.raises(ConfigError, match="series.pooling must be one of max, pyramid"):
        resolve(config_module.update(Config(method="ts2vec", dataset="GunPoint"), {"series.pooling": "mean"}))
    with pytest.raises(ConfigError, match="series.pooling configures series runs, but this run trains on image data"):
        resolve(config_module.update(Config(method="simclr", dataset="digits"), {"series.pooling": "pyramid"}))
