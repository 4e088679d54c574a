import json

import numpy as np
import pytest




@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_cli):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code = run_cli("train", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--out", str(run_dir),
                   "progress=false", "plot_points=200")
    assert code == 0
    return run_dir


def test_train_writes_a_complete_run_folder(tiny_run):
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "summary.json",
                 "plots/training.png", "plots/embedding.png"):
        assert (tiny_run / name).is_file(), name
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key in ("knn_top1", "linear_top1", "raw_knn_top1", "raw_linear_top1", "train_seconds",
                "knn_f1", "linear_precision", "linear_recall"):
        assert key in summary
    assert summary["knn_top1"] > 0.3  # far above chance (0.1) after two epochs on digits


def test_eval_embed_plot_on_a_trained_run(tiny_run, tmp_path, capsys, run_cli):
    assert run_cli("eval", str(tiny_run), "--protocol", "knn") == 0
    assert "kNN" in capsys.readouterr().out
    assert run_cli("embed", str(tiny_run), "--out", str(tmp_path / "test.npy")) == 0
    features, labels = np.load(tmp_path / "test.npy"), np.load(tmp_path / "test_labels.npy")
    assert features.shape == (360, 128) and features.dtype == np.float32 and labels.shape == (360,)
    (tiny_run / "plots" / "embedding.png").unlink()
    assert run_cli("plot", str(tiny_run)) == 0
    assert (tiny_run / "plots" / "embedding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_names_the_building_blocks(capsys, run_cli):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    for name in ("simclr", "mnist", "cifar10", "digits", "resnet18", "small_cnn", "simclr_cifar", "mlp2"):
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["train", "temprature=0.2"], "did you mean 'temperature'"),
    (["train", "--dataset", "mnits"], "did you mean 'mnist'"),
    (["train", "--resume"], "--resume needs --out"),
    (["eval", "/nonexistent/run"], "is not a run folder"),
])
def test_bad_input_gets_a_clear_error_not_a_traceback(argv, message, capsys, run_cli):
    assert run_cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_to_change_what_the_run_computes(tiny_run, capsys, run_cli):
    assert run_cli("train", "--out", str(tiny_run), "--resume", "lr=0.5") == 2
    assert "cannot change lr" in capsys.readouterr().err


def test_help_config_lists_the_keys_and_the_methods_options(capsys, run_cli):
    assert run_cli("train", "--help-config", "--method", "moco_v2") == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "method_options of moco_v2" in out and "queue_size" in out
