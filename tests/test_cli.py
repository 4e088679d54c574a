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
    assert run_cli("eval", str(tiny_run), "--protocol", "kmeans", "--protocol", "class_retrieval") == 0
    printed = capsys.readouterr().out
    assert "k-means" in printed and "map_at_r" in printed and "kNN" not in printed
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key in ("kmeans_nmi", "kmeans_ari", "raw_kmeans_nmi", "class_retrieval_precision_at_1",
                "class_retrieval_map_at_r", "raw_class_retrieval_map_at_r"):
        assert key in summary
    assert 0 < summary["kmeans_nmi"] <= 1 and 0 < summary["class_retrieval_map_at_r"] <= 1
    assert run_cli("embed", str(tiny_run), "--out", str(tmp_path / "test.npy")) == 0
    features, labels = np.load(tmp_path / "test.npy"), np.load(tmp_path / "test_labels.npy")
    assert features.shape == (360, 128) and features.dtype == np.float32 and labels.shape == (360,)
    (tiny_run / "plots" / "embedding.png").unlink()
    assert run_cli("plot", str(tiny_run)) == 0
    assert (tiny_run / "plots" / "embedding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_fine_tunes_on_label_fractions_beside_training_from_scratch(tiny_run, capsys, run_cli):
    assert run_cli("eval", str(tiny_run), "--protocol", "finetune", "--finetune-epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "fine-tuning" in printed and "scratch" in printed and "100%" in printed
    summary = json.loads((tiny_run / "summary.json").read_text())
    # digits' training split holds 1,437 images, 138 to 150 per class: 1 % rounds to one image of each.
    assert [summary[f"finetune_{name}_labels"] for name in ("1pct", "10pct", "100pct")] == [10, 142, 1437]
    for name in ("1pct", "10pct", "100pct"):
        for metric in ("top1", "f1"):
            assert 0 <= summary[f"finetune_{name}_{metric}"] <= 1
            assert 0 <= summary[f"scratch_finetune_{name}_{metric}"] <= 1
    assert summary["finetune_100pct_top1"] > 0.5  # far above chance (0.1)
    assert run_cli("eval", str(tiny_run), "--protocol", "finetune", "--finetune-epochs", "0") == 2


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


def test_version(capsys, run_cli):
    assert run_cli("--version") == 0
    assert capsys.readouterr().out.startswith("contrastkit ")


def test_key_values_may_follow_flags(capsys, run_cli):
    assert run_cli("train", "lr=0.1", "--dataset", "digits", "seed=3", "--help-config") == 0
    out = capsys.readouterr().out
    assert "  lr                   0.1 " in out and "  seed                 3 " in out


def test_help_config_shows_the_values_the_method_will_use(capsys, run_cli):
    assert run_cli("train", "--help-config", "--method", "byol", "--dataset", "cifar10") == 0
    out = capsys.readouterr().out
    assert "(recipe)" not in out
    assert "  hidden_dim           4096 " in out and "  optimizer            'sgd' " in out
    assert "[sgd | lars | adamw]" in out and "peak learning rate" in out
    assert "  predictor_hidden_dim 4096" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "many"], "argument --epochs: invalid int value: 'many' (see `contrastkit train --help`)"),
    (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["eval", "x", "lr=0.1"], "unrecognized arguments: lr=0.1"),
    (["train", "lr=.nan"], "lr must be a finite number, got nan"),
    (["train", "--device", "cuda:x"], "device must be auto, cpu, cuda or cuda:N"),
])
def test_usage_errors_are_one_line(argv, message, capsys, run_cli):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_a_cuda_index_is_understood_and_its_absence_explained(tmp_path, capsys, run_cli):
    assert run_cli("train", "--dataset", "digits", "--device", "cuda:0", "--out", str(tmp_path / "run")) == 2
    assert "device=cuda:0 was asked for but PyTorch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["simclr", "dino", "byol"])
