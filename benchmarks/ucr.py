"""TS2Vec on the UCR/UEA sets bundled with aeon: one fixed recipe, frozen-representation probes on the
official test split beside the archives' 1-NN baselines, as JSON (and a markdown table).

Every dataset trains with the ts2vec method's ``series`` recipe as it is (no per-dataset tuning,
seeds fixed) through :class:`contrastkit.train.Trainer`, as ``contrastkit train`` runs it. The
headline protocol, fixed beforehand, is TS2Vec's: an RBF SVM (C by cross-validation) on the
maximum over each whole series of the per-timestep representations. ``svm_pyramid`` scores the
same encoder on a temporal pyramid of maxima instead (``series.pooling=pyramid``; TS2Vec trains on
the timesteps, so the pooling changes nothing in training). kNN (k from the recipe, cosine) and the
linear probe of :mod:`contrastkit.evaluate` are reported beside them, and 1-NN with the Euclidean
distance and with full-window DTW on the series themselves.

    python benchmarks/ucr.py --markdown                 # all seven bundled sets, seed 0
    python benchmarks/ucr.py --datasets GunPoint ArrowHead --seeds 0 1 2 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch

from contrastkit.augment.series import series_preset
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.series import BUNDLED_SERIES, SeriesSplits, load_series
from contrastkit.evaluate.knn import knn_predict
from contrastkit.evaluate.linear import linear_probe
from contrastkit.evaluate.series import one_nn_dtw, one_nn_euclidean, svm_probe
from contrastkit.methods.ts2vec import TS2Vec
from contrastkit.models.backbones import create_backbone
from contrastkit.models.series import PyramidPooling
from contrastkit.train.optim import create_optimizer
from contrastkit.train.trainer import Trainer

COLUMNS = ("seed", "svm", "svm_pyramid", "knn", "linear", "one_nn_ed", "one_nn_dtw", "train_seconds",
           "eval_seconds")


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return round(float((predictions.cpu() == labels).float().mean()), 4)


def encode(encoder: torch.nn.Module, values: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The encoder's pooled representations (N, D) of whole series, in eval mode."""
    encoder.eval()
    with torch.inference_mode():
        return torch.cat([encoder(values[start:start + batch_size]) for start in range(0, len(values), batch_size)])


def run_dataset(splits: SeriesSplits, recipe: dict[str, Any], seed: int, epochs: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    method = TS2Vec(create_backbone(recipe["backbone"], in_channels=splits.channels))
    augment = method.configure_views(series_preset(recipe["preset"]))
    loader = DeviceLoader(splits.train.values, splits.train.labels, recipe["batch_size"], device="cpu", seed=seed,
                          drop_last=True)
    optimizer = create_optimizer(recipe["optimizer"], method.parameters(), lr=recipe["lr"],
                                 weight_decay=recipe["weight_decay"])
    trainer = Trainer(method, augment, loader, optimizer, epochs=epochs, warmup_epochs=recipe["warmup_epochs"],
                      lr_schedule=recipe["lr_schedule"], out_dir=None, progress=False)
    start = time.perf_counter()
    state = trainer.fit()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    # One pass per split: the pyramid's first level is the encoder's own maximum (tested equal).
    pyramid = PyramidPooling(method.backbone)
    pyramid_train, pyramid_test = (encode(pyramid, split.values) for split in (splits.train, splits.test))
    train_features, test_features = (features[:, :method.backbone.feature_dim] for features in (pyramid_train,
                                                                                                 pyramid_test))
    train_labels, test_labels = splits.train.labels, splits.test.labels
    row = {"dataset": splits.name, "seed": seed, "train": len(splits.train), "test": len(splits.test),
           "channels": splits.channels, "length": splits.length, "steps": state.step,
           "svm": accuracy(svm_probe(train_features, train_labels, test_features), test_labels),
           "knn": accuracy(knn_predict(train_features, train_labels, test_features, k=recipe["knn_k"]), test_labels),
           "linear": accuracy(linear_probe(train_features, train_labels, test_features), test_labels)}
    row["svm_pyramid"] = accuracy(svm_probe(pyramid_train, train_labels, pyramid_test), test_labels)
    row["one_nn_ed"] = accuracy(one_nn_euclidean(splits.train.values, train_labels, splits.test.values), test_labels)
    row["one_nn_dtw"] = accuracy(one_nn_dtw(splits.train.values, train_labels, splits.test.values), test_labels)
    row["train_seconds"] = round(train_seconds, 1)
    row["eval_seconds"] = round(time.perf_counter() - start, 1)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {row['dataset']} | " + " | ".join(str(row.get(column, "")) for column in COLUMNS) + " |"
              for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(BUNDLED_SERIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one row per dataset and seed")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    recipe = TS2Vec.recipes["series"]
    epochs = args.epochs or recipe["epochs"]
    rows, start = [], time.perf_counter()
    for name in args.datasets:
        splits = load_series(name)
        for seed in args.seeds:
            rows.append(run_dataset(splits, recipe, seed, epochs))
            print(json.dumps(rows[-1]), flush=True)
    result = {"method": "ts2vec", "recipe": recipe, "epochs": epochs, "seeds": args.seeds,
              "headline": "svm", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(),
              "total_seconds": round(time.perf_counter() - start, 1), "rows": rows}
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
