"""AtariARI (Anand et al., NeurIPS 2019): linear probes of Atari state variables on frozen features of
an encoder pretrained by contrastkit with ST-DIM, beside the same encoder untrained (RANDOM-CNN), as JSON.

Per game: random-agent frames collected as AtariARI does (:func:`collect_atariari_episodes`:
210 x 160 grayscale, no sticky actions, 70/10/20 episode split), one NatureCNN
(:class:`contrastkit.models.atari.AtariEncoder`) initialised from the seed; a copy is trained with
ST-DIM (:class:`contrastkit.losses.stdim.STDIMLoss`, Adam lr 3e-4, batches of 64 consecutive
pairs) on the train split's frames only (no labels), or on episodes collected apart with
``--pretrain-frames`` as the paper does; the other copy stays untrained. Both are probed with
AtariARI's protocol (:mod:`contrastkit.evaluate.state_probe`). The per-game score is the paper's:
F1 averaged within each category of variables, then across categories.

CPU-sized by default. The paper collects 50,000 probe steps and 100,000 pretraining steps per
game and pretrains for up to 100 epochs over the training part of the latter (about 80,000
frames: up to about 125,000 updates of 64 pairs; early stopping on the val loss), on a GPU; each
update costs about 0.3 s on two CPU cores. ``--checkpoint-dir`` keeps the pretraining, so a
longer run goes on from a shorter one. The JSON records what was used.

    python benchmarks/atariari.py --games pong breakout --out /tmp/atariari_a.json
    python benchmarks/atariari.py --merge /tmp/atariari_a.json /tmp/atariari_b.json --out /tmp/atariari.json
    python benchmarks/atariari.py --games pong --frames 50000 --pretrain-frames 100000 --stdim-steps 125000 \
        --device cuda --checkpoint-dir stdim-checkpoints   # the paper's scale
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time
from typing import Any

import torch

from contrastkit._atomic import write_atomic
from contrastkit.data.atariari import collect_atariari_episodes
from contrastkit.data.rollouts import temporal_pairs
from contrastkit.evaluate.state_probe import state_probe_scores
from contrastkit.losses.stdim import STDIMLoss
from contrastkit.models.atari import AtariEncoder

# The paper's Table 2 (probe F1 averaged across categories, random-agent data), RANDOM-CNN and ST-DIM
# columns, read off the table as the authors show it in Slides.pdf of their repository
# (github.com/mila-iqia/atari-representation-learning, slide "Results"). MEAN is over all 22 games.
PAPER = {
    "source": "Anand et al. 2019 (arXiv:1906.08226), Table 2 (random-cnn and st-dim columns), as shown in "
              "Slides.pdf of github.com/mila-iqia/atari-representation-learning",
    "random_cnn": {"asteroids": 0.34, "berzerk": 0.43, "bowling": 0.48, "boxing": 0.19, "breakout": 0.51,
                   "demonattack": 0.26, "freeway": 0.50, "frostbite": 0.57, "hero": 0.75, "montezumarevenge": 0.68,
                   "mspacman": 0.49, "pitfall": 0.34, "pong": 0.17, "privateeye": 0.70, "qbert": 0.49,
                   "riverraid": 0.34, "seaquest": 0.57, "spaceinvaders": 0.41, "tennis": 0.41, "venture": 0.36,
                   "videopinball": 0.37, "yarsrevenge": 0.22, "mean": 0.44},
    "st_dim": {"asteroids": 0.49, "berzerk": 0.53, "bowling": 0.96, "boxing": 0.58, "breakout": 0.88,
               "demonattack": 0.69, "freeway": 0.81, "frostbite": 0.75, "hero": 0.93, "montezumarevenge": 0.78,
               "mspacman": 0.72, "pitfall": 0.60, "pong": 0.81, "privateeye": 0.91, "qbert": 0.73,
               "riverraid": 0.36, "seaquest": 0.67, "spaceinvaders": 0.57, "tennis": 0.60, "venture": 0.58,
               "videopinball": 0.61, "yarsrevenge": 0.42, "mean": 0.68},
}


@torch.no_grad()
def features(encoder: AtariEncoder, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The encoder's features of ``frames`` (kept on the CPU), computed on the encoder's device."""
    encoder.eval()
    device = next(encoder.parameters()).device
    return torch.cat([encoder(frames[i:i + batch].to(device)).cpu() for i in range(0, len(frames), batch)])


