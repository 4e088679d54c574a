"""User-item interactions (recommendation): MovieLens-100K from the installed ``recbole`` package or a
CSV / TSV / RecBole ``.inter`` / Parquet table of (user, item[, rating, timestamp]); ID embeddings
over the training graph as the backbone; negatives drawn per row as the views; full-ranking Recall,
NDCG, Hit and MRR at 10 and 20 beside item popularity as the evaluation.

    contrastkit train --dataset ml-100k --method lightgcn            # or bpr_mf, simgcl, xsimgcl, two_tower
    contrastkit train --dataset ratings.csv modality=interactions interactions.threshold=4 interactions.split=time
    contrastkit embed RUN_DIR --out DIR                              # users' then items' embeddings

``embed`` writes every user's embedding, then every item's (rows 0..U-1 are the users in the order
of their sorted raw ids, then the items the same way), and as labels 0 for a user's row, 1 for an
item's; the train and test splits give the same rows, the embeddings being those of the whole graph.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from contrastkit.config import Config
from contrastkit.data.device_loader import BatchLoader, DeviceLoader
from contrastkit.data.interactions import (NAMED_DATASETS, SPLITS, InteractionSplits, Interactions,
                                           NegativeSampler, load_interactions)
from contrastkit.errors import ConfigError
from contrastkit.evaluate.ranking import embedding_scores, popularity_scores, ranking_metrics, similar_items
from contrastkit.methods import Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, register_modality
from contrastkit.models.recsys import InteractionEmbeddings

BACKBONE = "id_embeddings"
PRESET = "uniform_negatives"
KS = (10, 20)
SHOWN = ("recall", "ndcg", "hit", "mrr")


class InteractionsModality(Modality):
    """Implicit-feedback interactions, split per user into train, validation and test."""

    name = "interactions"
    raw_name = "popularity"
    default_options = {"threshold": None, "split": "random", "embedding_dim": 64, "user_features": None,
                       "item_features": None}
    option_choices = {"split": SPLITS}
    option_descriptions = {
        "threshold": "keep the interactions rated at least this (implicit feedback); null keeps all",
        "split": ("random: 8/1/1 of each user's interactions in a seeded order (RecBole's RS); time: leave-one-out "
                  "by time, the last to test, the one before to validation"),
        "embedding_dim": "width of the user and item ID embeddings",
        "user_features": ("a CSV / TSV of the users' categorical features, ids in its first column (two_tower's "
                          "feature towers); ml-100k has its own"),
        "item_features": "the same for the items",
    }
    # RecBole's and SELFRec's setting: Adam at 1e-3 on 2048 rows, no weight decay (the methods add
    # their own L2 term), a constant rate.
    default_recipe = dict(backbone=BACKBONE, epochs=100, batch_size=2048, optimizer="adamw", lr=1e-3,
                          weight_decay=0.0, lr_schedule="constant", warmup_epochs=0.0, head="identity")

    def claims(self, dataset: str) -> bool:
        return dataset in NAMED_DATASETS or dataset.endswith(".inter")

    def datasets(self) -> list[str]:
        return [*NAMED_DATASETS, "<file>.inter", "<file>.csv|.tsv|.parquet with modality=interactions"]

    def list_entries(self) -> dict[str, list[str]]:
        return {"backbones": [BACKBONE], "presets": [PRESET]}

    def build(self, config: Config, method_class: type[Method], splits: InteractionSplits | None,
              device: torch.device) -> Built:
        if config.backbone != BACKBONE:
            raise ConfigError(f"{config.dataset} holds user-item interactions, whose encoder is {BACKBONE}, not "
                              f"{config.backbone!r}; drop backbone= or set backbone={BACKBONE}.")
        if config.preset not in (None, PRESET):
            raise ConfigError(f"interaction data has one view preset, {PRESET} (each method draws its negatives), "
                              f"not {config.preset!r}; drop preset=.")
        options = self.options(config.modality_options.get(self.name))
        splits = splits or load_interactions(config.dataset, threshold=options["threshold"], split=options["split"],
                                             seed=config.seed, data_root=config.data_root,
                                             user_features=options["user_features"],
                                             item_features=options["item_features"])
        torch.manual_seed(config.seed)
        backbone = InteractionEmbeddings(splits.num_users, splits.num_items, options["embedding_dim"],
                                         splits.train.users, splits.train.items, splits.user_features,
                                         splits.item_features)
        method = method_class.from_config(backbone, config).to(device)
        views = method.configure_views(NegativeSampler(splits.train, splits.num_items)).to(device)
        return Built(splits, method, views, PRESET)

    def inputs(self, data: Interactions) -> Tensor:
        return data.pairs()

    def loader(self, run: BuiltRun) -> BatchLoader:
        train, config = run.splits.train, run.config
        return DeviceLoader(self.inputs(train), torch.zeros(len(train), dtype=torch.long), config.batch_size,
                            device=run.device, seed=config.seed)

    def features(self, run: BuiltRun, data: Any) -> tuple[Tensor, Tensor]:
        users, items = _embeddings(run)
        labels = torch.cat([torch.zeros(len(users), dtype=torch.long), torch.ones(len(items), dtype=torch.long)])
        return torch.cat([users, items]), labels

    def fine_tune_task(self, run: BuiltRun) -> None:
        print("note: a recommender has no class labels to fine-tune on; it is scored by ranking.", flush=True)
        return None

    def raw_inputs(self, run: BuiltRun) -> None:
        return None

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        return False

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """Full-ranking Recall, NDCG, Hit and MRR at 10 and 20 on the test split (training and
        validation items masked) and on the validation split (training items masked), beside the
        same for item popularity (``raw_`` keys, with ``raw_baseline``); the ``protocols`` of
        labelled data do not apply. Prints the nearest items of the three most popular ones."""
        splits: InteractionSplits = run.splits
        users, items = _embeddings(run)
        scorers = {"": embedding_scores(users.to(run.device), items.to(run.device))}
        train = splits.train.pairs()
        if run.config.raw_baseline:
            scorers["raw_"] = popularity_scores(train, splits.num_items)
        phases = {"": (splits.test.pairs(), torch.cat([train, splits.valid.pairs()])),
                  "valid_": (splits.valid.pairs(), train)}
        results: dict[str, Any] = {}
        for prefix, score in scorers.items():
            for phase, (truth, seen) in phases.items():
                if not len(truth):
                    continue
                metrics = ranking_metrics(score, num_users=splits.num_users, num_items=splits.num_items, truth=truth,
                                          seen=seen, ks=KS, device=run.device)
                results.update({f"{prefix}{phase}{key}": round(value, 4) for key, value in metrics.items()})
        print(_table(results), flush=True)
        popular = torch.bincount(train[:, 1], minlength=splits.num_items).topk(min(3, splits.num_items)).indices
        for query, neighbours in zip(popular.tolist(), similar_items(items, popular, k=5).tolist()):
            names = "; ".join(splits.item_titles[item] for item in neighbours)
            print(f"nearest to {splits.item_titles[query]}: {names}", flush=True)
        return results


def _embeddings(run: BuiltRun) -> tuple[Tensor, Tensor]:
    """The trained users' and items' embeddings (float32, CPU)."""
    method = run.method
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            users, items = method.user_item_embeddings()
    finally:
        method.train(was_training)
    return users.float().cpu(), items.float().cpu()


def _table(results: dict[str, Any]) -> str:
    """The test figures as rows of metric@K, the model beside popularity where it was scored."""
    raw = any(key.startswith("raw_") for key in results)
    lines = [f"{'test':<14}{'model':>9}" + (f"{InteractionsModality.raw_name:>12}" if raw else "")]
    for k in KS:
        for name in SHOWN:
            key = f"{name}@{k}"
            if key in results:
                lines.append(f"{key:<14}{results[key]:>9.4f}" + (f"{results[f'raw_{key}']:>12.4f}" if raw else ""))
    return "\n".join(lines)


INTERACTIONS = register_modality(InteractionsModality())
