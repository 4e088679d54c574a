"""contrastkit tune: the search space and its errors, a tiny study on digits that prunes, resuming
after a kill (a real subprocess), and Optuna missing."""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from contrastkit import config as config_module
from contrastkit import run_folder, runs
from contrastkit import tune as tuning
from contrastkit.errors import ConfigError, ContrastkitError

# Two epochs of five steps on digits: a trial trains in a second or two on two CPU cores.
BASE = {"dataset": "digits", "epochs": 2, "batch_size": 256, "progress": False, "device": "cpu"}
SPACE = {"lr": {"low": 0.05, "high": 0.5, "log": True}, "temperature": {"low": 0.1, "high": 0.5}}


# ----------------------------------------------------------------------------- the search space


def test_a_space_of_ranges_and_choices_over_fields_and_options():
    parameters = tuning.parse_space({
        "lr": {"low": "1e-3", "high": 1, "log": True},  # YAML 1.1 reads 1e-3 as text
        "epochs": {"low": 2, "high": 10, "step": 2},
        "batch_size": [64, 128],
        "method_options.ema_momentum": {"low": 0.99, "high": 0.999},
    }, {"dataset": "digits", "method": "moco_v2"})
    assert [(p.key, p.kind, p.low, p.high, p.log, p.step) for p in parameters] == [
        ("lr", "float", 0.001, 1.0, True, None), ("epochs", "int", 2, 10, False, 2),
        ("batch_size", "choice", None, None, False, None),
        ("method_options.ema_momentum", "float", 0.99, 0.999, False, None)]
    assert parameters[2].choices == (64, 128)


@pytest.mark.parametrize("space, message", [
    ({"lrr": {"low": 0.01, "high": 1}}, "unknown config key 'lrr'; did you mean 'lr'?"),
    ({"lr": {"low": 0.1, "high": 0.1}}, "lr: the range from 0.1 to 0.1 is empty; give low < high"),
    ({"lr": {"low": 1, "high": 0.1}}, "lr: low 1 is above high 0.1; swap them."),
    ({"batch_size": []}, "batch_size: the list of choices is empty"),
    ({"batch_size": {"low": 0.5, "high": 2}}, "batch_size takes whole numbers"),
    ({"optimizer": {"low": 1, "high": 2}}, "optimizer does not take numbers, so it has no range; list its choices"),
    ({"lr": {"low": "a", "high": 1}}, "lr: low must be a number, got 'a'."),
    ({"lr": {"min": 0.1, "high": 1}}, "lr: a range takes low and high"),
    ({"lr": 0.1}, "a fixed value goes on the command line as lr=0.1."),
    ({"lr": {"low": 0, "high": 1, "log": True}}, "lr: log: true samples on a log scale, which needs low > 0"),
    ({"temperature": {"low": 0, "high": 0.5}}, "temperature must be > 0, got 0.0."),  # the config's own check
    ({"optimizer": ["sgd", "adam"]}, "optimizer must be one of sgd, lars, adamw, got 'adam'."),
    ({"method_options.queue_siz": [1, 2]}, "unknown method option 'queue_siz'"),
    ({"device": ["cpu", "cuda"]}, "device cannot be searched"),
    ({"method_options": [1]}, "search one option per key"),
    ({}, "must map config keys to ranges or choices"),
])
def test_a_bad_space_gets_one_line_naming_the_key_and_the_fix(space, message):
    with pytest.raises(ConfigError) as error:
        tuning.parse_space(space, {"dataset": "digits"}, source="search space s.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("search space s.yaml")
    assert "\n" not in str(error.value)


def test_a_bad_space_on_the_command_line_is_refused_before_any_folder_is_made(tmp_path, capsys, run_cli):
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0, high: 0.1}\n")
    study = tmp_path / "study"
    assert run_cli("tune", "--space", str(space), "--dataset", "digits", "--study", str(study)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"contrastkit: error: search space {space}: lr: low 1.0 is above high 0.1; swap them.")
    assert err.count("\n") == 1
    assert not study.exists()


def test_without_optuna_tune_names_the_extra_to_install(tmp_path, monkeypatch, capsys, run_cli):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ContrastkitError, match=r"pip install 'contrastkit\[tune\]'"):
        tuning.tune(SPACE, BASE, study_dir=tmp_path / "study")
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 0.05, high: 0.5}\n")
    assert run_cli("tune", "--space", str(space), "--dataset", "digits", "--study", str(tmp_path / "study")) == 2
    err = capsys.readouterr().err
    assert "contrastkit tune needs Optuna" in err and "pip install 'contrastkit[tune]'" in err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------------- a study


@pytest.fixture(scope="module")
def optuna():
    return pytest.importorskip("optuna")


def prune_trial(optuna, number):
    """A pruner that prunes trial ``number`` at its first report, and no other."""

    class PruneTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == number

    return PruneTrial()