def pretrain_stdim(encoder: AtariEncoder, frames: torch.Tensor, episode: torch.Tensor, steps: int, batch: int,
                   lr: float, seed: int, checkpoint: str | None = None, settings: dict | None = None) -> list[float]:
    """Train ``encoder`` in place with ST-DIM on pairs (t, t + 1) of the same episode; returns the losses.

    With ``checkpoint``, the encoder, the score heads, Adam and the pair sampler are saved there
    atomically every 250 updates and at the end, and a run with the same ``settings`` goes on from
    the saved update (to ``steps`` in all): a long CPU run survives interruptions and can be extended.
    """
    device = next(encoder.parameters()).device
    loss_fn = STDIMLoss(encoder.feature_dim, encoder.local_dim, validate=False).to(device)
    optimiser = torch.optim.Adam([*encoder.parameters(), *loss_fn.parameters()], lr=lr, eps=1e-5)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    if checkpoint and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["settings"] != settings:
            raise SystemExit(f"{checkpoint} holds a run with other settings ({state['settings']}); "
                             "pass another --checkpoint-dir or the same settings.")
        encoder.load_state_dict(state["encoder"])
        loss_fn.load_state_dict(state["heads"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        losses = state["losses"]
        if len(losses) > steps:
            raise SystemExit(f"{checkpoint} is already at update {len(losses)}, beyond --stdim-steps {steps}; "
                             "ask for at least as many or pass another --checkpoint-dir.")
        print(f"resuming ST-DIM at update {len(losses)} from {checkpoint}", file=sys.stderr, flush=True)

    def save() -> None:
        state = {"settings": settings, "encoder": encoder.state_dict(), "heads": loss_fn.state_dict(),
                 "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "losses": losses}
        write_atomic(checkpoint, lambda handle: torch.save(state, handle))

    encoder.train()
    for _ in range(len(losses), steps):
        t, later = temporal_pairs(episode, k=1, count=batch, generator=generator)
        global_t, local_t = encoder.forward_maps(frames[t].to(device))
        _, local_later = encoder.forward_maps(frames[later].to(device))
        loss = loss_fn(global_t, local_t, local_later)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if checkpoint and len(losses) % 250 == 0:
            save()
    if checkpoint:
        save()
    return losses


def run_game(game: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    data = collect_atariari_episodes(game, args.frames, seed=args.seed)
    collected = time.perf_counter()
    torch.manual_seed(args.seed)
    random_cnn = AtariEncoder()
    stdim = copy.deepcopy(random_cnn).to(args.device)  # the same start: the comparison isolates the pretraining
    random_cnn.to(args.device)
    train_episode = data.episode[data.train]
    if args.pretrain_frames:
        # The paper pretrains on episodes of their own (100,000 steps), collected apart from the probes' 50,000.
        pretraining = collect_atariari_episodes(game, args.pretrain_frames, seed=args.seed + 1)
        pretrain_frames, pretrain_episode = pretraining.frames, pretraining.episode
    else:
        pretrain_frames, pretrain_episode = data.frames[data.train], train_episode
    checkpoint = None
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        checkpoint = os.path.join(args.checkpoint_dir, f"stdim-{game}.pt")
    settings = {"game": game, "frames": args.frames, "pretrain_frames": args.pretrain_frames, "seed": args.seed,
                "batch": args.batch_size, "lr": args.stdim_lr}
    losses = pretrain_stdim(stdim, pretrain_frames, pretrain_episode, args.stdim_steps, args.batch_size,
                            args.stdim_lr, args.seed, checkpoint, settings)
    pretrained = time.perf_counter()
    result: dict[str, Any] = {
        "frames_collected": data.steps, "frames_kept": len(data.frames), "episodes": int(data.episode.max()) + 1,
        "split_frames": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "variables": list(data.labels), "dropped_low_entropy": {k: round(v, 3) for k, v in data.dropped.items()},
        "pretrain_frames_kept": len(pretrain_frames),
        "stdim_steps": args.stdim_steps, "stdim_pairs_seen": args.stdim_steps * args.batch_size,
        "stdim_loss_first_last": [round(losses[0], 4), round(sum(losses[-20:]) / len(losses[-20:]), 4)],
        "seconds": {"collect": round(collected - started, 1), "stdim_pretrain": round(pretrained - collected, 1)},
    }
    for name, encoder in (("stdim", stdim), ("random_cnn", random_cnn)):
        tick = time.perf_counter()
        x = features(encoder, data.frames)
        split = {s: (x[getattr(data, s)], {k: v[getattr(data, s)] for k, v in data.labels.items()})
                 for s in ("train", "val", "test")}
        scores = state_probe_scores(*split["train"], *split["val"], *split["test"], epochs=args.probe_epochs,
                                    train_episode=train_episode, val_episode=data.episode[data.val], seed=args.seed)
        result[name] = {"f1": round(scores["across_categories_f1"], 4), "mean_f1_over_variables":
                        round(scores["mean_f1"], 4),
                        "per_variable": {k: round(v, 4) for k, v in scores["f1"].items()},
                        "category_f1": {k: round(v, 4) for k, v in scores["category_f1"].items()},
                        "max_probe_epochs": max(scores["epochs"].values())}
        result["seconds"][f"features_and_probes_{name}"] = round(time.perf_counter() - tick, 1)
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return result


def summary(games: dict[str, Any]) -> dict[str, Any]:
    names = sorted(games)
    out: dict[str, Any] = {"games": names}
    for key in ("stdim", "random_cnn"):
        out[f"{key}_mean_f1"] = round(sum(games[g][key]["f1"] for g in names) / len(names), 4)
    for key in ("random_cnn", "st_dim"):
        known = [PAPER[key].get(g) for g in names]
        out[f"paper_{key}_mean_f1"] = (round(sum(known) / len(known), 4)
                                       if all(v is not None for v in known) else None)
    target = out["paper_st_dim_mean_f1"]
    out["target_contrastkit_ge_paper_st_dim"] = None if target is None else out["stdim_mean_f1"] >= target
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["pong", "breakout", "mspacman", "spaceinvaders"])
    parser.add_argument("--frames", type=int, default=12000, help="random-agent steps per game (paper: 50,000)")
    parser.add_argument("--pretrain-frames", type=int, default=0, help="random-agent steps collected apart for "
                        "ST-DIM (paper: 100,000); 0 pretrains on the probes' train split")
    parser.add_argument("--stdim-steps", type=int, default=250, help="ST-DIM updates of --batch-size pairs")
    parser.add_argument("--stdim-lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the encoders train and embed (cuda on a GPU machine); "
                        "the probes train on the CPU")
    parser.add_argument("--checkpoint-dir", help="save ST-DIM pretraining here and resume it from there: a run "
                        "with a larger --stdim-steps goes on where the last one stopped")
    parser.add_argument("--merge", nargs="+", help="combine the JSON of earlier runs (one game set each)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        parts = [json.load(open(path)) for path in args.merge]
        games = {g: r for part in parts for g, r in part["per_game"].items()}
        report = {**parts[0], "command": [p["command"] for p in parts],
                  "seconds": round(sum(p["seconds"] for p in parts), 1), "paper_figures": PAPER, "per_game": games,
                  "summary": summary(games)}
    else:
        started = time.perf_counter()
        games = {}
        for game in args.games:
            games[game] = run_game(game, args)
            print(json.dumps({game: {k: games[game][k]["f1"] for k in ("stdim", "random_cnn")}}), file=sys.stderr,
                  flush=True)
        report = {
            "benchmark": "AtariARI linear state probes (Anand et al. 2019 protocol, CPU-sized)",
            "device": (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else
                       f"cpu ({platform.processor() or platform.machine()})") + f", torch threads {args.threads}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + " ".join(sys.argv), "torch": torch.__version__,
            "seconds": round(time.perf_counter() - started, 1),
            "settings": {"frames_per_game": args.frames, "pretrain_frames": args.pretrain_frames,
                         "stdim_steps": args.stdim_steps,
                         "stdim_batch": args.batch_size, "stdim_lr": args.stdim_lr,
                         "probe_epochs_max": args.probe_epochs, "seed": args.seed,
                         "paper": "50,000 probe frames + 100,000 pretraining frames per game, ST-DIM up to 100 epochs "
                                  "(early stopping), probes up to 100 epochs"},
            "paper_figures": PAPER,
            "per_game": games, "summary": summary(games),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
