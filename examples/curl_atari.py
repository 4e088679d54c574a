"""A pixel DQN's update with CURL's (or ATC's) auxiliary loss added: the lines marked ``# +``.

Collects a random-policy rollout from an Atari game (or any gymnasium environment: CartPole-v1
renders its frames with ``render_mode="rgb_array"`` and pygame), then trains a small Q-network
on it, offline, with the contrastive term added to its TD loss; prints both losses as it goes.
``benchmarks/atari100k.py`` is the same idea as a whole agent, trained online, reporting returns.

    pip install gymnasium ale-py
    PYTHONPATH=src python examples/curl_atari.py --env ALE/Pong-v5 --updates 100
    PYTHONPATH=src python examples/curl_atari.py --aux atc
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.augment.frames import RandomCrop, RandomShift, center_crop
from contrastkit.data.rollouts import collect_rollout, temporal_pairs
from contrastkit.methods.rl_auxiliary import ATCAuxiliaryLoss, CURLAuxiliaryLoss
from contrastkit.models.momentum import ema_update, momentum_copy

STACK, RENDERED, SIZE, FEATURES = 3, 100, 84, 50


def make_env(name: str) -> gym.Env:
    if name.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
        return gym.make(name, obs_type="grayscale")
    return gym.make(name, render_mode="rgb_array")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--aux", choices=("curl", "atc", "none"), default="curl")
    parser.add_argument("--steps", type=int, default=3000, help="environment steps to collect")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    env = make_env(args.env)
    rollout = collect_rollout(env, args.steps, seed=args.seed, size=RENDERED)
    channels = rollout.frames.shape[1] * STACK
    encoder = nn.Sequential(nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(),
                            nn.Flatten(), nn.LazyLinear(FEATURES), nn.LayerNorm(FEATURES))
    encoder(torch.zeros(1, channels, SIZE, SIZE))  # materialise the lazy layer before copying it
    q_head = nn.Linear(FEATURES, env.action_space.n)
    q_target = momentum_copy(nn.Sequential(encoder, q_head))
    # +: the auxiliary loss holds the encoder; its own parameters (W, ATC's heads) join the optimizer.
    if args.aux == "curl":
        aux = CURLAuxiliaryLoss(encoder, FEATURES)
    elif args.aux == "atc":
        aux = ATCAuxiliaryLoss(encoder, FEATURES, latent_dim=64, hidden_dim=256)
    else:
        aux = None
    params = [*q_head.parameters(), *(aux.parameters() if aux is not None else encoder.parameters())]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    crop, shift = RandomCrop(SIZE), RandomShift(pad=4)

    for update in range(1, args.updates + 1):
        t, later = temporal_pairs(rollout.episode, k=1, count=args.batch, generator=generator)
        obs = rollout.stacks(t, STACK)
        view = crop(obs, generator).float() / 255
        with torch.no_grad():
            next_q = q_target(center_crop(rollout.stacks(later, STACK), SIZE).float() / 255).max(dim=1).values
        # Terminal steps are ignored here: the pairs stay inside episodes, a sketch of DQN's target.
        target = rollout.rewards[t] + 0.99 * next_q
        q = q_head(encoder(view)).gather(1, rollout.actions[t].long()[:, None]).squeeze(1)
        td_loss = F.smooth_l1_loss(q, target)
        loss = td_loss
        if args.aux == "curl":  # +: a second crop of the same stacks is the positive
            aux_loss = aux(view, crop(obs, generator).float() / 255)
        elif args.aux == "atc":  # +: the stack 3 steps later in the same episode is the positive
            t3, later3 = temporal_pairs(rollout.episode, k=3, count=args.batch, generator=generator)
            anchor = shift(center_crop(rollout.stacks(t3, STACK), SIZE), generator).float() / 255
            aux_loss = aux(anchor, shift(center_crop(rollout.stacks(later3, STACK), SIZE), generator).float() / 255)
        if aux is not None:
            loss = loss + aux_loss  # +
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if aux is not None:
            aux.update_target()  # +
        ema_update(q_target, nn.Sequential(encoder, q_head), 0.99)
        if update % 50 == 0 or update == 1:
            extra = f"  {args.aux} {aux_loss.item():.4f}" if aux is not None else ""
            print(f"update {update:4d}  td {td_loss.item():.4f}{extra}", flush=True)
    env.close()


if __name__ == "__main__":
    main()
