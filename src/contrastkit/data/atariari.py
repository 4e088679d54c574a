"""AtariARI: the Atari RAM bytes that hold each game's state variables, and episodes collected for
probing them, as in Anand et al., "Unsupervised State Representation Learning in Atari" (NeurIPS 2019).

:data:`RAM_ANNOTATIONS` maps a game to its state variables and the RAM address (0..127) of each;
a variable spread over several bytes (the 15 asteroid x positions, a three-byte score) becomes one
variable per byte, ``name_0``, ``name_1``, ... as AtariARI numbers them. :func:`ram_labels` turns
a (T, 128) uint8 RAM (:attr:`contrastkit.data.rollouts.Rollout.ram`) into one (T,) int64 label per
variable, each in 0..255: the classes AtariARI's linear probes predict.

:func:`collect_atariari_episodes` collects frames the way the benchmark does:

- the game without sticky actions (the ``NoFrameskip-v4`` games), DQN-style preprocessing: up to
  30 no-ops at reset, each action repeated for 4 frames with the last two frames max-pooled, an
  episode ending at each lost life, FIRE pressed after a reset in games that need it;
- full-size 210 x 160 grayscale frames, one frame per step (no stack): the RAM labels describe
  the full screen, and the benchmark warns that downsampled frames make them inaccurate;
- a uniformly random agent over every action but NOOP (action 0);
- episodes of at most 64 steps dropped, variables whose label entropy is under 0.6 nats dropped
  (a near-constant variable scores a meaningless F1), and the remaining episodes shuffled by the
  seed and split 70 / 10 / 20 % into train / val / test; test frames identical to a train or val
  frame are removed (so the test measures generalisation, not recall of seen screens). We also
  remove val frames identical to a train frame, so no two splits share a frame.

The label of step t is the RAM when frame t is on screen, as AtariARI's wrapper reads it.
Needs ``gymnasium`` and ``ale-py`` (``pip install gymnasium ale-py``; the ROMs ship in ale-py).

Example (labels from a hand-made RAM, without an environment):
    >>> ram = torch.zeros(2, 128, dtype=torch.uint8); ram[:, 51] = torch.tensor([40, 41])
    >>> ram_labels("pong", ram)["player_y"]
    tensor([40, 41])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit._checks import check_count, check_ndim, check_positive
from contrastkit.data.rollouts import Rollout, collect_rollout, split_episodes
from contrastkit.errors import ConfigError, InputError

__all__ = ["ATARIARI_ENV_IDS", "AtariARIEpisodes", "MIN_LABEL_ENTROPY", "RAM_ANNOTATIONS", "annotated_game",
           "annotated_games", "collect_atariari_episodes", "label_entropy", "make_atariari_env", "ram_labels",
           "state_variables"]

# AtariARI leaves out the variables whose label entropy over the frames is under this (nats): a
# near-constant variable scores a meaningless F1.
MIN_LABEL_ENTROPY = 0.6

# Game -> {variable: RAM address, or a sequence of addresses (one variable per byte)}; the
# addresses are AtariARI's (atariari/benchmark/ram_annotations.py).
_RAW: dict[str, dict[str, int | tuple[int, ...]]] = {
    "asteroids": {
        "enemy_asteroids_y": (3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19),
        "enemy_asteroids_x": (21, 22, 23, 24, 25, 26, 27, 30, 31, 32, 33, 34, 35, 36, 37),
        "player_x": 73, "player_y": 74, "num_lives_direction": 60, "player_score_high": 61,
        "player_score_low": 62, "player_missile_x1": 83, "player_missile_x2": 84, "player_missile_y1": 86,
        "player_missile_y2": 87, "player_missile1_direction": 89, "player_missile2_direction": 90},
    "battlezone": {
        "blue_tank_facing_direction": 46, "blue_tank_size_y": 47, "blue_tank_x": 48,
        "blue_tank2_facing_direction": 52, "blue_tank2_size_y": 53, "blue_tank2_x": 54, "num_lives": 58,
        "missile_y": 105, "compass_needles_angle": 84, "angle_of_tank": 4, "left_tread_position": 59,
        "right_tread_position": 60, "crosshairs_color": 108, "score": 29},
    "berzerk": {
        "player_x": 19, "player_y": 11, "player_direction": 14, "player_missile_x": 22, "player_missile_y": 23,
        "player_missile_direction": 21, "robot_missile_direction": 26, "robot_missile_x": 29,
        "robot_missile_y": 30, "num_lives": 90, "robots_killed_count": 91, "game_level": 92,
        "enemy_evilOtto_x": 46, "enemy_evilOtto_y": 89, "enemy_robots_x": tuple(range(65, 73)),
        "enemy_robots_y": tuple(range(56, 65)), "player_score": tuple(range(93, 96))},
    "bowling": {
        "ball_x": 30, "ball_y": 41, "player_x": 29, "player_y": 40, "frame_number_display": 36,
        "pin_existence": tuple(range(57, 67)), "score": 33},
    "boxing": {
        "player_x": 32, "player_y": 34, "enemy_x": 33, "enemy_y": 35, "enemy_score": 19, "clock": 17,
        "player_score": 18},
    "breakout": {
        "ball_x": 99, "ball_y": 101, "player_x": 72, "blocks_hit_count": 77, "block_bit_map": tuple(range(30)),
        "score": 84},
    "demonattack": {
        "level": 62, "player_x": 22, "enemy_x1": 17, "enemy_x2": 18, "enemy_x3": 19, "missile_y": 21,
        "enemy_y1": 69, "enemy_y2": 70, "enemy_y3": 71, "num_lives": 114},
    "freeway": {"player_y": 14, "score": 103, "enemy_car_x": tuple(range(108, 118))},
    "frostbite": {
        "top_row_iceflow_x": 34, "second_row_iceflow_x": 33, "third_row_iceflow_x": 32,
        "fourth_row_iceflow_x": 31, "enemy_bear_x": 104, "num_lives": 76, "igloo_blocks_count": 77,
        "enemy_x": tuple(range(84, 88)), "player_x": 102, "player_y": 100, "player_direction": 4,
        "score": (72, 73, 74)},
    "hero": {
        "player_x": 27, "player_y": 31, "power_meter": 43, "room_number": 28, "level_number": 117,
        "dynamite_count": 50, "score": (56, 57)},
    "montezumarevenge": {
        "room_number": 3, "player_x": 42, "player_y": 43, "player_direction": 52, "enemy_skull_x": 47,
        "enemy_skull_y": 46, "key_monster_x": 44, "key_monster_y": 45, "level": 57, "num_lives": 58,
        "items_in_inventory_count": 61, "room_state": 62, "score_0": 19, "score_1": 20, "score_2": 21},
    "mspacman": {
        "enemy_sue_x": 6, "enemy_inky_x": 7, "enemy_pinky_x": 8, "enemy_blinky_x": 9, "enemy_sue_y": 12,
        "enemy_inky_y": 13, "enemy_pinky_y": 14, "enemy_blinky_y": 15, "player_x": 10, "player_y": 16,
        "fruit_x": 11, "fruit_y": 17, "ghosts_count": 19, "player_direction": 56, "dots_eaten_count": 119,
        "player_score": 120, "num_lives": 123},
    "pitfall": {
        "player_x": 97, "player_y": 105, "enemy_logs_x": 98, "enemy_scorpion_x": 99, "bottom_of_rope_y": 18,
        "clock_sec": 89, "clock_min": 88},
    "pong": {
        "player_y": 51, "player_x": 46, "enemy_y": 50, "enemy_x": 45, "ball_x": 49, "ball_y": 54,
        "enemy_score": 13, "player_score": 14},
    "privateeye": {
        "player_x": 63, "player_y": 86, "room_number": 92, "clock": (67, 69), "player_direction": 58,
        "score": (73, 74), "dove_x": 48, "dove_y": 39},
    "qbert": {
        "player_x": 43, "player_y": 67, "player_column": 35, "red_enemy_column": 69, "green_enemy_column": 105,
        "score": (89, 90, 91),
        # The cube tops, pyramid row by row (1, 2, ..., 6 cubes).
        "tile_color": (21, 52, 54, 83, 85, 87, 98, 100, 102, 104, 1, 3, 5, 7, 9, 32, 34, 36, 38, 40, 42)},
    "riverraid": {"player_x": 51, "missile_x": 117, "missile_y": 50, "fuel_meter_high": 55, "fuel_meter_low": 56},
    "seaquest": {
        "enemy_obstacle_x": tuple(range(30, 34)), "player_x": 70, "player_y": 97,
        "diver_or_enemy_missile_x": tuple(range(71, 75)), "player_direction": 86, "player_missile_direction": 87,
        "oxygen_meter_value": 102, "player_missile_x": 103, "score": (57, 58), "num_lives": 59,
        "divers_collected_count": 62},
    "skiing": {
        "player_x": 25, "clock_m": 104, "clock_s": 105, "clock_ms": 106, "score": 107,
        "object_y": tuple(range(87, 94))},
    "spaceinvaders": {
        "invaders_left_count": 17, "player_score": 104, "num_lives": 73, "player_x": 28, "enemies_x": 26,
        "missiles_y": 9, "enemies_y": 24},
    "tennis": {
        "enemy_x": 27, "enemy_y": 25, "enemy_score": 70, "ball_x": 16, "ball_y": 17, "player_x": 26,
        "player_y": 24, "player_score": 69},
    "venture": {
        "sprite0_y": 20, "sprite1_y": 21, "sprite2_y": 22, "sprite3_y": 23, "sprite4_y": 24, "sprite5_y": 25,
        "sprite0_x": 79, "sprite1_x": 80, "sprite2_x": 81, "sprite3_x": 82, "sprite4_x": 83, "sprite5_x": 84,
        "player_x": 85, "player_y": 26, "current_room": 90, "num_lives": 70, "score_1_2": 71, "score_3_4": 72},
    "videopinball": {
        "ball_x": 67, "ball_y": 68, "player_left_paddle_y": 98, "player_right_paddle_y": 102, "score_1": 48,
        "score_2": 50},
    "yarsrevenge": {
        "player_x": 32, "player_y": 31, "player_missile_x": 38, "player_missile_y": 37, "enemy_x": 43,
        "enemy_y": 42, "enemy_missile_x": 47, "enemy_missile_y": 46},
}


def _expand(variables: dict[str, int | tuple[int, ...]]) -> dict[str, int]:
    """One entry per RAM byte: a multi-byte variable ``v`` becomes ``v_0``, ``v_1``, ... (AtariARI's names)."""
    flat: dict[str, int] = {}
    for name, address in variables.items():
        if isinstance(address, tuple):
            flat.update({f"{name}_{i}": a for i, a in enumerate(address)})
        else:
            flat[name] = address
    return flat


RAM_ANNOTATIONS: dict[str, dict[str, int]] = {game: _expand(v) for game, v in _RAW.items()}
"""Game (lower case, no spaces: ``"mspacman"``) -> {state variable: RAM address 0..127}."""

# The ale-py names of the annotated games (AtariARI used their ``NoFrameskip-v4`` versions).
ATARIARI_ENV_IDS: dict[str, str] = {
    "asteroids": "Asteroids", "battlezone": "BattleZone", "berzerk": "Berzerk", "bowling": "Bowling",
    "boxing": "Boxing", "breakout": "Breakout", "demonattack": "DemonAttack", "freeway": "Freeway",
    "frostbite": "Frostbite", "hero": "Hero", "montezumarevenge": "MontezumaRevenge", "mspacman": "MsPacman",
    "pitfall": "Pitfall", "pong": "Pong", "privateeye": "PrivateEye", "qbert": "Qbert", "riverraid": "Riverraid",
    "seaquest": "Seaquest", "skiing": "Skiing", "spaceinvaders": "SpaceInvaders", "tennis": "Tennis",
    "venture": "Venture", "videopinball": "VideoPinball", "yarsrevenge": "YarsRevenge",
}


def annotated_games() -> list[str]:
    """The games :data:`RAM_ANNOTATIONS` covers, sorted."""
    return sorted(RAM_ANNOTATIONS)


def annotated_game(game: str) -> str | None:
    """``game`` as a key of :data:`RAM_ANNOTATIONS`, or None where AtariARI annotates no such game:
    "MsPacman", "ms_pacman" and "ALE/MsPacman-v5" all give "mspacman".

    Args:
        game: a game's name or a gymnasium id.
    """
    if not isinstance(game, str):
        raise ConfigError(f"game must be a string such as 'pong', got {type(game).__name__}.")
    key = game.split("/")[-1].split("-")[0]
    for suffix in ("NoFrameskip", "Deterministic"):
        key = key.replace(suffix, "")
    key = key.lower().replace("_", "").replace(" ", "")
    return key if key in RAM_ANNOTATIONS else None


def _game_key(game: str) -> str:
    """:func:`annotated_game`, refusing a game AtariARI does not annotate."""
    key = annotated_game(game)
    if key is None:
        raise ConfigError(f"no AtariARI RAM annotation for game {game!r}; annotated games: "
                          f"{', '.join(annotated_games())}.")
    return key


def state_variables(game: str) -> dict[str, int]:
    """The state variables of ``game`` and their RAM addresses (a copy of its :data:`RAM_ANNOTATIONS` entry)."""
    return dict(RAM_ANNOTATIONS[_game_key(game)])


def ram_labels(game: str, ram: Tensor) -> dict[str, Tensor]:
    """The AtariARI labels of every state variable of ``game``, read from the RAM.

    Args:
        game: an annotated game (:func:`annotated_games`), e.g. ``"pong"`` or ``"ALE/Pong-v5"``.
        ram: (T, 128) uint8 RAM, one row per step (:attr:`Rollout.ram`); a single (128,) row is taken as T = 1.

    Returns:
        {variable: (T,) int64 tensor of values 0..255}, in the annotation's order.
    """
    key = _game_key(game)
    ram = torch.as_tensor(ram)
    if ram.ndim == 1:
        ram = ram[None]
    check_ndim("ram", ram, 2, "(steps, 128)")
    if ram.shape[1] != 128:
        raise InputError(f"ram must have 128 bytes per row (the Atari 2600's RAM), got {ram.shape[1]}.")
    if ram.dtype != torch.uint8:
        # Another integer type would hold values the RAM cannot (negative, or over 255).
        raise InputError(f"ram must be uint8 (Atari RAM bytes), got {ram.dtype}; pass Rollout.ram or .to(torch.uint8).")
    return {name: ram[:, address].long() for name, address in RAM_ANNOTATIONS[key].items()}


def _preprocessing_wrapper(gym: Any) -> type:
    """The DQN preprocessing AtariARI applies (baselines' atari_wrappers) over an ALE env stepped one frame at
    a time: no-op starts, action repeat with max-pooling, life loss as episode end, FIRE after reset. Built
    on call, since gymnasium is an optional import."""

    class AtariARIPreprocessing(gym.Wrapper):
        def __init__(self, env: Any, noop_max: int = 30, skip: int = 4):
            super().__init__(env)
            self.noop_max, self.skip = noop_max, skip
            self.ale = env.unwrapped.ale
            meanings = env.unwrapped.get_action_meanings()
            self.fire = len(meanings) >= 3 and meanings[1] == "FIRE"
            self.real_done = True
            self.lives = 0

        def _repeat(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
            total, frames = 0.0, []
            terminated = truncated = False
            info: dict = {}
            for i in range(self.skip):
                observation, reward, terminated, truncated, info = self.env.step(action)
                total += float(reward)
                if i >= self.skip - 2:
                    frames.append(observation)
                if terminated or truncated:
                    break
            # Sprites flicker on alternate frames; the max of the last two shows them all.
            observation = np.maximum(frames[-2], frames[-1]) if len(frames) == 2 else observation
            return observation, total, terminated, truncated, info

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
            observation, reward, terminated, truncated, info = self._repeat(action)
            self.real_done = terminated or truncated
            lives = self.ale.lives()
            if 0 < lives < self.lives:
                terminated = True  # a lost life ends the episode (the game goes on)
            self.lives = lives
            return observation, reward, terminated, truncated, info

        def _fire(self, observation: Any, info: dict) -> tuple[Any, dict]:
            for action in (1, 2):
                observation, _, terminated, truncated, info = self._repeat(action)
                if terminated or truncated:
                    observation, info = self.env.reset()
            return observation, info

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
            if self.real_done or seed is not None:
                observation, info = self.env.reset(seed=seed, options=options)
                for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
                    observation, _, terminated, truncated, info = self.env.step(0)
                    if terminated or truncated:
                        observation, info = self.env.reset()
            else:
                # After a lost life: one no-op and the game continues from where it was.
                observation, _, _, _, info = self._repeat(0)
            if self.fire:
                observation, info = self._fire(observation, info)
            self.real_done = False
            self.lives = self.ale.lives()
            return observation, info

    return AtariARIPreprocessing


def make_atariari_env(game: str) -> Any:
    """The environment AtariARI collects ``game`` from: no sticky actions, 210 x 160 grayscale frames,
    DQN preprocessing (module docstring). Needs gymnasium and ale-py."""
    key = _game_key(game)
    try:
        import ale_py
        import gymnasium as gym
    except ImportError as error:
        raise ConfigError("AtariARI episodes need gymnasium and ale-py: pip install gymnasium ale-py.") from error
    gym.register_envs(ale_py)
    # frameskip=1 here: the wrapper repeats actions itself so it can max-pool the last two frames.
    env = gym.make(f"ALE/{ATARIARI_ENV_IDS[key]}-v5", obs_type="grayscale", frameskip=1,
                   repeat_action_probability=0.0, full_action_space=False)
    return _preprocessing_wrapper(gym)(env)


@dataclass
class AtariARIEpisodes:
    """Frames of one game with their state labels and AtariARI's train / val / test split.

    Attributes:
        game: the game's key in :data:`RAM_ANNOTATIONS`.
        frames: (N, 1, 210, 160) uint8 frames of the kept episodes, in collection order.
        labels: {variable: (N,) int64 label 0..255}, for the variables kept (high enough entropy).
        episode: (N,) int64 sorted episode ids, 0, 1, ... (usable with :func:`temporal_pairs`).
        train, val, test: int64 row indices of each split, whole episodes, no frame shared by two splits.
        dropped: {variable: entropy in nats} of the variables dropped for entropy under the threshold.
        steps: the number of environment steps collected (frames before any were dropped).
    """

    game: str
    frames: Tensor
    labels: dict[str, Tensor]
    episode: Tensor
    train: Tensor
    val: Tensor
    test: Tensor
    dropped: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def split(self, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The frames and labels of the split ``name`` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split must be 'train', 'val' or 'test', got {name!r}.")
        index = getattr(self, name)
        return self.frames[index], {k: v[index] for k, v in self.labels.items()}


def label_entropy(values: Tensor) -> float:
    """The entropy in nats of the empirical distribution of ``values`` (a variable's labels)."""
    counts = torch.unique(values, return_counts=True)[1].double()
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def _drop_seen(index: Tensor, frames: Tensor, seen: set[bytes]) -> Tensor:
    """The rows of ``index`` whose frame bytes are not in ``seen``."""
    keep = [int(i) for i in index if frames[int(i)].numpy().tobytes() not in seen]
    return torch.tensor(keep, dtype=torch.long)


def collect_atariari_episodes(game: str, steps: int, seed: int, *, min_episode_length: int = 64,
                              entropy_threshold: float = MIN_LABEL_ENTROPY, env: Any = None) -> AtariARIEpisodes:
    """Collect ``steps`` random-agent steps of ``game`` and split them as AtariARI's probe benchmark does.

    The same seed gives the same frames, labels and splits (the environment, the agent and the
    episode shuffle all follow from it). AtariARI collects 50,000 steps per game for probing
    (100,000 more to pretrain the encoder).

    Args:
        game: an annotated game (:func:`annotated_games`).
        steps: environment steps to collect; enough for at least 10 episodes longer than
            ``min_episode_length`` that the 70 / 10 / 20 % split of whole episodes leaves one in each split.
        seed: seeds the environment, the agent and the split.
        min_episode_length: episodes of at most this many steps are dropped (AtariARI: the batch size, 64).
        entropy_threshold: variables with a label entropy (nats, over all kept frames) below this are dropped.
        env: an environment to collect from instead of :func:`make_atariari_env` (tests); it must be an ALE game.
    """
    key = _game_key(game)
    check_count("steps", steps, 1, "AtariARI collects 50,000 steps per game.")
    check_count("min_episode_length", min_episode_length, 0, "AtariARI uses 64.")
    check_positive("entropy_threshold", entropy_threshold, "AtariARI uses 0.6.", allow_zero=True)
    env = make_atariari_env(key) if env is None else env
    rng = np.random.default_rng(seed)
    actions = env.action_space.n
    if actions < 2:
        raise ConfigError(f"{key} has {actions} action(s); the AtariARI agent samples actions 1..n-1.")
    # AtariARI's random agent never picks action 0 (NOOP).
    rollout: Rollout = collect_rollout(env, steps, seed, policy=lambda _: int(rng.integers(1, actions)))
    if rollout.ram is None:
        raise ConfigError("the environment exposes no Atari RAM (env.unwrapped.ale); AtariARI needs an ALE game.")
    lengths = torch.bincount(rollout.episode)
    long_enough = torch.nonzero(lengths > min_episode_length).flatten()
    count = long_enough.numel()
    if count < 3:
        raise ConfigError(f"{count} episode(s) of {key} last more than {min_episode_length} steps in {steps} steps, "
                          "too few for a 70/10/20 split of whole episodes with one in each part; collect more steps.")
    keep = torch.isin(rollout.episode, long_enough)
    frames, ram = rollout.frames[keep], rollout.ram[keep]
    episode = torch.unique_consecutive(rollout.episode[keep], return_inverse=True)[1]
    labels, dropped = {}, {}
    for name, values in ram_labels(key, ram).items():
        entropy = label_entropy(values)
        if entropy < entropy_threshold:
            dropped[name] = entropy
        else:
            labels[name] = values
    train, val, test = split_episodes(episode, seed)
    seen = {frames[int(i)].numpy().tobytes() for i in train}
    val = _drop_seen(val, frames, seen)
    seen.update(frames[int(i)].numpy().tobytes() for i in val)
    test = _drop_seen(test, frames, seen)
    if val.numel() == 0 or test.numel() == 0:
        raise ConfigError(f"the val or test split of {key} came out empty (every frame also in train); "
                          "collect more steps.")
    return AtariARIEpisodes(game=key, frames=frames, labels=labels, episode=episode, train=train, val=val,
                            test=test, dropped=dropped, steps=steps)

