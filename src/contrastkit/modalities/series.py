"""Time series: UCR/UEA classification sets through aeon (NaN-padded, z-normalised, resident on the
device); a 1-D encoder pooled to one vector per series; series views; an RBF SVM (TS2Vec's protocol),
kNN and linear probes beside 1-NN Euclidean and 1-NN DTW on the raw series; k-means, class retrieval
and fine-tuning where asked for.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from contrastkit.augment.series import SERIES_PRESETS, series_preset
from contrastkit.config import Config
from contrastkit.data.series import BUNDLED_SERIES, SeriesSplits, list_series_datasets, load_series
from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import classification_metrics, knn_predict, linear_probe
from contrastkit.evaluate.series import one_nn_dtw, one_nn_euclidean, svm_probe
from contrastkit.methods import Method
from contrastkit.modalities.base import (Built, BuiltRun, Modality, fine_tune_results, format_fine_tune, frozen_scores,
                                         register_modality)
from contrastkit.models import create_backbone
from contrastkit.models.series import SERIES_POOLINGS, list_series_backbones, pooled


def series_name(dataset: str) -> str | None:
    """The UCR/UEA archive name ``dataset`` stands for (a name aeon bundles, in any case, or
    ``ucr:NAME`` / ``uea:NAME`` for any other), or None.

    Example:
        >>> series_name("gunpoint"), series_name("uea:Epilepsy"), series_name("digits")
        ('GunPoint', 'Epilepsy', None)
    """
    prefix, colon, name = dataset.partition(":")
    if colon and prefix.lower() in ("ucr", "uea") and name:
        return name
    return next((bundled for bundled in BUNDLED_SERIES if bundled.lower() == dataset.lower()), None)


class SeriesModality(Modality):
    """Univariate or multivariate series of one length (shorter ones NaN-padded), labelled."""

    name = "series"
    default_options = {"pooling": "max"}
    option_choices = {"pooling": SERIES_POOLINGS}
    option_descriptions = {"pooling": ("one vector per series as the maximum over its timesteps (max), or the maxima "
                                       "over it, its halves and its quarters, concatenated (pyramid)")}
    renamed_keys = {"series_pooling": "pooling"}
    # TS2Vec's encoder and batch; the sets are small (36 to 1,000 series).
    default_recipe = dict(backbone="ts2vec_cnn", batch_size=8, knn_k=5)

    def claims(self, dataset: str) -> bool:
        return series_name(dataset) is not None

    def datasets(self) -> list[str]:
        return [*list_series_datasets(), "ucr:<any UCR name>", "uea:<any UEA name> (online)"]

    def list_entries(self) -> dict[str, list[str]]:
        return {"backbones": list_series_backbones(), "presets": list(SERIES_PRESETS)}

    def build(self, config: Config, method_class: type[Method], splits: SeriesSplits | None,
              device: torch.device) -> Built:
        series_backbones = list_series_backbones()
        if config.backbone not in series_backbones:
            raise ContrastkitError(f"{config.dataset} holds time series, so its encoder is a series encoder "
                                   f"({', '.join(series_backbones)}), not {config.backbone!r}.")
        options = self.options(config.modality_options.get(self.name))
        splits = splits or load_series(series_name(config.dataset), data_root=config.data_root)
        torch.manual_seed(config.seed)
        backbone = pooled(create_backbone(config.backbone, in_channels=splits.channels), options["pooling"])
        method = method_class.from_config(backbone, config).to(device)
        preset_name = config.preset or "simclr"
        views = method.configure_views(series_preset(preset_name, **config.preset_options))
        return Built(splits, method, views.to(device), preset_name)

    def inputs(self, data: Any) -> Tensor:
        return data.values

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        """kNN, linear probe and an RBF SVM (TS2Vec's protocol) on the frozen representation of the
        official test split, beside 1-NN Euclidean and 1-NN DTW on the raw series; k-means and class
        retrieval of the representation, and fine-tuning beside training from scratch, where asked
        for (:func:`contrastkit.modalities.base.probe_results`)."""
        config = run.config
        num_classes = len(run.splits.classes)
        (train_x, train_y), (test_x, test_y) = run.features("train"), run.features("test")
        predictions = {"svm": svm_probe(train_x, train_y, test_x)}
        if "knn" in protocols:
            predictions["knn"] = knn_predict(train_x, train_y, test_x, k=min(config.knn_k, len(train_y)),
                                             temperature=config.knn_temperature, num_classes=num_classes)
        if "linear" in protocols:
            predictions["linear"] = linear_probe(train_x, train_y, test_x, num_classes=num_classes,
                                                 weight_decay=config.linear_weight_decay)
        if config.raw_baseline:
            raw_train, raw_test = run.splits.train.values, run.splits.test.values
            predictions["raw_1nn_euclidean"] = one_nn_euclidean(raw_train, train_y, raw_test)
            predictions["raw_1nn_dtw"] = one_nn_dtw(raw_train, train_y, raw_test)
        results: dict[str, Any] = {}
        for name, predicted in predictions.items():
            metrics = classification_metrics(test_y, predicted, num_classes=num_classes)
            results.update({f"{name}_{key}": round(value, 4) for key, value in metrics.items()})
        lines = [f"{'protocol':<20}{'top1':>8}{'f1':>8}"] + [
            f"{name:<20}{results[f'{name}_top1']:>8.4f}{results[f'{name}_f1']:>8.4f}" for name in predictions]
        # Clustering and retrieval of the representation; the raw series' NaN padding has no
        # distance of its own, so their baselines are the 1-NN rows above.
        for protocol, shown in (("kmeans", ("nmi", "ari")), ("class_retrieval", ("precision_at_1", "map_at_r"))):
            if protocol in protocols:
                metrics = frozen_scores(protocol, train_x, train_y, test_x, test_y, num_classes, config)
                results.update({f"{protocol}_{key}": round(value, 4) for key, value in metrics.items()})
                lines += [f"{f'{protocol}_{key}':<28}{results[f'{protocol}_{key}']:>8.4f}" for key in shown]
        if "finetune" in protocols:
            fine_tuned = fine_tune_results(self, run)
            results.update(fine_tuned)
            lines += ["", format_fine_tune(fine_tuned)]
        print("\n".join(lines), flush=True)
        return results


SERIES = register_modality(SeriesModality())
