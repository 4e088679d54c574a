"""benchmarks/atari100k.py: the replay's stacks stay inside episodes, its n-step returns match a
float64 loop, and a few steps of the agent with CURL's loss run and are reproducible. No real run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "atari100k.py"
spec = importlib.util.spec_from_file_location("atari100k", SCRIPT)
atari100k = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = atari100k
spec.loader.exec_module(atari100k)

try:
    import ale_py
    import gymnasium
except ImportError:
    ale_py = gymnasium = None

needs_ale = pytest.mark.skipif(ale_py is None or gymnasium is None,
                               reason="the agent plays Atari: pip install gymnasium ale-py")


def _replay(ends: list[bool], starts: list[bool], rewards: list[float], n_step: int = 3, gamma: float = 0.9):
    replay = atari100k.FrameReplay(len(ends), stack=4, n_step=n_step, gamma=gamma, frame_shape=(2, 2))
    for i, (end, start, reward) in enumerate(zip(ends, starts, rewards)):
        replay.add(np.full((2, 2), i, dtype=np.uint8), i % 3, reward, end, start)
    return replay


def test_stacks_repeat_the_episode_first_frame_and_never_cross_into_the_previous_episode():
    starts = [True, False, False, False, False, True, False, False]
    replay = _replay([False] * 4 + [True] + [False] * 3, starts, [0.0] * 8)
    ids = replay.stacks(torch.arange(8))[:, :, 0, 0].tolist()  # each frame holds its step number
    assert ids[0] == [0, 0, 0, 0]
    assert ids[2] == [0, 0, 1, 2]
    assert ids[4] == [1, 2, 3, 4]
    assert ids[5] == [5, 5, 5, 5]  # step 5 begins an episode: nothing of steps 0-4
    assert ids[7] == [5, 5, 6, 7]


def test_n_step_returns_and_discounts_match_a_float64_loop():
    rng = np.random.default_rng(0)
    size, n_step, gamma = 40, 4, 0.97
    ends = (rng.random(size) < 0.2).tolist()
    starts = [i == 0 or ends[i - 1] for i in range(size)]
    rewards = rng.integers(-1, 2, size).astype(float).tolist()
    replay = _replay(ends, starts, rewards, n_step=n_step, gamma=gamma)
    index = torch.arange(size - n_step)
    obs, actions, returns, discount, next_obs = replay.transitions(index)
    for i in index.tolist():
        expected, bootstrap = 0.0, gamma ** n_step
        for k in range(n_step):
            expected += gamma ** k * rewards[i + k]
            if ends[i + k]:
                bootstrap = 0.0
                break
        assert math.isclose(returns[i].item(), expected, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(discount[i].item(), bootstrap, rel_tol=1e-6, abs_tol=1e-9)
    assert torch.equal(next_obs, replay.stacks(index + n_step)) and torch.equal(obs, replay.stacks(index))
    assert actions.tolist() == [i % 3 for i in index.tolist()]


def test_a_full_replay_refuses_more_steps():
    replay = _replay([False], [True], [0.0])
    with pytest.raises(RuntimeError, match="full"):
        replay.add(np.zeros((2, 2), dtype=np.uint8), 0, 0.0, False, False)


@needs_ale
def test_agent_with_curl_trains_a_few_steps_reproducibly():
    torch.set_num_threads(1)
    kwargs = dict(steps=90, learning_starts=60, eval_episodes=1, eval_max_steps=20)
    first = atari100k.train_agent("Pong", "curl", 3, **kwargs)
    again = atari100k.train_agent("Pong", "curl", 3, **kwargs)
    assert first["td_loss_sampled"] and all(math.isfinite(v) for v in first["td_loss_sampled"])
    assert first["curl_loss_sampled"] and all(math.isfinite(v) for v in first["curl_loss_sampled"])
    assert first["td_loss_sampled"] == again["td_loss_sampled"]
    assert first["curl_loss_sampled"] == again["curl_loss_sampled"]


@needs_ale
def test_unknown_game_is_named():
    with pytest.raises(SystemExit, match="no Atari game 'Pongg'"):
        atari100k.AtariGame("Pongg", 0)
