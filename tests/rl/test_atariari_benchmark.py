"""benchmarks/atariari.py: ST-DIM pretraining saved to a checkpoint resumes exactly where it
stopped, refuses a checkpoint of other settings, and the paper's table is whole. No real run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from contrastkit.models.atari import AtariEncoder

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "atariari.py"
spec = importlib.util.spec_from_file_location("atariari_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)

SETTINGS = {"game": "toy", "frames": 24, "seed": 0, "batch": 4, "lr": 1e-3}


def _data():
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (24, 1, 210, 160), dtype=torch.uint8, generator=generator)
    return frames, torch.arange(24) // 8  # three episodes of 8 frames


def _encoder():
    torch.manual_seed(0)
    return AtariEncoder()


def test_resumed_pretraining_equals_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    frames, episode = _data()
    whole = _encoder()
    losses = bench.pretrain_stdim(whole, frames, episode, 4, 4, 1e-3, 0)
    split = _encoder()
    checkpoint = str(tmp_path / "stdim.pt")
    bench.pretrain_stdim(split, frames, episode, 2, 4, 1e-3, 0, checkpoint, SETTINGS)
    resumed = _encoder()  # a fresh process: only the checkpoint carries the first two updates
    resumed_losses = bench.pretrain_stdim(resumed, frames, episode, 4, 4, 1e-3, 0, checkpoint, SETTINGS)
    assert resumed_losses == losses
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_of_other_settings_or_further_along_is_refused(tmp_path):
    torch.set_num_threads(1)
    frames, episode = _data()
    checkpoint = str(tmp_path / "stdim.pt")
    bench.pretrain_stdim(_encoder(), frames, episode, 2, 4, 1e-3, 0, checkpoint, SETTINGS)
    with pytest.raises(SystemExit, match="other settings"):
        bench.pretrain_stdim(_encoder(), frames, episode, 3, 4, 1e-3, 0, checkpoint, {**SETTINGS, "lr": 3e-4})
    with pytest.raises(SystemExit, match="already at update 2"):
        bench.pretrain_stdim(_encoder(), frames, episode, 1, 4, 1e-3, 0, checkpoint, SETTINGS)


def test_paper_table_has_both_columns_for_all_22_games():
    for column in ("random_cnn", "st_dim"):
        games = {g for g in bench.PAPER[column] if g != "mean"}
        assert len(games) == 22
        # The table's MEAN row is the mean of its 22 rounded figures, to its rounding.
        mean = sum(bench.PAPER[column][g] for g in games) / 22
        assert abs(mean - bench.PAPER[column]["mean"]) <= 0.006
