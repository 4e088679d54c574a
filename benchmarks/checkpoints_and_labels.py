"""Label-free checkpoint choice and label efficiency of one SimCLR run, as JSON.

1. RankMe against kNN over checkpoints: SimCLR trains on CIFAR-10 (or a fixed random subset of its
   training images) and each chosen epoch's weights are kept. For each checkpoint (and the
   untrained network, epoch 0), the backbone features of the un-augmented images give the kNN
   top-1 (train split as reference, test split as queries) and the RankMe of the test features
   (Garrido et al., 2023: exp of the entropy of the normalised singular values). The question
   RankMe has to answer without labels: does it order the checkpoints as kNN does? Reported as
   Spearman's and Kendall's rank correlations over the trained checkpoints and whether both pick
   the same best one.
2. Fine-tuning with 1 %, 10 % and 100 % of the labels (class-balanced, seeded subsets of the
   training images the run saw), the pretrained backbone beside the same network from scratch,
   with the same optimiser and steps (:func:`contrastkit.evaluate.label_fraction_scores`).

    # CPU (two cores): small CNN, 5,000 training images, 16 epochs
    PYTHONPATH=src python3 benchmarks/checkpoints_and_labels.py --train-subset 5000 --backbone small_cnn \\
        --epochs 16 --batch-size 256 --knn-k 50
    # GPU: ResNet-18, all 50,000 training images, SimCLR's 200-epoch CIFAR recipe
    PYTHONPATH=src python3 benchmarks/checkpoints_and_labels.py --epochs 200 --checkpoints 10 25 50 100 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau, spearmanr

from contrastkit import run_folder, runs
from contrastkit.config import Config, resolve
from contrastkit.evaluate import (classification_metrics, extract_features, knn_predict, label_fraction_scores,
                                  rankme)
from contrastkit.train.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import train_subset  # noqa: E402  (the same fixed draw of training images)

KNN_TEMPERATURE = 0.1


def default_checkpoints(epochs: int) -> list[int]:
    """Epochs 1, 2, 4, ... up to the last one."""
    chosen, epoch = [], 1
    while epoch < epochs:
        chosen.append(epoch)
        epoch *= 2
    return [*chosen, epochs]


def scores_of(run: runs.Run, knn_k: int) -> dict[str, float]:
    """kNN top-1 and the test features' RankMe of the run's backbone as it stands."""
    view, device, channels_last = run.augment.eval_view, run.device, run.config.channels_last
    train, test = (extract_features(run.method.backbone, split.images, view, device=device,
                                    channels_last=channels_last) for split in (run.splits.train, run.splits.test))
    classes = len(run.splits.classes)
    predicted = knn_predict(train, run.splits.train.labels, test, k=min(knn_k, len(train)),
                            temperature=KNN_TEMPERATURE, num_classes=classes)
    top1 = classification_metrics(run.splits.test.labels, predicted, num_classes=classes)["top1"]
    return {"knn_top1": round(top1, 4), "rankme": round(float(rankme(test)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.npz", help="CIFAR-10 as a packed-JPEG .npz")
    parser.add_argument("--train-subset", type=int, help="train on this many training images (a fixed random draw)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--checkpoints", type=int, nargs="+", help="epochs to score (default 1, 2, 4, ..., epochs)")
    parser.add_argument("--knn-k", type=int, default=200)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/checkpoints-and-labels")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} does not exist; pass --data PATH of cifar10-jpeg.npz (../shared/data/README.md).")
    out_dir = Path(args.out_dir)
    if args.train_subset:
        data = train_subset(data, args.train_subset, args.seed, out_dir)
    checkpoints = sorted(set(args.checkpoints or default_checkpoints(args.epochs)))
    if not all(1 <= epoch <= args.epochs for epoch in checkpoints):
        raise SystemExit(f"--checkpoints must lie in [1, {args.epochs}], got {checkpoints}.")
    run_dir = out_dir / f"simclr-{int(time.time())}"
    config = resolve(Config(method="simclr", dataset="cifar10", data_root=str(data), backbone=args.backbone,
                            epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=args.seed,
                            out=str(run_dir), evaluate=False, plot=False, progress=False, knn_k=args.knn_k))

    def keep(state: Any) -> None:
        if state.epoch in checkpoints:
            shutil.copyfile(run_dir / run_folder.CHECKPOINT, run_dir / f"epoch-{state.epoch}.pt")

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        runs.train(config, callbacks=[keep])
        run = runs.Run.load(run_dir)
    final_state = {name: value.clone() for name, value in run.method.state_dict().items()}
    untrained = runs.Run(config, splits=run.splits)  # seeded as the run was: the weights it started from
    rows = [{"epoch": 0, **scores_of(untrained, args.knn_k)}]
    for epoch in checkpoints:
        run.method.load_state_dict(load_checkpoint(run_dir / f"epoch-{epoch}.pt", map_location=run.device)["method"])
        rows.append({"epoch": epoch, **scores_of(run, args.knn_k)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    trained = rows[1:]
    knn, rank = [row["knn_top1"] for row in trained], [row["rankme"] for row in trained]
    ordering = {"spearman": round(float(spearmanr(rank, knn).statistic), 3),
                "kendall": round(float(kendalltau(rank, knn).statistic), 3),
                "best_by_knn": trained[max(range(len(trained)), key=knn.__getitem__)]["epoch"],
                "best_by_rankme": trained[max(range(len(trained)), key=rank.__getitem__)]["epoch"]}

    run.method.load_state_dict(final_state)
    task = run.modality.fine_tune_task(run)
    start = time.perf_counter()
    fractions = label_fraction_scores(run.method.backbone, task, epochs=args.finetune_epochs, seed=args.seed)
    name = torch.cuda.get_device_name() if run.device.type == "cuda" else \
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(json.dumps({
        "device": name, "date": date.today().isoformat(), "torch": torch.__version__, "data": str(data),
        "train_images": len(run.splits.train), "test_images": len(run.splits.test), "backbone": args.backbone,
        "epochs": args.epochs, "batch_size": args.batch_size, "knn_k": args.knn_k, "seed": args.seed,
        "run_dir": str(run_dir), "checkpoints": rows, "rankme_orders_as_knn": ordering,
        "finetune_epochs": args.finetune_epochs, "finetune_seconds": round(time.perf_counter() - start, 1),
        "label_fractions": {key: round(value, 4) for key, value in fractions.items()
                            if key.endswith(("_top1", "_labels"))}}, indent=2))


if __name__ == "__main__":
    main()
