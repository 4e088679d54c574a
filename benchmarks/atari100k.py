"""Atari 100k: a pixel DQN agent trained online, with and without CURL's auxiliary loss; the
evaluation returns per game, auxiliary loss and seed, as JSON.

The agent is DrQ(epsilon) (Kostrikov et al. 2020's DrQ with the settings of Agarwal et al. 2021):
a double DQN with a dueling head on the Nature CNN, 10-step returns (gamma 0.99), Huber loss,
Adam (lr 1e-4, eps 1.5e-4), batches of 32 drawn from every step so far, one update per step
after 1,600 random steps, the target network copied after every update, epsilon decayed from 1
to 0.01 over the first 5,000 steps, 0.001 in evaluation, and DrQ's random shift (4 pixels) of
both observations of each transition. Frames follow the Atari 100k convention: 84 x 84
grayscale, 4-frame stacks, action repeat 4 with max-pooling, up to 30 no-ops at reset, no sticky
actions, rewards clipped to their sign in training, a lost life ends the bootstrap (not the
episode), episodes cut at 108,000 frames.

``--aux curl`` adds :class:`contrastkit.methods.CURLAuxiliaryLoss` to the TD loss: the anchor is
the shifted stack the Q-network learns from, the positive a second shift of the same stack, the
keys from a momentum copy of the encoder (momentum 0.99 here, ``--curl-momentum``), weight 1, as
CURL adds it to its data-efficient Rainbow (Srinivas et al. 2020). The lines it adds are marked
``# +``.

100,000 agent steps per run (400,000 frames), then ``--eval-episodes`` episodes; on two CPU cores
an update takes about 0.1 s, so a run is hours there and this is GPU work (``benchmarks/RESULTS.md``).
Runs are independent processes with ``--jobs``:

    python benchmarks/atari100k.py --games Pong Breakout --aux none curl --seeds 0 1 2 --device cuda --jobs 12
    python benchmarks/atari100k.py --games Pong --steps 2000 --learning-starts 200 --eval-episodes 1  # smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.augment.frames import RandomShift
from contrastkit.data.rollouts import Rollout
from contrastkit.methods.rl_auxiliary import CURLAuxiliaryLoss

STACK, SIZE, HIDDEN = 4, 84, 512


class AtariGame:
    """``ALE/{game}-v5`` stepped with the Atari 100k preprocessing (module docstring).

    Frames are shrunk from 210 x 160 to 84 x 84 by area averaging (torch's ``area`` mode, in place
    of OpenCV's ``INTER_AREA`` that gymnasium's ``AtariPreprocessing`` needs).
    """

    def __init__(self, game: str, seed: int, max_frames: int = 108_000) -> None:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        try:
            self.env = gym.make(f"ALE/{game}-v5", obs_type="grayscale", frameskip=1, repeat_action_probability=0.0,
                                max_num_frames_per_episode=max_frames)
        except gym.error.Error as error:
            raise SystemExit(f"no Atari game {game!r} ({error}); pass ALE names such as Pong, Breakout, MsPacman.")
        self.ale = self.env.unwrapped.ale
        self.actions = int(self.env.action_space.n)
        self.rng = np.random.default_rng(seed)
        self.seed: int | None = seed

    @staticmethod
    def _shrink(screen: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(screen)[None, None].float()
        return F.interpolate(pixels, size=(SIZE, SIZE), mode="area")[0, 0].round().to(torch.uint8).numpy()

    def reset(self) -> np.ndarray:
        """A new episode after 0 to 30 no-ops; its first 84 x 84 frame."""
        screen, _ = self.env.reset(seed=self.seed)
        self.seed = None  # seeded once: later episodes continue the environment's random stream
        for _ in range(int(self.rng.integers(0, 31))):
            screen, _, terminated, truncated, _ = self.env.step(0)
            if terminated or truncated:
                screen, _ = self.env.reset()
        return self._shrink(screen)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, int]:
        """Repeat ``action`` 4 frames; (frame, summed reward, terminated, truncated, lives left)."""
        total, screens = 0.0, []
        terminated = truncated = False
        for _ in range(4):
            screen, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward)
            screens.append(screen)
            if terminated or truncated:
                break
        # Sprites flicker on alternate frames: the max of the last two shows them all.
        screen = np.maximum(screens[-2], screens[-1]) if len(screens) > 1 else screens[-1]
        return self._shrink(screen), total, terminated, truncated, self.ale.lives()


class FrameReplay:
    """Every step's frame, action, clipped reward and end, kept once and stacked when sampled.

    Step i holds the frame seen before acting, the action, the reward it got and whether the
    bootstrap stops after it (game over, lost life or cut episode). A stack never reaches into the
    previous episode: before an episode's first frame, that frame is repeated.

    Args:
        capacity: the most steps it holds (Atari 100k keeps all 100,000).
        stack: frames per stack.
        n_step: the steps summed into a return before bootstrapping.
        gamma: the discount.
    """

    def __init__(self, capacity: int, stack: int = STACK, n_step: int = 10, gamma: float = 0.99,
                 frame_shape: tuple[int, int] = (SIZE, SIZE)) -> None:
        self.capacity, self.stack, self.n_step, self.gamma = capacity, stack, n_step, gamma
        self.frames = torch.zeros((capacity, *frame_shape), dtype=torch.uint8)
        self.actions = torch.zeros(capacity, dtype=torch.long)
        self.rewards = torch.zeros(capacity)
        self.terminal = torch.zeros(capacity, dtype=torch.bool)
        self.episode = torch.zeros(capacity, dtype=torch.long)  # episode ids 0, 1, ..., as Rollout keeps them
        self.size = 0

    def add(self, frame: np.ndarray, action: int, reward: float, terminal: bool, episode_start: bool) -> None:
        i = self.size
        if i == self.capacity:
            raise RuntimeError(f"the replay is full ({self.capacity} steps); give it the run's number of steps.")
        self.frames[i] = torch.from_numpy(frame)
        self.actions[i], self.rewards[i], self.terminal[i] = action, reward, terminal
        self.episode[i] = 0 if i == 0 else self.episode[i - 1] + int(episode_start)
        self.size += 1

    def stacks(self, index: Tensor) -> Tensor:
        """(B, stack, H, W) uint8 stacks ending at the steps ``index``, oldest frame first (:meth:`Rollout.stacks`
        on the steps stored so far)."""
        n = self.size
        stored = Rollout(frames=self.frames[:n, None], actions=self.actions[:n], rewards=self.rewards[:n],
                         episode=self.episode[:n])
        return stored.stacks(index, self.stack)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(obs, action, n-step return, discount of the bootstrap, obs n steps later) of ``count``
        steps drawn uniformly from those with n later steps stored."""
        index = torch.randint(0, self.size - self.n_step, (count,), generator=generator)
        return self.transitions(index)

    def transitions(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The n-step transitions from the steps ``index`` (see :meth:`sample`)."""
        offsets = torch.arange(self.n_step)
        steps = index[:, None] + offsets
        ended = self.terminal[steps]
        # A reward counts while no earlier step of the window ended the bootstrap.
        alive = torch.cat([torch.ones(len(index), 1), torch.cumprod((~ended[:, :-1]).float(), dim=1)], dim=1)
        returns = (alive * self.gamma ** offsets * self.rewards[steps]).sum(dim=1)
        discount = self.gamma ** self.n_step * alive[:, -1] * (~ended[:, -1]).float()
        return self.stacks(index), self.actions[index], returns, discount, self.stacks(index + self.n_step)


class QNetwork(nn.Module):
    """The Nature CNN with a 512-unit layer (``encoder``), then a dueling head."""

    def __init__(self, actions: int, stack: int = STACK) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(stack, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2),
                                     nn.ReLU(), nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(64 * 7 * 7, HIDDEN), nn.ReLU())
        self.value = nn.Linear(HIDDEN, 1)
        self.advantage = nn.Linear(HIDDEN, actions)

    def forward(self, obs: Tensor) -> Tensor:
        hidden = self.encoder(obs)
        advantage = self.advantage(hidden)
        return self.value(hidden) + advantage - advantage.mean(dim=1, keepdim=True)


def _pixels(frames: Tensor) -> Tensor:
    return frames.float() / 255.0


def evaluate(network: QNetwork, game: str, episodes: int, seed: int, device: str, epsilon: float = 0.001,
             max_steps: int | None = None) -> list[float]:
    """Unclipped returns of ``episodes`` episodes with an epsilon-greedy policy; stops early after
    ``max_steps`` steps in all (the episode under way then counts as cut short, not returned)."""
    env, rng = AtariGame(game, seed), np.random.default_rng(seed)
    returns: list[float] = []
    steps = 0
    for _ in range(episodes):
        frame = env.reset()
        recent = deque([frame] * STACK, maxlen=STACK)
        total, done = 0.0, False
        while not done:
            if max_steps is not None and steps >= max_steps:
                return returns
            action = act(network, recent, rng, epsilon, env.actions, device)
            frame, reward, terminated, truncated, _ = env.step(action)
            recent.append(frame)
            total += reward
            done, steps = terminated or truncated, steps + 1
        returns.append(total)
    return returns


@torch.no_grad()
def act(network: QNetwork, recent: deque, rng: np.random.Generator, epsilon: float, actions: int, device: str) -> int:
    """An epsilon-greedy action for the stack of the ``recent`` frames."""
    if rng.random() < epsilon:
        return int(rng.integers(actions))
    obs = _pixels(torch.from_numpy(np.stack(recent))[None].to(device))
    return int(network(obs).argmax(dim=1).item())


def train_agent(game: str, aux: str, seed: int, *, steps: int = 100_000, device: str = "cpu",
                learning_starts: int = 1600, batch_size: int = 32, n_step: int = 10, gamma: float = 0.99,
                lr: float = 1e-4, epsilon_decay_steps: int = 5000, curl_momentum: float = 0.99,
                curl_weight: float = 1.0, eval_episodes: int = 10, eval_max_steps: int | None = None) -> dict[str, Any]:
    """Train one DrQ(epsilon) agent (``aux`` "none" or "curl") and evaluate it (module docstring)."""
    if aux not in ("none", "curl"):
        raise SystemExit(f"aux must be 'none' or 'curl', got {aux!r}.")
    if learning_starts <= n_step:
        raise SystemExit(f"learning_starts ({learning_starts}) must exceed n_step ({n_step}) so a batch can be drawn.")
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    env = AtariGame(game, seed)
    actions = env.actions
    online = QNetwork(actions).to(device)
    target = copy.deepcopy(online).requires_grad_(False)
    params = list(online.parameters())
    curl = None
    if aux == "curl":  # +: the loss holds the agent's encoder, a momentum key encoder and W
        curl = CURLAuxiliaryLoss(online.encoder, HIDDEN, momentum=curl_momentum).to(device)
        params.append(curl.W)  # +
    optimizer = torch.optim.Adam(params, lr=lr, eps=1.5e-4)
    shift = RandomShift(pad=4)
    replay = FrameReplay(steps, n_step=n_step, gamma=gamma)

    frame = env.reset()
    lives, start = env.ale.lives(), True
    recent = deque([frame] * STACK, maxlen=STACK)
    episode_return, train_returns, td_losses, aux_losses = 0.0, [], [], []
    for step in range(steps):
        # Random steps until learning starts, then epsilon decays linearly to 0.01 (Dopamine's schedule).
        epsilon = min(1.0, max(0.01, 1.0 - 0.99 * (step - learning_starts) / epsilon_decay_steps))
        action = act(online, recent, rng, epsilon, actions, device)
        next_frame, reward, terminated, truncated, now_lives = env.step(action)
        lost_life = now_lives < lives
        lives = now_lives
        replay.add(frame, action, float(np.sign(reward)), terminated or truncated or lost_life, start)
        episode_return += reward
        start = False
        if terminated or truncated:
            train_returns.append(episode_return)
            episode_return = 0.0
            next_frame = env.reset()
            lives, start = env.ale.lives(), True
            recent = deque([next_frame] * STACK, maxlen=STACK)
        else:
            recent.append(next_frame)
        frame = next_frame
        if step < learning_starts:
            continue
        obs, action_taken, returns, discount, next_obs = (x.to(device) for x in replay.sample(batch_size, generator))
        view, next_view = _pixels(shift(obs, generator)), _pixels(shift(next_obs, generator))
        with torch.no_grad():
            next_action = online(next_view).argmax(dim=1, keepdim=True)
            bootstrap = target(next_view).gather(1, next_action).squeeze(1)
            y = returns + discount * bootstrap
        q = online(view).gather(1, action_taken[:, None]).squeeze(1)
        td_loss = F.smooth_l1_loss(q, y)
        loss = td_loss
        if curl is not None:  # +: a second shift of the same stacks is the positive
            aux_loss = curl(view, _pixels(shift(obs, generator)), validate=False)
            loss = loss + curl_weight * aux_loss  # +
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        if curl is not None:
            curl.update_target()  # +
        target.load_state_dict(online.state_dict())
        if step % 1000 == 0 or step == steps - 1:  # a sample of the losses: .item() waits for the device
            td_losses.append(td_loss.item())
            if curl is not None:
                aux_losses.append(aux_loss.item())
    trained = time.perf_counter()
    online.eval()
    eval_returns = evaluate(online, game, eval_episodes, seed + 10_000, device, max_steps=eval_max_steps)
    return {"game": game, "aux": aux, "seed": seed, "steps": steps,
            "eval_return_mean": statistics.fmean(eval_returns) if eval_returns else None,
            "eval_returns": eval_returns, "train_episodes": len(train_returns),
            "train_return_last10_mean": statistics.fmean(train_returns[-10:]) if train_returns else None,
            "td_loss_sampled": [round(v, 5) for v in td_losses],
            "curl_loss_sampled": [round(v, 4) for v in aux_losses],
            "seconds": {"train": round(trained - started, 1), "eval": round(time.perf_counter() - trained, 1)}}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(job.pop("threads"))
    return train_agent(**job)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per game and auxiliary loss: the mean and spread over seeds of the evaluation returns."""
    out: dict[str, Any] = {}
    for run in runs:
        out.setdefault(run["game"], {}).setdefault(run["aux"], []).append(run["eval_return_mean"])
    for game, by_aux in out.items():
        for aux, values in by_aux.items():
            known = [v for v in values if v is not None]
            by_aux[aux] = {"seeds": len(values), "mean": statistics.fmean(known) if known else None,
                           "stdev": statistics.stdev(known) if len(known) > 1 else None, "per_seed": values}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Pong", "Breakout"], help="ALE names (Atari 100k has 26)")
    parser.add_argument("--aux", nargs="+", default=["none", "curl"], choices=("none", "curl"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000, help="agent steps per run (Atari 100k: 100,000)")
    parser.add_argument("--learning-starts", type=int, default=1600)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--eval-max-steps", type=int, help="stop evaluating after this many steps in all")
    parser.add_argument("--curl-momentum", type=float, default=0.99)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each its own process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    jobs = [{"game": game, "aux": aux, "seed": seed, "steps": args.steps, "device": args.device,
             "learning_starts": args.learning_starts, "eval_episodes": args.eval_episodes,
             "eval_max_steps": args.eval_max_steps, "curl_momentum": args.curl_momentum, "threads": args.threads}
            for game in args.games for aux in args.aux for seed in args.seeds]
    started = time.perf_counter()
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            runs = list(pool.map(_run, jobs))
    else:
        runs = [_run(job) for job in jobs]
    report = {
        "benchmark": "Atari 100k, DrQ(epsilon) with and without CURL's auxiliary loss",
        "device": (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else
                   f"cpu ({platform.processor() or platform.machine()})"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv), "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1), "summary": summary(runs), "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
