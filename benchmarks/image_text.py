"""Image-text training from the CLI's own path (runs.train), side by side in one process: LiT (CLIP
loss, the offline MiniLM text tower locked), SigLIP with the same locked tower, and CLIP with both
towers training. Each run's zero-shot top-1 / macro-F1 on the test split (prompts from the class
templates; chance is 1 / classes), the image tower's kNN and linear-probe top-1, and its training
seconds, as one JSON line per run and a summary object.

Every run uses the method's image-text recipe (AdamW lr 1e-3, weight decay 0.1, projection 256,
40 epochs, one crop-and-flip view; digits: crop and rotation) with the same seed.

    python benchmarks/image_text.py                                    # digits, on this machine
    python benchmarks/image_text.py --dataset cifar10 --data-root ../shared/data --runs lit_clip
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch

from contrastkit import runs
from contrastkit.config import Config, resolve

RUNS = {"lit_clip": ("clip", {"lock_text": True}), "lit_siglip": ("siglip", {"lock_text": True}),
        "clip": ("clip", {})}
KEYS = ("zero_shot_top1", "zero_shot_f1", "knn_top1", "linear_top1", "train_seconds", "eval_seconds")


def run_one(name: str, args: argparse.Namespace, folder: Path) -> dict:
    method, options = RUNS[name]
    overrides = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size))
                 if value is not None}
    config = resolve(Config(method=method, dataset=args.dataset, data_root=args.data_root, method_options=options,
                            seed=args.seed, device=args.device, progress=False, plot=False, raw_baseline=False,
                            out=str(folder / name), **overrides))
    summary = json.loads((runs.train(config) / "summary.json").read_text())
    return {"run": name, "method": method, **options, "epochs": config.epochs, "batch_size": config.batch_size,
            **{key: summary.get(key) for key in KEYS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--epochs", type=int, default=None, help="unset: the recipe's (40)")
    parser.add_argument("--batch-size", type=int, default=None, help="unset: the dataset's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.runs:
            rows.append(run_one(name, args, Path(folder)))
            print(json.dumps(rows[-1]), flush=True)
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else platform.processor()
    print(json.dumps({"benchmark": "image_text", "dataset": args.dataset, "date": str(date.today()),
                      "device": device or platform.machine(), "torch": torch.__version__, "runs": rows}))


if __name__ == "__main__":
    main()
