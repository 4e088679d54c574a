"""Frames collected from a gymnasium environment, and the temporal pairs that ATC trains on.

:func:`collect_rollout` steps an environment with a seeded random policy (or a given one) and keeps,
for every step t, the frame the agent saw, the action it took, the reward it got and the id of its
episode, plus the Atari RAM where the environment is an ALE game (the state variables that
AtariARI's probes read). Frames are kept one per step, (T, C, H, W) uint8, and stacked on demand
(:meth:`Rollout.stacks`), so a stack of k frames costs no k-fold memory; at the start of an
episode a stack repeats the episode's first frame, as gymnasium's ``FrameStackObservation`` with
``padding_type="reset"`` does.

:func:`temporal_pairs` draws indices (t, t + k) of the same episode: the anchors and positives of
ATC (:class:`contrastkit.losses.curl.ATCAuxiliaryLoss`); a pair never spans an episode's end.

The environment's observation is the frame when it is an image (Atari's ``obs_type="rgb"`` or
``"grayscale"``); otherwise (classic control) the frame is ``env.render()``, which needs
``render_mode="rgb_array"``. Needs ``gymnasium`` (``pip install gymnasium``; ``ale-py`` for Atari).

Example (ids and pairs only, without an environment):
    >>> episode = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> t, later = temporal_pairs(episode, k=2, count=100, generator=torch.Generator().manual_seed(0))
    >>> bool((episode[t] == episode[later]).all()), bool((later - t == 2).all())
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_count
from contrastkit.augment.frames import _crop_size
from contrastkit.errors import ConfigError, DatasetError, InputError

__all__ = ["Rollout", "collect_rollout", "split_episodes", "temporal_pairs"]


@dataclass
class Rollout:
    """The steps of a rollout, row t for step t.

    Attributes:
        frames: (T, C, H, W) uint8, the frame observed at each step.
        actions: (T,) the action taken after seeing it (int64 for discrete action spaces).
        rewards: (T,) float32, the reward that action got.
        episode: (T,) int64, the id of the step's episode, 0, 1, ... in order.
        ram: (T, 128) uint8, the Atari RAM at each step; None for other environments.
    """

    frames: Tensor
    actions: Tensor
    rewards: Tensor
    episode: Tensor
    ram: Tensor | None = None

    def __len__(self) -> int:
        return self.frames.shape[0]

    def stacks(self, index: Tensor, stack: int = 3) -> Tensor:
        """The frame stacks (len(index), C * stack, H, W) ending at the steps ``index``, oldest frame
        first; before an episode's first step its first frame is repeated.

        Args:
            index: (B,) int64 steps.
            stack: frames per stack (DQN and CURL: 3 or 4).
        """
        check_count("stack", stack, 1, "agents stack 3 or 4 frames.")
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= len(self)):
            raise InputError(f"index holds steps outside the rollout's {len(self)}; "
                             f"pass steps in [0, {len(self) - 1}].")
        # The first step of each step's episode: episode ids are sorted, so a search finds it.
        first = torch.searchsorted(self.episode, self.episode[index], right=False)
        offsets = torch.arange(1 - stack, 1)
        steps = torch.maximum(index[:, None] + offsets, first[:, None])
        picked = self.frames[steps]  # (B, stack, C, H, W)
        return picked.flatten(1, 2)


def _frame(observation: Any, env: Any, size: tuple[int, int] | None) -> Tensor:
    """The step's frame as (C, H, W) uint8: the observation if it is an image, else env.render()."""
    image = observation if isinstance(observation, np.ndarray) and observation.dtype == np.uint8 \
        and observation.ndim in (2, 3) else env.render()
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ConfigError("the environment's observations are not images and env.render() returned "
                          f"{type(image).__name__}; make it with render_mode='rgb_array'.")
    frame = torch.from_numpy(np.ascontiguousarray(image))
    frame = frame[None] if frame.ndim == 2 else frame.permute(2, 0, 1)
    if size is not None and tuple(frame.shape[1:]) != size:
        # Area averaging keeps thin objects (a pole, a ball) visible when shrinking much.
        frame = F.interpolate(frame[None].float(), size=size, mode="area")[0].round().to(torch.uint8)
    return frame