def test_a_tiny_study_prunes_writes_the_best_config_and_prints_its_command(optuna, tmp_path, capsys):
    study_dir = tmp_path / "study"
    study = tuning.tune(SPACE, BASE, study_dir=study_dir, trials=2, pruner=prune_trial(optuna, 1))
    states = [trial.state.name for trial in study.trials]
    assert states == ["COMPLETE", "PRUNED"]
    # The pruned trial's folder is a consistent, unfinished run: its epoch-1 checkpoint, no score, the lock released.
    pruned = study_dir / "trial-0001"
    assert (pruned / run_folder.CHECKPOINT).is_file() and not (pruned / "summary.json").exists()
    assert study.trials[1].intermediate_values.keys() == {1}
    with run_folder.locked(pruned):
        pass
    best = study.best_trial
    summary = json.loads((study_dir / f"trial-{best.number:04d}" / "summary.json").read_text())
    assert summary["knn_top1"] == best.value
    saved = config_module.update(config_module.Config(), config_module.load_yaml(study_dir / "best.yaml"))
    assert (saved.lr, saved.temperature) == (best.params["lr"], best.params["temperature"])
    assert (saved.out, saved.evaluate, saved.plot, saved.epochs) == (None, True, True, 2)
    out = capsys.readouterr().out
    assert "trial  state" in out and "pruned (epoch 1)" in out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("contrastkit train"))
    words = shlex.split(command)
    assert words[:4] == ["contrastkit", "train", "--dataset", "digits"]
    overrides = config_module.parse_overrides([word for word in words if "=" in word])
    assert (overrides["lr"], overrides["temperature"]) == (best.params["lr"], best.params["temperature"])


def test_a_collapse_prunes_the_trial_at_once(optuna, tmp_path, monkeypatch):
    from contrastkit.train.health import TrainingCollapsed

    def collapse(config, callbacks):
        raise TrainingCollapsed("the embeddings look collapsed at step 3")

    monkeypatch.setattr(runs, "train", collapse)
    study = tuning.tune(SPACE, BASE, study_dir=tmp_path / "study", trials=1)
    assert study.trials[0].state.name == "PRUNED"
    assert study.trials[0].user_attrs["pruned"] == "collapsed"


def test_ctrl_c_fails_the_trial_and_queues_it_to_run_again(optuna, tmp_path, monkeypatch):
    def interrupted(config, callbacks):
        raise runs.RunInterrupted("interrupted")

    monkeypatch.setattr(runs, "train", interrupted)
    study_dir = tmp_path / "study"
    with pytest.raises(tuning.TuneInterrupted, match=f"contrastkit tune --study {study_dir} --resume"):
        tuning.tune(SPACE, BASE, study_dir=study_dir, trials=2)
    study = optuna.load_study(study_name=tuning.STUDY_NAME, storage=f"sqlite:///{study_dir / 'study.db'}")
    failed, queued = study.trials
    assert (failed.state.name, failed.user_attrs["failed"]) == ("FAIL", "interrupted")
    assert (queued.state.name, queued.user_attrs["retry_of"]) == ("WAITING", 0)
    assert queued.system_attrs["fixed_params"] == failed.params


def test_resume_after_a_kill_reruns_the_killed_trial_and_repeats_no_finished_one(optuna, tmp_path):
    study_dir = tmp_path / "study"
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 0.05, high: 0.5, log: true}\ntemperature: {low: 0.1, high: 0.5}\n")
    command = [sys.executable, "-u", "-m", "contrastkit", "tune", "--space", str(space), "--study", str(study_dir),
               "--trials", "2", "--dataset", "digits", "--epochs", "1", "--batch-size", "256", "progress=false",
               "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(Path(runs.__file__).resolve().parents[1]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in process.stdout:
            if line.startswith("trial 1: "):  # trial 0 finished, trial 1 asked for (RUNNING) and starting
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    finished_summary = study_dir / "trial-0000" / "summary.json"
    written = finished_summary.stat().st_mtime_ns

    # Resumed with the space, the keys and the budget left out: the study's are used.
    study = tuning.tune(None, {}, study_dir=study_dir, resume=True)
    trials = study.trials
    assert trials[0].state.name == "COMPLETE" and finished_summary.stat().st_mtime_ns == written
    assert (trials[1].state.name, trials[1].user_attrs["failed"]) == ("FAIL", "killed")
    rerun = trials[2]
    assert rerun.user_attrs["retry_of"] == 1 and rerun.params == trials[1].params
    assert len(trials) == 3 and rerun.state.name == "COMPLETE"  # 2 finished, none repeated
    assert (study_dir / "trial-0002" / "summary.json").is_file()
    with pytest.raises(ContrastkitError, match="cannot change epochs"):
        tuning.tune(None, {"epochs": 3}, study_dir=study_dir, resume=True, trials=3)
