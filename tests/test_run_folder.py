"""What a run folder guarantees: nobody else's files overwritten, one run at a time, truthful
interrupts, resumes that survive kills and torn files."""

import hashlib
import os
import random
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastkit import run_folder, runs
from contrastkit.config import Config
from contrastkit.data import DeviceLoader
from contrastkit.methods import Method
from contrastkit.train import Trainer, TrainingDiverged, load_checkpoint, read_metrics

TRAIN_ARGS = ["--dataset", "digits", "--batch-size", "64", "progress=false", "evaluate=false", "plot=false",
              "log_every=1"]


def digits_config(out, **values):
    base = dict(dataset="digits", epochs=2, batch_size=64, log_every=1, evaluate=False, plot=False,
                progress=False, device="cpu", out=str(out))
    return Config(**{**base, **values})


# ----------------------------------------------------------------------------- whose folder it is


def test_a_folder_of_someone_elses_files_is_refused_and_left_untouched(tmp_path, capsys, run_cli):
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: own settings\n")
    (folder / "notes.txt").write_text("keep me")
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(folder)) == 2
    assert "is not empty (config.yaml, notes.txt) and is not a contrastkit run folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "notes.txt"]
    assert (folder / "config.yaml").read_text() == "my: own settings\n"


def test_a_file_as_out_is_refused(tmp_path, capsys, run_cli):
    (tmp_path / "file").write_text("x")
    assert run_cli("train", *TRAIN_ARGS, "--out", str(tmp_path / "file")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_an_empty_folder_is_fine(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(tmp_path / "empty")) == 0
    assert (tmp_path / "empty" / "checkpoints" / "last.pt").is_file()


def test_files_are_made_with_the_users_umask(tmp_path):
    run_dir = runs.train(digits_config(tmp_path / "run", epochs=1, plot=True, embedding_method="pca"))
    expected = 0o666 & ~run_folder_umask()
    for name in ("checkpoints/last.pt", "summary.json", "config.yaml", "plots/training.png", "plots/embedding.png"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == expected, name


@pytest.mark.parametrize("argv", [["lr=-1"], ["--dataset", "no/such/folder"], ["--out", "new/deeper/run", "lr=-1"]])
def test_a_refused_train_leaves_no_folder_behind(tmp_path, monkeypatch, run_cli, argv):
    monkeypatch.chdir(tmp_path)  # the default folder, runs/<method>-<dataset>-<time>, would land here
    assert run_cli("train", *argv, "--epochs", "1", "progress=false") == 2
    assert list(tmp_path.iterdir()) == []


def run_folder_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


# ----------------------------------------------------------------------------- one run at a time


def test_a_held_lock_refuses_a_second_run_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with run_folder.locked(folder):
        with pytest.raises(runs.ContrastkitError, match=f"{folder} is in use by another contrastkit run \\(pid "):
            runs.train(digits_config(folder, epochs=1))
    # The holder is gone (its lock released, as the OS does for a killed process): the next run proceeds.
    assert runs.train(digits_config(folder, epochs=1)) == folder
    assert (folder / ".lock").read_text() == ""  # released: no holder named


def test_two_trainings_into_one_folder_the_second_is_refused_the_first_finishes(tmp_path):
    folder = tmp_path / "run"
    first = start_training(folder, epochs=6)
    wait_for_steps(folder, 2, first)
    first.send_signal(signal.SIGSTOP)  # mid-run for as long as the second one takes to start
    try:
        second = subprocess.run(cli_command(folder, epochs=6), capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert f"{folder} is in use by another contrastkit run (pid {first.pid} " in second.stderr
    assert second.stderr.count("\n") == 1
    assert first.wait(timeout=300) == 0
    steps = [record["step"] for record in read_metrics(folder / "metrics.jsonl")]
    assert steps == list(range(1, 6 * 22 + 1))  # one run's log, no interleaving
    assert load_checkpoint(folder / "checkpoints" / "last.pt")["trainer"]["epoch"] == 6


# ----------------------------------------------------------------------------- interrupts


@pytest.fixture
def ctrl_c_at_step(monkeypatch):
    """Press Ctrl-C when the trainer logs the given step."""

    def arm(step):
        log = Trainer._log

        def log_then_interrupt(self, record, writer):
            log(self, record, writer)
            if record["step"] == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "_log", log_then_interrupt)
        return lambda: monkeypatch.setattr(Trainer, "_log", log)

    return arm


def test_ctrl_c_in_the_first_epoch_says_no_checkpoint_and_a_rerun_starts_clean(tmp_path, capsys, run_cli,
                                                                              ctrl_c_at_step):
    folder = tmp_path / "run"
    disarm = ctrl_c_at_step(5)
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(folder)) == 130
    assert "interrupted in the first epoch, before any checkpoint was written" in capsys.readouterr().err
    assert not (folder / "checkpoints" / "last.pt").exists()
    disarm()
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(folder)) == 0
    steps = [record["step"] for record in read_metrics(folder / "metrics.jsonl")]
    assert steps == list(range(1, 2 * 22 + 1))  # a clean log, not the old steps 1-5 again


