"""Rollouts collected into a folder, in chunks, resumable: what ``contrastkit collect ENV`` writes.

A collection is ``steps`` environment steps cut into chunks of ``chunk_steps``; chunk k is an
independent :func:`contrastkit.data.rollouts.collect_rollout` from a reset seeded by (seed, k), so
each chunk is the same whichever run wrote it. A chunk is written whole or not at all
(``chunk-00003.safetensors``: frames, actions, rewards, episode ids and, for Atari, the RAM), and
``collection.json`` records the settings; collecting again into the folder with the same settings
writes only the missing chunks, so an interrupted collection is resumed by running it again.
:func:`load_rollouts` joins the chunks into one :class:`Rollout`, episode ids running on across
chunks (a chunk's last episode is cut where the chunk ends, never joined to the next chunk's).

Example::

    contrastkit collect ALE/Pong-v5 --steps 100000 --out rollouts/pong
    contrastkit collect CartPole-v1 --steps 20000 --size 84 --out rollouts/cartpole
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from contrastkit._atomic import write_atomic
from contrastkit._checks import check_count
from contrastkit.augment.frames import _crop_size
from contrastkit.data.rollouts import Rollout, collect_rollout
from contrastkit.errors import ConfigError, DatasetError

__all__ = ["collect_to_folder", "load_rollouts", "make_env"]

MANIFEST = "collection.json"


def make_env(env_id: str) -> Any:
    """``gymnasium.make(env_id)`` rendering frames: Atari (``ALE/...``) observes them, the rest is
    made with ``render_mode="rgb_array"``.

    Args:
        env_id: a gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``, ``MiniGrid-Empty-5x5-v0``).
    """
    try:
        import gymnasium as gym
    except ImportError:
        raise ConfigError("collecting rollouts needs gymnasium: pip install 'contrastkit[rl]'") from None
    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError:
            raise ConfigError(f"{env_id} is an Atari game, which needs ale-py: pip install ale-py") from None
        gym.register_envs(ale_py)
    try:
        if env_id.startswith("ALE/"):
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        # Classic control renders with pygame: a missing renderer is named now, not mid-collection.
        env.reset(seed=0)
        env.render()
        return env
    except gym.error.Error as error:
        raise ConfigError(f"cannot make environment {env_id!r}: {' '.join(str(error).split())}") from None


def _chunk_seed(seed: int, chunk: int) -> int:
    # Seeds of distinct (seed, chunk) pairs never coincide, unlike seed + chunk.
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def _chunk_path(out: Path, chunk: int) -> Path:
    return out / f"chunk-{chunk:05d}.safetensors"


def collect_to_folder(env_id: str, out: str | Path, steps: int, *, seed: int = 0, chunk_steps: int = 10_000,
                      size: int | tuple[int, int] | None = None,
                      env_factory: Callable[[], Any] | None = None) -> Path:
    """Collect ``steps`` random-policy steps of ``env_id`` into ``out``, resuming where chunks exist.

    Args:
        env_id: the gymnasium id, made by :func:`make_env` (and recorded in the manifest).
        out: the folder; made if missing.
        steps: the number of steps, >= 1.
        seed: seeds every chunk's environment reset and policy.
        chunk_steps: steps per chunk file (the unit of resumption).
        size: resize frames to (H, W) (an int: square) by area averaging; None keeps them.
        env_factory: makes the environment instead of ``make_env(env_id)`` (a custom one).

    Returns:
        The folder.
    """
    check_count("steps", steps, 1, "collect at least one step.")
    check_count("chunk_steps", chunk_steps, 1, "10,000 steps per chunk is the default.")
    settings = {"env": env_id, "steps": steps, "seed": seed, "chunk_steps": chunk_steps,
                "size": list(_crop_size(size)) if size is not None else None}
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        written = json.loads(manifest.read_text())
        if written != settings:
            changed = ", ".join(f"{key} {written.get(key)!r} -> {value!r}" for key, value in settings.items()
                                if written.get(key) != value)
            raise ConfigError(f"{out} holds a collection with other settings ({changed}); collect into another "
                              "folder, or give the same settings to resume it.")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(manifest, lambda file: file.write(json.dumps(settings, indent=2).encode()))
    from safetensors.torch import save

    env = None
    for chunk in range((steps + chunk_steps - 1) // chunk_steps):
        path = _chunk_path(out, chunk)
        if path.exists():
            continue
        env = env or (env_factory() if env_factory is not None else make_env(env_id))
        rollout = collect_rollout(env, min(chunk_steps, steps - chunk * chunk_steps), _chunk_seed(seed, chunk),
                                  size=size)
        tensors = {"frames": rollout.frames, "actions": rollout.actions, "rewards": rollout.rewards,
                   "episode": rollout.episode}
        if rollout.ram is not None:
            tensors["ram"] = rollout.ram
        payload = save({name: tensor.contiguous() for name, tensor in tensors.items()})
        write_atomic(path, lambda file, payload=payload: file.write(payload))
        print(f"chunk {chunk + 1}: {len(rollout)} steps, {int(rollout.episode[-1]) + 1} episode(s) -> {path.name}",
              flush=True)
    if env is not None:
        env.close()
    return out


def load_rollouts(folder: str | Path) -> Rollout:
    """The chunks of a collection joined into one :class:`Rollout`, in chunk order.

    Args:
        folder: a folder written by :func:`collect_to_folder` (``contrastkit collect``).
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise DatasetError(f"{folder} holds no collection ({MANIFEST} is missing); write one with "
                           "`contrastkit collect ENV --out FOLDER`.")
    settings = json.loads((folder / MANIFEST).read_text())
    chunks = (settings["steps"] + settings["chunk_steps"] - 1) // settings["chunk_steps"]
    missing = [index for index in range(chunks) if not _chunk_path(folder, index).is_file()]
    if missing:
        raise DatasetError(f"{folder} lacks {len(missing)} of its {chunks} chunks; run the same `contrastkit collect` "
                           "command again to finish it.")
    from safetensors.torch import load_file

    parts = [load_file(str(_chunk_path(folder, index))) for index in range(chunks)]
    offset, episodes = 0, []
    for part in parts:
        episodes.append(part["episode"] + offset)
        offset += int(part["episode"][-1]) + 1
    joined = {name: torch.cat([part[name] for part in parts]) for name in ("frames", "actions", "rewards")}
    ram = torch.cat([part["ram"] for part in parts]) if "ram" in parts[0] else None
    return Rollout(episode=torch.cat(episodes), ram=ram, **joined)
