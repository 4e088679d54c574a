"""Rollout collection and temporal pairs (contrastkit.data.rollouts)."""

import numpy as np
import pytest
import torch

from contrastkit.data.rollouts import Rollout, collect_rollout, temporal_pairs
from contrastkit.errors import ConfigError, InputError

try:
    import gymnasium as gym
except ImportError:  # the pair and stack tests below need no environment
    gym = None

needs_gym = pytest.mark.skipif(gym is None, reason="rollout collection needs gymnasium (pip install gymnasium)")


class _Flicker(gym.Env if gym is not None else object):
    """Random 6 x 5 frames, episodes of 3 to 8 steps, reward = action: everything from the seed."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, image_observations=True):
        self.image_observations = image_observations
        self.action_space = gym.spaces.Discrete(3)
        shape = (6, 5, 3) if image_observations else (2,)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8 if image_observations else np.float32)
        self.render_mode = "rgb_array"

    def _observation(self):
        self.image = self.np_random.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        return self.image if self.image_observations else np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(3, 9))
        return self._observation(), {}

    def step(self, action):
        self.t += 1
        return self._observation(), float(action), self.t >= self.length, False, {}

    def render(self):
        return self.image


def _equal(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("frames", "actions", "rewards", "episode"))


@needs_gym
def test_same_seed_same_rollout():
    a = collect_rollout(_Flicker(), 60, seed=3)
    b = collect_rollout(_Flicker(), 60, seed=3)
    assert _equal(a, b) and a.ram is None
    assert not torch.equal(a.frames, collect_rollout(_Flicker(), 60, seed=4).frames)


@needs_gym
def test_rollout_layout_and_episodes():
    rollout = collect_rollout(_Flicker(), 60, seed=0)
    assert rollout.frames.shape == (60, 3, 6, 5) and rollout.frames.dtype == torch.uint8
    assert torch.equal(rollout.rewards, rollout.actions.float())
    steps = torch.diff(rollout.episode)
    assert set(steps.tolist()) <= {0, 1} and rollout.episode[0] == 0 and rollout.episode[-1] >= 6
    lengths = torch.bincount(rollout.episode)[:-1]  # the last episode may be cut short
    assert lengths.min() >= 3 and lengths.max() <= 8


@needs_gym
def test_rendered_frames_and_resize():
    rollout = collect_rollout(_Flicker(image_observations=False), 10, seed=0, size=(3, 5))
    assert rollout.frames.shape == (10, 3, 3, 5)


@needs_gym
def test_stacks_never_reach_into_the_previous_episode():
    rollout = collect_rollout(_Flicker(), 40, seed=1)
    index = torch.arange(len(rollout))
    stacks = rollout.stacks(index, stack=3).view(40, 3, 3, 6, 5)
    for t in range(40):
        for back in range(3):
            source = max(t - 2 + back, int(torch.nonzero(rollout.episode == rollout.episode[t])[0]))
            assert torch.equal(stacks[t, back], rollout.frames[source])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pairs_never_cross_episodes(k):
    lengths = torch.randint(1, 9, (20,), generator=torch.Generator().manual_seed(k))
    episode = torch.repeat_interleave(torch.arange(20), lengths)
    t, later = temporal_pairs(episode, k, count=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(later - t, torch.full_like(t, k))
    assert torch.equal(episode[t], episode[later])
    # Every valid t can be drawn: all of them turn up in 500 draws.
    assert set(t.tolist()) == {i for i in range(len(episode) - k) if episode[i] == episode[i + k]}
    again = temporal_pairs(episode, k, count=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again[0])


def test_pair_refusals():
    with pytest.raises(InputError, match="no episode lasts"):
        temporal_pairs(torch.tensor([0, 0, 1, 1, 2]), k=2, count=4)
    with pytest.raises(InputError, match="sorted"):
        temporal_pairs(torch.tensor([0, 1, 0]), k=1, count=4)
    with pytest.raises(ConfigError, match="k"):
        temporal_pairs(torch.tensor([0, 0]), k=0, count=4)
    with pytest.raises(InputError, match="outside"):
        Rollout(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2), torch.zeros(2),
                torch.zeros(2, dtype=torch.long)).stacks(torch.tensor([2]))


@needs_gym
def test_atari_rollout_is_reproducible_with_ram():
    ale_py = pytest.importorskip("ale_py", reason="Atari rollouts need ale-py (pip install ale-py)")
    gym.register_envs(ale_py)

    def collect():
        env = gym.make("ALE/Pong-v5", obs_type="grayscale")
        try:
            return collect_rollout(env, 40, seed=5, size=84)
        finally:
            env.close()

    a, b = collect(), collect()
    assert _equal(a, b) and torch.equal(a.ram, b.ram)
    assert a.frames.shape == (40, 1, 84, 84) and a.ram.shape == (40, 128)
