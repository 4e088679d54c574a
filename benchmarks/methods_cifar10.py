"""Pretrain every method with one short schedule and report kNN top-1, training time and peak memory,
as JSON: the method table of benchmarks/RESULTS.md.

Each method runs with its own CIFAR-size recipe (``contrastkit train --method NAME``), the same
backbone, epochs and batch size, then is scored by weighted kNN (k=200, t=0.1) on the test split.

    # the table (GPU; copy ../shared/data/cifar10-jpeg.npz next to the checkout first)
    PYTHONPATH=src python3 benchmarks/methods_cifar10.py --data-root cifar10-jpeg.npz --epochs 40
    # a smoke run on a CPU
    python benchmarks/methods_cifar10.py --dataset digits --epochs 10 --batch-size 128 --knn-k 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from contrastkit import runs
from contrastkit.config import Config, resolve
from contrastkit.methods import list_methods


def run_method(method: str, args: argparse.Namespace) -> dict:
    out = Path(args.out_dir) / f"{method}-{int(time.time())}"
    values = dict(method=method, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs,
                  batch_size=args.batch_size, device=args.device, out=str(out), evaluate=False, plot=False,
                  progress=False, log_every=50, knn_k=args.knn_k, knn_temperature=0.1, raw_baseline=False)
    config = resolve(Config(**values))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = runs.train(config)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    summary = runs.evaluate(runs.Run.load(run_dir), run_dir, protocols=("knn",))
    return {"method": method, "epochs": args.epochs, "batch_size": args.batch_size, "knn_k": args.knn_k,
            "knn_top1": summary["knn_top1"], "train_seconds": summary["train_seconds"],
            "peak_gpu_memory_gib": None if peak_gib is None else round(peak_gib, 2),
            "optimizer": config.optimizer, "lr": config.lr, "run_dir": str(run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list_methods())
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-root", help="ImageFolder tree or packed-JPEG .npz of the dataset")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--knn-k", type=int, default=200, help="kNN neighbours (200 for the CIFAR-10 table)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", default="runs/methods-benchmark")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    results = []
    for method in args.methods:
        result = run_method(method, args)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(json.dumps({"device": device, "date": date.today().isoformat(), "torch": torch.__version__,
                      "dataset": args.dataset, "results": results}, indent=2))


if __name__ == "__main__":
    main()