def test_resume_without_a_checkpoint_starts_the_run_over(tmp_path, capsys, run_cli, ctrl_c_at_step):
    folder = tmp_path / "run"
    disarm = ctrl_c_at_step(3)
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(folder)) == 130
    disarm()
    assert run_cli("train", "--out", str(folder), "--resume") == 0
    assert "holds no checkpoint yet" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl")] == list(range(1, 23))


def test_ctrl_c_after_a_checkpoint_names_the_epoch_and_the_resume_command(tmp_path, capsys, run_cli,
                                                                          ctrl_c_at_step):
    folder = tmp_path / "run"
    ctrl_c_at_step(30)
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "3", "--out", str(folder)) == 130
    err = capsys.readouterr().err
    assert f"epoch 1 of 3 is checkpointed in {folder}. Continue with: contrastkit train --out {folder} --resume" in err


def test_a_torn_log_line_and_orphaned_temporary_files_do_not_stop_a_resume(tmp_path):
    folder = tmp_path / "run"

    def stop_after_first_epoch(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.train(digits_config(folder), callbacks=[stop_after_first_epoch])
    with open(folder / "metrics.jsonl", "a") as file:
        file.write('{"step": 23, "epoch": 1.04')  # a kill mid-write
    orphans = [folder / ".summary.json.k3j2.tmp", folder / "checkpoints" / ".last.pt.x8w1.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    runs.train(Config(out=str(folder), progress=False, log_every=1, evaluate=False, plot=False), resume=True)
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl")] == list(range(1, 45))
    assert not any(orphan.exists() for orphan in orphans)


class NaNInSecondEpoch(Method):
    """A loss that is finite for ``finite_steps`` steps, then NaN."""

    def __init__(self, finite_steps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.finite_steps, self.steps = finite_steps, 0

    def training_step(self, views, labels=None, validate=True):
        self.steps += 1
        scale = 1.0 if self.steps <= self.finite_steps else float("nan")
        return {"loss": self.weight.sum() * scale}


@pytest.mark.parametrize("finite_steps, message", [(0, "no checkpoint was written before it"),
                                                   (2, "the checkpoint of epoch 1 in .* is the last good state")])
def test_a_diverged_run_says_which_checkpoint_exists_on_a_closed_progress_bar(tmp_path, finite_steps, message):
    from tqdm.auto import tqdm

    method = NaNInSecondEpoch(finite_steps)
    loader = DeviceLoader(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), 4)
    trainer = Trainer(method, lambda images, generator=None: [images.float()], loader,
                      torch.optim.SGD(method.parameters(), lr=0.1), epochs=3, log_every=1, progress=True,
                      out_dir=tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=message):
        trainer.fit()
    assert not getattr(tqdm, "_instances", set())  # no bar left open to glue the message onto


# ----------------------------------------------------------------------------- moved, copied, started over


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in folder.rglob("*") if path.is_file()}


def test_resume_continues_the_folder_on_the_command_line_wherever_the_run_was_made(tmp_path, monkeypatch, run_cli,
                                                                                   ctrl_c_at_step):
    runs_dir = tmp_path / "runs"
    original = runs_dir / "original"
    disarm = ctrl_c_at_step(30)  # in epoch 2 of 2, after epoch 1's checkpoint
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(original)) == 130
    shutil.copytree(original, runs_dir / "copy")
    shutil.move(original, runs_dir / "renamed")
    # A new run at the old name, stopped in its second epoch too.
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(original), "seed=1") == 130
    disarm()
    before = file_hashes(original)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative --out, from another folder than the run was made in
    assert run_cli("train", "--out", "../runs/copy", "--resume") == 0
    assert run_cli("train", "--out", str(runs_dir / "renamed"), "--resume") == 0
    assert file_hashes(original) == before
    for name in ("copy", "renamed"):
        assert load_checkpoint(runs_dir / name / "checkpoints" / "last.pt")["trainer"]["epoch"] == 2, name
    assert sorted(path.name for path in elsewhere.iterdir()) == []


def test_a_damaged_checkpoint_names_the_command_that_starts_the_run_over(tmp_path, capsys, run_cli, ctrl_c_at_step):
    folder = tmp_path / "run"
    disarm = ctrl_c_at_step(30)
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(folder)) == 130
    disarm()
    (folder / "checkpoints" / "last.pt").write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert run_cli("train", "--out", str(folder), "--resume") == 2
    err = capsys.readouterr().err
    command = f"contrastkit train --config {folder / 'config.yaml'} --out {folder} --overwrite"
    assert "cannot be read" in err and command in err and err.count("\n") == 1, err
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(folder)) == 2
    assert "start it over with --overwrite" in capsys.readouterr().err
    assert run_cli(*shlex.split(command)[1:]) == 0  # the command the message gave
    assert load_checkpoint(folder / "checkpoints" / "last.pt")["trainer"]["epoch"] == 2
    assert [record["step"] for record in read_metrics(folder / "metrics.jsonl")] == list(range(1, 2 * 22 + 1))


