"""Recommenders on MovieLens-100K, one fixed protocol, as JSON: contrastkit's popularity, BPR-MF,
LightGCN (BPR and in-batch softmax), two-tower, SimGCL and XSimGCL beside RecBole's own BPR and
LightGCN trained on the same split in the same script.

The protocol: every rating is an interaction (RecBole's ML-100K quick start); each user's
interactions split 8/1/1 at random from the seed (RecBole's ``RS``); full ranking over all items
with the user's training and validation items masked; Recall@20 and NDCG@20 (with @10) on the test
split of the model after the last epoch (no early stopping on either side); Adam at lr 1e-3, batches
of 2048 (512 for the in-batch softmax rows), 64-d embeddings, one uniform negative per row, the same
epochs for every model. contrastkit runs go through ``contrastkit.runs.train``, as
``contrastkit train --dataset ml-100k --method M`` does. RecBole 1.2.1 reads the split from
``benchmark_filename`` files written to a temporary folder (ML-100K may not be redistributed: they
are deleted afterwards).

RecBole needs its dependencies beside the project's environment, not in it::

    pip install --no-deps recbole==1.2.1                     # the data (and RecBole's code)
    pip install --target /tmp/rb --no-deps colorlog==4.7.2 colorama==0.4.4 thop tabulate texttable
    PYTHONPATH=/tmp/rb:src python benchmarks/recsys.py --epochs 100 > recsys.json

Shims let RecBole 1.2.1 run on today's stack, patched here and not in RecBole: SciPy 1.12+ dropped
``dok_matrix._update`` (RecBole's LightGCN builds its graph with it), NumPy 2 the ``np.float_``
names its config aliases; ``recbole.quick_start`` (which imports ray) is not used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from contrastkit import runs
from contrastkit.config import Config
from contrastkit.data.interactions import InteractionSplits, load_interactions

# Each row of the table: the method, its options and config keys (the rest is the method's recipe
# as it is). The in-batch softmax rows take batches of 512: their B x B logits make a step of 2048
# rows 16 times dearer, and 512 in-batch negatives already rank well.
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "bpr_mf": ("bpr_mf", {}, {}), "lightgcn": ("lightgcn", {}, {}),
    "lightgcn_softmax": ("lightgcn", {"loss": "softmax"}, {"batch_size": 512}),
    "two_tower": ("two_tower", {}, {}), "simgcl": ("simgcl", {}, {}), "xsimgcl": ("xsimgcl", {}, {})}
RECBOLE_MODELS = ("BPR", "LightGCN")


def contrastkit_run(name: str, epochs: int, seed: int, folder: Path) -> dict[str, Any]:
    """Train the row ``name`` of RUNS through the application and read its summary."""
    method, options, keys = RUNS[name]
    config = Config(dataset="ml-100k", method=method, epochs=epochs, seed=seed, device="cpu", progress=False,
                    plot=False, out=str(folder / name), method_options=options, **keys)
    # The run's own lines go to stderr, so that stdout holds the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        folder = runs.train(config)
    return json.loads((folder / "summary.json").read_text())


def _recbole_shims() -> None:
    import numpy as np
    import scipy.sparse as sp

    # RecBole's config aliases np.float = np.float_ and the like, names NumPy 2 removed.
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):
            setattr(np, old, new)

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self: Any, entries: dict) -> None:
            for key, value in entries.items():
                self[key] = value

        sp.dok_matrix._update = _update


def write_benchmark_files(splits: InteractionSplits, folder: Path, name: str) -> None:
    """The split as RecBole's ``NAME.train.inter`` / ``.valid.inter`` / ``.test.inter`` (raw ids)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        data = getattr(splits, part)
        lines = ["user_id:token\titem_id:token"] + [
            f"{splits.user_ids[user]}\t{splits.item_ids[item]}"
            for user, item in zip(data.users.tolist(), data.items.tolist())]
        (folder / name / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n")


def recbole_run(model_name: str, splits: InteractionSplits, epochs: int, seed: int, folder: Path) -> dict[str, Any]:
    """Train RecBole's ``model_name`` on the split and score it on the test file."""
    _recbole_shims()
    from recbole.config import Config as RecBoleConfig
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    name = "ml100kbench"
    write_benchmark_files(splits, folder, name)
    settings = {
        "data_path": str(folder), "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]}, "epochs": epochs, "train_batch_size": 2048,
        "learning_rate": 1e-3, "embedding_size": 64, "seed": seed, "reproducibility": True, "device": "cpu",
        "use_gpu": False, "show_progress": False, "metrics": ["Recall", "NDCG"], "topk": [10, 20],
        "valid_metric": "NDCG@20", "eval_step": 0, "stopping_step": epochs + 1,
        "checkpoint_dir": str(folder / "saved"), "eval_args": {"mode": "full", "group_by": "user", "order": "RO"},
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}, "state": "WARNING",
        "log_wandb": False,
    }
    config = RecBoleConfig(model=model_name, dataset=name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(1)  # RecBole's init_seed leaves it; set after RecBole's config, which may change it
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.perf_counter()
    trainer.fit(train_data, None, saved=False, show_progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {"recall@20": round(float(scores["recall@20"]), 4), "ndcg@20": round(float(scores["ndcg@20"]), 4),
            "recall@10": round(float(scores["recall@10"]), 4), "ndcg@10": round(float(scores["ndcg@10"]), 4),
            "train_seconds": round(train_seconds, 2), "eval_seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs of every model (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every model")
    parser.add_argument("--methods", nargs="*", default=list(RUNS), choices=list(RUNS),
                        help="contrastkit rows to run (default all)")
    parser.add_argument("--recbole", nargs="*", default=list(RECBOLE_MODELS), help="RecBole models to run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_interactions("ml-100k", seed=args.seed)
    results: dict[str, Any] = {
        "benchmark": "recsys", "dataset": "ml-100k", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/recsys.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": f"cpu ({platform.processor() or platform.machine()}), {args.threads} thread(s)",
        "torch": torch.__version__,
        "protocol": {"split": "random 8/1/1 per user", "seed": args.seed, "threshold": None, "epochs": args.epochs,
                     "batch_size": 2048, "lr": 1e-3, "embedding_dim": 64, "ranking": "full, train+valid masked",
                     "users": splits.num_users, "items": splits.num_items, "train": len(splits.train),
                     "valid": len(splits.valid), "test": len(splits.test)},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for method in args.methods:
            summary = contrastkit_run(method, args.epochs, args.seed, folder)
            if "popularity" not in results["models"]:
                results["models"]["popularity"] = {key: summary[f"raw_{key}"] for key in
                                                   ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}
            results["models"][f"contrastkit {method}"] = {
                **{key: summary[key] for key in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")},
                "train_seconds": summary["train_seconds"], "eval_seconds": summary["eval_seconds"]}
            print(json.dumps({method: results["models"][f"contrastkit {method}"]}), file=sys.stderr, flush=True)
        for model_name in args.recbole:
            # RecBole writes log_tensorboard/ into the working folder: the temporary one, not the caller's.
            here = os.getcwd()
            os.chdir(folder)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    scores = recbole_run(model_name, splits, args.epochs, args.seed, folder / "recbole")
            finally:
                os.chdir(here)
            results["models"][f"recbole {model_name}"] = scores
            print(json.dumps({model_name: results["models"][f"recbole {model_name}"]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