def test_a_one_view_preset_is_refused_for_a_method_that_contrasts_views(tmp_path, capsys, run_cli, method):
    # crop_flip makes one view (the image-text methods' preset): found by the property test below.
    assert run_cli("train", "--method", method, "--dataset", "digits", "preset=crop_flip", "image_size=8",
                   "--out", str(tmp_path / "run"), "progress=false") == 2
    assert "contrasts two or more views of each sample, but its augmentation makes 1" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unexpected_error_is_one_line_with_the_traceback_on_request(monkeypatch, capsys, run_cli):
    from contrastkit import runs

    def broken(*args, **kwargs):
        raise RuntimeError("something\nwe did not foresee")

    monkeypatch.setattr(runs, "train", broken)
    assert run_cli("train", "--dataset", "digits") == 1
    err = capsys.readouterr().err
    assert err == ("contrastkit: internal error: RuntimeError: something we did not foresee (please report it; "
                   "set CONTRASTKIT_DEBUG=1 to see the traceback)\n")
    monkeypatch.setenv("CONTRASTKIT_DEBUG", "1")
    assert run_cli("train", "--dataset", "digits") == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"lr: 0.1\nmethod: \xff\xfe\n", "is not UTF-8 text"),
    (None, "is a folder; give the path of a YAML file"),
])
def test_unreadable_config_files_are_explained(tmp_path, content, message, capsys, run_cli):
    path = tmp_path / "config.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert run_cli("train", "--config", str(path)) == 2
    assert message in capsys.readouterr().err


def test_resume_accepts_the_original_command_unchanged(tiny_run, capsys, run_cli):
    assert run_cli("train", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--out", str(tiny_run),
                   "--resume", "progress=false", "plot=false", "evaluate=false") == 0


def test_embed_into_a_folder_or_without_the_suffix_writes_where_it_says(tiny_run, tmp_path, capsys, run_cli):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    assert run_cli("embed", str(tiny_run), "--out", str(folder)) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["test.npy", "test_labels.npy"]
    assert f"to {folder / 'test.npy'} and labels to {folder / 'test_labels.npy'}" in capsys.readouterr().out
    assert run_cli("embed", str(tiny_run), "--out", str(tmp_path / "features"), "--split", "train") == 0
    assert np.load(tmp_path / "features.npy").shape == (1437, 128)
    assert f"to {tmp_path / 'features.npy'} and labels to {tmp_path / 'features_labels.npy'}" in \
        capsys.readouterr().out


def test_a_single_class_dataset_is_not_scored(tmp_path, capsys, run_cli):
    from PIL import Image

    folder = tmp_path / "unlabeled" / "images"
    folder.mkdir(parents=True)
    for index in range(40):
        Image.new("RGB", (8, 8), (index * 6, 255 - index * 6, index)).save(folder / f"{index}.png")
    run_dir = tmp_path / "run"
    assert run_cli("train", "--dataset", str(tmp_path / "unlabeled"), "image_size=8", "--epochs", "1",
                   "--batch-size", "16", "--out", str(run_dir), "progress=false", "plot=false") == 0
    assert "has a single class, so kNN and linear-probe accuracy would be 1.0 by construction" in \
        capsys.readouterr().out
    assert "knn_top1" not in json.loads((run_dir / "summary.json").read_text())