def test_a_finished_run_is_trained_further_as_a_new_run_from_its_weights(tmp_path, capsys, run_cli):
    folder = tmp_path / "run"
    assert run_cli("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(folder)) == 0
    capsys.readouterr()
    assert run_cli("train", "--out", str(folder), "--resume", "--epochs", "2") == 2
    err = capsys.readouterr().err
    suggested = f"contrastkit train --config {folder / 'config.yaml'} init_from={folder} --epochs N --out NEW_DIR"
    assert "cannot change epochs" in err and suggested in err, err
    more = tmp_path / "more"
    # A learning rate too small to move a weight shows where the new run starts: at the old one's end.
    command = suggested.replace("N --out NEW_DIR", f"1 --out {more}").split()[1:]
    assert run_cli(*command, "lr=1e-30", "weight_decay=0") == 0
    assert f"init_from: {folder}" in (more / "config.yaml").read_text()
    trained = load_checkpoint(folder / "checkpoints" / "last.pt")["method"]
    started = runs.Run.load(more).method
    for name, parameter in started.named_parameters():
        torch.testing.assert_close(parameter.detach(), trained[name], rtol=0, atol=1e-12, msg=name)
    assert run_cli("train", "--config", str(folder / "config.yaml"), f"init_from={folder}", "--out", str(folder),
                   "--overwrite") == 2
    assert "is this run's own folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- faults of the machine


def run_contrastkit(*args: str, limit_file_size: int | None = None, read_only: Path | None = None):
    """``python -m contrastkit ARGS`` in a process of its own, optionally with a file-size limit
    (``ulimit -f``: a write past it fails like one on a full disk) or with ``read_only`` mounted
    read-only for it (as root: in a mount namespace of its own; otherwise by its permissions)."""
    command = [sys.executable, "-m", "contrastkit", *args]
    if read_only is not None and os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
            pytest.skip("as root, a read-only folder needs `unshare -m` (util-linux) to mount it read-only")
        command = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
                   str(read_only), *command]
    elif read_only is not None:
        read_only.chmod(0o555)

    def limit() -> None:
        if limit_file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG rather than die
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    env = dict(os.environ, PYTHONPATH=str(Path(runs.__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)


def test_a_read_only_out_folder_is_one_clear_line(tmp_path):
    locked_away = tmp_path / "read-only"
    locked_away.mkdir()
    result = run_contrastkit("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(locked_away / "run"),
                             read_only=locked_away)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"contrastkit: error: cannot write into {locked_away / 'run'} (")
    assert "choose a folder you can write to" in result.stderr and result.stderr.count("\n") == 1
    assert list(locked_away.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_on_the_disk_is_one_clear_line_and_the_last_one_is_kept(tmp_path):
    folder = tmp_path / "run"
    assert subprocess.run(cli_command(folder, 1), capture_output=True).returncode == 0
    size = (folder / "checkpoints" / "last.pt").stat().st_size
    # Room for the logs and every smaller file, not for a checkpoint of this size.
    result = run_contrastkit("train", *TRAIN_ARGS, "--epochs", "2", "--out", str(tmp_path / "second"),
                             limit_file_size=size // 2)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("contrastkit: error: could not write the checkpoint of epoch 1 to ")
    assert "File too large" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not list((tmp_path / "second").rglob("*.tmp"))


# ----------------------------------------------------------------------------- killed, then resumed


def cli_command(folder, epochs):
    return [sys.executable, "-m", "contrastkit", "train", *TRAIN_ARGS, "--epochs", str(epochs), "device=cpu",
            "--out", str(folder)]


def start_training(folder, epochs, resume=False):
    command = cli_command(folder, epochs) if not resume else [
        sys.executable, "-m", "contrastkit", "train", "--out", str(folder), "--resume", "progress=false"]
    env = dict(os.environ, PYTHONPATH=str(Path(runs.__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_for_steps(folder, steps, process, timeout=120):
    deadline = time.monotonic() + timeout
    metrics = folder / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and len(read_metrics(metrics)) >= steps:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stderr.read().decode()}")
        time.sleep(0.02)
    raise AssertionError(f"no {steps} steps logged within {timeout} s")


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path):
    epochs, steps_per_epoch = 4, 22
    straight = tmp_path / "straight"
    assert start_training(straight, epochs).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    rng = random.Random(0)
    process = start_training(killed, epochs)
    for kill in range(3):
        # Somewhere inside an epoch, past the previous kill's progress.
        logged = len(read_metrics(killed / "metrics.jsonl")) if (killed / "metrics.jsonl").exists() else 0
        wait_for_steps(killed, rng.randint(logged + 2, logged + steps_per_epoch), process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = start_training(killed, epochs, resume=True)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    expected = load_checkpoint(straight / "checkpoints" / "last.pt")["method"]
    actual = load_checkpoint(killed / "checkpoints" / "last.pt")["method"]
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
    assert read_metrics(killed / "metrics.jsonl") and [r["step"] for r in read_metrics(killed / "metrics.jsonl")] \
        == list(range(1, epochs * steps_per_epoch + 1))
    assert not list(killed.rglob("*.tmp"))
