"""Frames as a registered unit: collected rollouts split by episodes, ATC's and CURL's views, training
through contrastkit.runs and the CLI, and AtariARI's probes of an Atari collection."""

import json

import numpy as np
import pytest
import torch

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.config import Config
from contrastkit.data.collect import collect_to_folder, load_rollouts
from contrastkit.data.rollouts import Rollout, split_episodes
from contrastkit.errors import ConfigError, DatasetError
from contrastkit.modalities.frames import FrameViews, anchors

gym = pytest.importorskip("gymnasium", reason="frames are collected from gymnasium environments")


class _Noise(gym.Env):
    """84 x 84 grey noise frames, episodes of 6 to 14 steps: an environment with nothing to learn."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self):
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        self.render_mode = "rgb_array"

    def _frame(self):
        return self.np_random.integers(0, 256, (84, 84), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(6, 15))
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), 0.0, self.t >= self.length, False, {}


def test_episodes_are_split_whole_and_seeded():
    episode = torch.repeat_interleave(torch.arange(10), torch.arange(3, 13))
    train, val, test = split_episodes(episode, seed=0)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(episode.numel()))
    parts = [set(episode[part].tolist()) for part in (train, val, test)]
    assert (len(parts[0]), len(parts[1]), len(parts[2])) == (7, 1, 2)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert all(torch.equal(a, b) for a, b in zip(split_episodes(episode, 0), (train, val, test)))
    assert any(not torch.equal(a, b) for a, b in zip(split_episodes(episode, 1), (train, val, test)))
    with pytest.raises(DatasetError, match="at least 3"):
        split_episodes(torch.tensor([0, 0, 1, 1]), seed=0)


def test_views_pair_stacks_gap_steps_apart_within_one_episode():
    episode = torch.tensor([0] * 5 + [1] * 4)
    frames = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 1, 3, 3).contiguous()
    rollout = Rollout(frames, torch.zeros(9), torch.zeros(9), episode)
    starts = anchors(episode, torch.arange(9), gap=2)
    assert starts.tolist() == [0, 1, 2, 5, 6]
    first, later = FrameViews(rollout, stack=2, gap=2, shift=0)(starts, torch.Generator().manual_seed(0))
    # Each view is a stack of 2 frames, the older first, an episode's first frame repeated before it.
    assert first[:, :, 0, 0].tolist() == [[0, 0], [0, 1], [1, 2], [5, 5], [5, 6]]
    assert later[:, :, 0, 0].tolist() == [[1, 2], [2, 3], [3, 4], [6, 7], [7, 8]]
    same = FrameViews(rollout, stack=1, gap=0, shift=0)(starts)
    assert torch.equal(same[0], same[1])


@pytest.mark.parametrize("method", ["atc", "curl", "stdim"])
def test_atc_curl_and_stdim_train_through_runs_and_reload(tmp_path, method):
    collect_to_folder("noise", tmp_path / "rollouts", 240, chunk_steps=120, env_factory=_Noise)
    config = config_module.update(Config(dataset=f"rollouts:{tmp_path / 'rollouts'}", method=method, epochs=1,
                                         batch_size=32, device="cpu", out=str(tmp_path / "run"), progress=False,
                                         plot=False), {"frames.stack": 2})
    run_dir = runs.train(config)
    assert config_module.load_yaml(run_dir / "config.yaml")["modality"] == "frames"
    run = runs.Run.load(run_dir)
    assert run.method.backbone.in_channels == 2 and run.config.backbone == "atari_cnn"
    features, _ = run.features("test")
    assert features.shape == (len(run.splits.test), 256) and torch.isfinite(features).all()
    if method != "stdim":
        # The momentum target moved towards the trained encoder but is not it.
        target = run.method.auxiliary.target_encoder if method == "atc" else run.method.auxiliary.key_encoder
        assert not torch.equal(next(target.parameters()), next(run.method.backbone.parameters()))


def test_the_cli_refuses_what_frames_cannot_take(tmp_path, run_cli, capsys):
    collect_to_folder("noise", tmp_path / "rollouts", 60, chunk_steps=60, env_factory=_Noise)
    dataset = f"rollouts:{tmp_path / 'rollouts'}"
    assert run_cli("train", "--dataset", dataset, "--method", "simclr", "--out", str(tmp_path / "a")) == 2
    assert "simclr" in capsys.readouterr().err
    assert run_cli("train", "--dataset", dataset, "--method", "atc", "--out", str(tmp_path / "b"),
                   "backbone=resnet18") == 2
    assert "atari_cnn" in capsys.readouterr().err
    assert run_cli("train", "--dataset", dataset, "--method", "atc", "--out", str(tmp_path / "c"),
                   "frames.stack=0") == 2
    assert "frames.stack must be an integer >= 1" in capsys.readouterr().err
    assert run_cli("train", "--dataset", f"rollouts:{tmp_path / 'none'}", "--method", "atc",
                   "--out", str(tmp_path / "d")) == 2
    assert "contrastkit collect" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        config_module.resolve(Config(dataset=dataset, method="atc", modality_options={"frames": {"stak": 2}}))


def test_an_atari_collection_is_scored_by_atariari_probes_beside_a_random_cnn(tmp_path, capsys):
    pytest.importorskip("ale_py", reason="Atari needs ale-py")
    collect_to_folder("ALE/Breakout-v5", tmp_path / "breakout", 400, size=84, seed=0)
    assert load_rollouts(tmp_path / "breakout").ram.shape == (400, 128)
    config = config_module.update(Config(dataset=f"rollouts:{tmp_path / 'breakout'}", method="atc", epochs=1,
                                         batch_size=32, device="cpu", out=str(tmp_path / "run"), progress=False,
                                         plot=False), {"frames.stack": 1, "frames.probe_epochs": 2})
    summary = json.loads((runs.train(config) / "summary.json").read_text())
    assert "AtariARI probes: breakout" in capsys.readouterr().out
    for prefix in ("", "raw_"):
        assert 0 <= summary[f"{prefix}state_f1"] <= 1 and 0 <= summary[f"{prefix}state_f1_by_category"] <= 1
        assert set(summary[f"{prefix}state_f1_per_variable"]) == set(summary["state_f1_per_variable"])
    assert "player_x" in summary["state_f1_per_variable"]
