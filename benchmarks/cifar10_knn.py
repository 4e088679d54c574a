"""Time to accuracy: pretrain on CIFAR-10 and print kNN top-1 (k=200, t=0.1) and the training seconds
so far at chosen epochs, as JSON.

The default is lightly's CIFAR-10 SimCLR recipe, which is contrastkit's `simclr` recipe for
CIFAR-size images: ResNet-18 with the CIFAR stem, SGD lr 0.06 * batch / 128, momentum 0.9, weight
decay 5e-4, cosine over the run, temperature 0.5, projection 512-512-128, colour-jitter strength 0.5,
no blur. Evaluation time is not counted as training time.

    # on the GPU machine, with ../shared/data/cifar10-jpeg.npz copied next to the checkout
    PYTHONPATH=src python3 benchmarks/cifar10_knn.py --data-root cifar10-jpeg.npz --epochs 40 --eval-at 10 20 40
    # any config key can be added: ... method=byol compile=true
    # a smoke run on a CPU
    python benchmarks/cifar10_knn.py --dataset digits --epochs 2 --eval-at 1 2 --batch-size 128 knn_k=20
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.train import TrainerState, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-root", help="ImageFolder tree or packed-JPEG .npz of the dataset")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-at", type=int, nargs="+", help="epochs to evaluate at (default: the last)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. method=byol")
    args = parser.parse_args()
    eval_at = set(args.eval_at or [args.epochs])
    out = Path(args.out or tempfile.mkdtemp(prefix="cifar10-knn-")) / "run"
    values = dict(dataset=args.dataset, data_root=args.data_root, epochs=args.epochs, batch_size=args.batch_size,
                  out=str(out), evaluate=False, plot=False, progress=False, log_every=50, knn_k=200,
                  knn_temperature=0.1, raw_baseline=False)
    values.update(config_module.parse_overrides(args.overrides))
    config = config_module.update(config_module.Config(), values)
    points: list[dict] = []
    evaluator: list[runs.Run] = []  # built at the first evaluation, from the run folder

    def evaluate_at_chosen_epochs(state: TrainerState) -> None:
        if state.epoch not in eval_at:
            return
        if not evaluator:
            evaluator.append(runs.Run.load(out))
        run = evaluator[0]
        run.method.load_state_dict(load_checkpoint(out / "checkpoints" / "last.pt", map_location=run.device)["method"])
        summary = runs.evaluate(run, out, protocols=("knn",))
        point = {"epoch": state.epoch, "knn_top1": summary["knn_top1"], "train_seconds": round(state.train_seconds, 1)}
        print(json.dumps(point), flush=True)
        points.append(point)

    runs.train(config, callbacks=[evaluate_at_chosen_epochs])
    resolved = config_module.load_yaml(out / "config.yaml")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(json.dumps({"device": device, "date": date.today().isoformat(), "torch": torch.__version__,
                      "config": {key: resolved[key] for key in ("method", "dataset", "backbone", "batch_size", "lr",
                                                                "temperature", "optimizer", "precision", "compile",
                                                                "compile_mode", "augment_backend")},
                      "points": points}, indent=2))


if __name__ == "__main__":
    main()
