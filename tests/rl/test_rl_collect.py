"""Rollouts collected into a folder (contrastkit.data.collect, ``contrastkit collect``): chunked,
seeded per chunk, resumable, joined back with episode ids that never span chunks."""

import json

import pytest
import torch

from contrastkit.data.collect import collect_to_folder, load_rollouts, make_env
from contrastkit.data.rollouts import temporal_pairs
from contrastkit.errors import ConfigError, DatasetError

gym = pytest.importorskip("gymnasium", reason="rollout collection needs gymnasium (pip install gymnasium)")
from tests.rl.test_rl_rollouts import _Flicker  # noqa: E402


def _equal(a, b):
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("frames", "actions", "rewards", "episode"))


def test_chunks_join_into_one_rollout_reproducible_from_the_seed(tmp_path):
    collect_to_folder("flicker", tmp_path / "a", 50, seed=1, chunk_steps=20, env_factory=_Flicker)
    collect_to_folder("flicker", tmp_path / "b", 50, seed=1, chunk_steps=20, env_factory=_Flicker)
    a, b = load_rollouts(tmp_path / "a"), load_rollouts(tmp_path / "b")
    assert len(a) == 50 and _equal(a, b) and a.ram is None
    assert sorted(p.name for p in (tmp_path / "a").glob("chunk-*")) == [f"chunk-0000{i}.safetensors" for i in range(3)]
    # Episode ids run on across chunks, sorted, and each chunk starts a new episode.
    assert bool((a.episode[1:] >= a.episode[:-1]).all()) and a.episode[20] == a.episode[19] + 1
    t, later = temporal_pairs(a.episode, k=2, count=200, generator=torch.Generator().manual_seed(0))
    assert bool((a.episode[t] == a.episode[later]).all())
    other = collect_to_folder("flicker", tmp_path / "c", 50, seed=2, chunk_steps=20, env_factory=_Flicker)
    assert not torch.equal(load_rollouts(other).frames, a.frames)


def test_an_interrupted_collection_is_finished_by_running_it_again(tmp_path):
    collect_to_folder("flicker", tmp_path / "whole", 50, seed=0, chunk_steps=20, env_factory=_Flicker)
    collect_to_folder("flicker", tmp_path / "cut", 50, seed=0, chunk_steps=20, env_factory=_Flicker)
    (tmp_path / "cut" / "chunk-00001.safetensors").unlink()
    with pytest.raises(DatasetError, match="lacks 1 of its 3 chunks"):
        load_rollouts(tmp_path / "cut")
    before = (tmp_path / "cut" / "chunk-00000.safetensors").stat().st_mtime_ns
    collect_to_folder("flicker", tmp_path / "cut", 50, seed=0, chunk_steps=20, env_factory=_Flicker)
    assert (tmp_path / "cut" / "chunk-00000.safetensors").stat().st_mtime_ns == before  # not rewritten
    assert _equal(load_rollouts(tmp_path / "cut"), load_rollouts(tmp_path / "whole"))


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    collect_to_folder("flicker", tmp_path, 30, seed=0, chunk_steps=20, env_factory=_Flicker)
    with pytest.raises(ConfigError, match=r"seed 0 -> 1"):
        collect_to_folder("flicker", tmp_path, 30, seed=1, chunk_steps=20, env_factory=_Flicker)
    assert json.loads((tmp_path / "collection.json").read_text())["seed"] == 0
    with pytest.raises(DatasetError, match="contrastkit collect"):
        load_rollouts(tmp_path / "nothing")


def test_the_command_collects_a_classic_control_task_rendered_to_frames(tmp_path, run_cli, capsys):
    assert run_cli("collect", "CartPole-v1", "--steps", "30", "--chunk-steps", "16", "--size", "24",
                   "--out", str(tmp_path / "cartpole")) == 0
    rollout = load_rollouts(tmp_path / "cartpole")
    assert rollout.frames.shape == (30, 3, 24, 24) and rollout.frames.dtype == torch.uint8
    assert "collected 30 steps" in capsys.readouterr().out
    assert run_cli("collect", "NoSuchEnv-v0", "--steps", "5", "--out", str(tmp_path / "x")) == 2
    assert "cannot make environment 'NoSuchEnv-v0'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="steps must be"):
        collect_to_folder("CartPole-v1", tmp_path / "y", 0)


def test_atari_games_come_with_their_ram(tmp_path):
    pytest.importorskip("ale_py", reason="Atari needs ale-py")
    collect_to_folder("ALE/Pong-v5", tmp_path, 12, chunk_steps=8, env_factory=lambda: make_env("ALE/Pong-v5"))
    rollout = load_rollouts(tmp_path)
    assert rollout.ram.shape == (12, 128) and rollout.frames.shape == (12, 3, 210, 160)