def collect_rollout(env: Any, steps: int, seed: int, *, policy: Callable[[Any], Any] | None = None,
                    size: int | tuple[int, int] | None = None) -> Rollout:
    """Step ``env`` ``steps`` times from ``env.reset(seed=seed)``, resetting at each episode's end.

    The same seed (and policy) gives the same rollout: the environment, its action space (which
    the random policy samples) and every later reset follow from it.

    Args:
        env: a gymnasium environment (image observations, or ``render_mode="rgb_array"``).
        steps: the number of steps to keep, >= 1.
        seed: seeds the environment and the random policy.
        policy: ``policy(observation) -> action``; None samples the action space uniformly.
        size: resize every frame to (H, W) (an int: square) by area averaging; None keeps it.
    """
    check_count("steps", steps, 1, "collect at least one step.")
    if size is not None:
        size = _crop_size(size)
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed)
    ale = getattr(env.unwrapped, "ale", None)
    frames, actions, rewards, episode, ram = [], [], [], [], []
    current = 0
    for _ in range(steps):
        frames.append(_frame(observation, env, size))
        if ale is not None:
            ram.append(torch.from_numpy(np.array(ale.getRAM(), dtype=np.uint8)))
        action = env.action_space.sample() if policy is None else policy(observation)
        observation, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        rewards.append(float(reward))
        episode.append(current)
        if terminated or truncated:
            observation, _ = env.reset()
            current += 1
    return Rollout(frames=torch.stack(frames), actions=torch.as_tensor(np.asarray(actions)),
                   rewards=torch.tensor(rewards, dtype=torch.float32),
                   episode=torch.tensor(episode, dtype=torch.long),
                   ram=torch.stack(ram) if ram else None)


def temporal_pairs(episode: Tensor, k: int, count: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``count`` pairs of steps (t, t + k) drawn uniformly from those in one episode.

    Args:
        episode: (T,) sorted episode ids of the steps (:attr:`Rollout.episode`).
        k: the gap in steps, >= 1 (ATC: 3 on Atari, 1 on DMControl).
        count: the number of pairs, drawn with replacement.
        generator: a CPU ``torch.Generator`` for the draws (torch's default one without it).

    Returns:
        Two (count,) int64 tensors: the steps t and t + k.
    """
    check_count("k", k, 1, "ATC uses 1 to 3 steps.")
    check_count("count", count, 1, "draw at least one pair.")
    episode = torch.as_tensor(episode)
    if episode.ndim != 1:
        raise InputError(f"episode must be a 1-dim tensor of episode ids, got shape {tuple(episode.shape)}.")
    if bool((episode[1:] < episode[:-1]).any()):
        raise InputError("episode ids must be sorted (steps in the order they were collected); pass Rollout.episode.")
    valid = torch.nonzero(episode[k:] == episode[:-k]).flatten() if episode.numel() > k else episode.new_empty(0)
    if valid.numel() == 0:
        raise InputError(f"no episode lasts more than k = {k} steps, so no pair (t, t + k) stays in one episode; "
                         "collect longer episodes or lower k.")
    t = valid[torch.randint(valid.numel(), (count,), generator=generator)]
    return t, t + k


def split_episodes(episode: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The steps of the train, val and test episodes: whole episodes shuffled by ``seed`` and split
    70 / 10 / 20 % as AtariARI splits them (the first int(0.7 n) shuffled episodes train, up to
    int(0.8 n) val), each part given at least one episode where those shares would leave it none.

    Args:
        episode: (T,) sorted episode ids 0, 1, ... (:attr:`Rollout.episode`).
        seed: seeds the shuffle.

    Example:
        >>> train, val, test = split_episodes(torch.repeat_interleave(torch.arange(10), 3), seed=0)
        >>> len(train), len(val), len(test)
        (21, 3, 6)
    """
    count = int(episode.max()) + 1 if episode.numel() else 0
    if count < 3:
        raise DatasetError(f"the rollout holds {count} episode(s); splitting whole episodes into train, val and "
                           "test needs at least 3: collect more steps.")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    val_at = max(1, int(0.7 * count))
    test_at = min(max(val_at + 1, int(0.8 * count)), count - 1)
    val_at = min(val_at, test_at - 1)
    parts = (order[:val_at], order[val_at:test_at], order[test_at:])
    return tuple(torch.nonzero(torch.isin(episode, part)).flatten() for part in parts)