def test_embed_refuses_to_replace_files_unless_told_and_names_a_half_trained_checkpoint(tmp_path, capsys, run_cli):
    run_dir = tmp_path / "run"

    def stop_after_first_epoch(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    from contrastkit import run_folder, runs
    from contrastkit.config import Config

    with pytest.raises(KeyboardInterrupt):
        runs.train(Config(dataset="digits", epochs=3, batch_size=256, out=str(run_dir), progress=False,
                          evaluate=False, plot=False), callbacks=[stop_after_first_epoch])
    features = tmp_path / "features.npy"
    features.write_bytes(b"my own file")
    capsys.readouterr()
    assert run_cli("embed", str(run_dir), "--out", str(features)) == 2
    assert "already exist" in capsys.readouterr().err and features.read_bytes() == b"my own file"
    assert run_cli("embed", str(run_dir), "--out", str(features), "--overwrite") == 0
    out = capsys.readouterr().out
    assert "holds the weights of epoch 1 of 3: its training has not finished" in out
    assert f"contrastkit train --out {run_dir} --resume" in out
    assert np.load(features).shape == (360, 128)
    with run_folder.locked(run_dir):  # a training run holds the folder
        assert run_cli("embed", str(run_dir), "--out", str(tmp_path / "other.npy")) == 2
    assert "is in use by another contrastkit run" in capsys.readouterr().err
    assert not (tmp_path / "other.npy").exists()


@pytest.mark.parametrize("command", ["eval", "plot", "embed"])
def test_ctrl_c_in_eval_plot_or_embed_is_one_line_and_exit_130(tiny_run, tmp_path, monkeypatch, capsys, run_cli,
                                                               command):
    from contrastkit import runs

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.Run, "features", pressed)
    before = {path: path.read_bytes() for path in tiny_run.rglob("*") if path.is_file() and path.name != ".lock"}
    extra = ["--out", str(tmp_path / "features.npy")] if command == "embed" else []
    capsys.readouterr()
    assert run_cli(command, str(tiny_run), *extra) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted; no file was left half-written") and err.strip().count("\n") == 0, err
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "features.npy").exists()


def test_ctrl_c_during_the_evaluation_after_training_says_the_training_is_saved(tmp_path, monkeypatch, capsys,
                                                                                run_cli):
    from contrastkit.modalities import ImageModality

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageModality, "evaluate", pressed)
    run_dir = tmp_path / "run"
    assert run_cli("train", "--dataset", "digits", "--epochs", "1", "--out", str(run_dir), "progress=false") == 130
    err = capsys.readouterr().err
    assert f"interrupted after training, which finished: epoch 1 of 1 is checkpointed in {run_dir}" in err
    assert f"contrastkit eval {run_dir}" in err


def test_without_a_progress_bar_each_epoch_still_prints_its_line(tmp_path, capsys, run_cli):
    assert run_cli("train", "--dataset", "digits", "--epochs", "1", "--batch-size", "256", "--out",
                   str(tmp_path / "run"), "progress=false", "evaluate=false", "plot=false") == 0
    out = capsys.readouterr().out
    assert "1 epoch of 5 steps" in out and "epoch 1/1  loss " in out


def test_the_quick_start_can_be_run_again_into_a_folder_of_its_own(tmp_path):
    # The script itself, with setup and training stood in for: which --out does each run get?
    import shutil
    import subprocess
    from pathlib import Path

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "scripts" / "quickstart.sh", scripts)
    (scripts / "setup.sh").write_text("exit 0\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    stand_in = tmp_path / ".venv" / "bin" / "contrastkit"
    stand_in.write_text('#!/usr/bin/env bash\nmkdir -p "$3" && echo "$@"\n')  # $3: the --out folder
    stand_in.chmod(0o755)
    outs = [subprocess.run(["bash", str(scripts / "quickstart.sh"), "--epochs", "1"], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(3)]
    assert [out[:3] for out in outs] == [["train", "--out", f"runs/quickstart{suffix}"] for suffix in ("", "-2", "-3")]
    assert all(out[3:] == ["--epochs", "1"] for out in outs)


def test_pack_shards_refuses_a_destination_inside_its_source(tmp_path, capsys, run_cli):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / name / "0.png")
    assert run_cli("pack-shards", str(tmp_path / "tree"), str(tmp_path / "tree" / "shards")) == 2
    assert "lies inside the source tree" in capsys.readouterr().err
    assert not (tmp_path / "tree" / "shards").exists()
