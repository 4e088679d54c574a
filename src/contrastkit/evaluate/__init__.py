"""Evaluation of learned representations: feature extraction (images, sentences), kNN and linear
probes, fine-tuning with a fraction of the labels, clustering, class retrieval, health metrics,
zero-shot classification, STS Spearman, retrieval recall, metrics, plots.

Depends only on torch, numpy, scikit-learn and matplotlib (never on contrastkit.train,
contrastkit.methods or contrastkit.cli).
"""

from contrastkit.evaluate.class_retrieval import class_retrieval_scores
from contrastkit.evaluate.clustering import kmeans_scores
from contrastkit.evaluate.features import extract_features, extract_text_features
from contrastkit.evaluate.fine_tune import (LABEL_FRACTIONS, FineTuneTask, class_balanced_subset, fine_tune,
                                            label_fraction_scores, reinitialised)
from contrastkit.evaluate.health import (alignment, collapse_state, embedding_std, health_metrics,
                                         positive_negative_gap, rankme, rankme_fraction, uniformity)
from contrastkit.evaluate.knn import knn_predict
from contrastkit.evaluate.linear import linear_probe
from contrastkit.evaluate.metrics import classification_metrics, confusion_matrix
from contrastkit.evaluate.plots import plot_embedding, plot_training_curves
from contrastkit.evaluate.retrieval import retrieval_recall
from contrastkit.evaluate.state_probe import (StateProbes, category_mean, probe_f1, state_probe_scores,
                                              train_state_probes, weighted_f1)
from contrastkit.evaluate.sts import spearman, sts_spearman
from contrastkit.evaluate.zero_shot import zero_shot_classifier, zero_shot_predict

__all__ = [
    "FineTuneTask",
    "LABEL_FRACTIONS",
    "alignment",
    "class_balanced_subset",
    "class_retrieval_scores",
    "classification_metrics",
    "collapse_state",
    "confusion_matrix",
    "embedding_std",
    "extract_features",
    "extract_text_features",
    "fine_tune",
    "health_metrics",
    "kmeans_scores",
    "knn_predict",
    "label_fraction_scores",
    "linear_probe",
    "plot_embedding",
    "plot_training_curves",
    "positive_negative_gap",
    "rankme",
    "rankme_fraction",
    "reinitialised",
    "retrieval_recall",
    "spearman",
    "sts_spearman",
    "uniformity",
    "zero_shot_classifier",
    "zero_shot_predict",
    "StateProbes", "category_mean", "probe_f1", "state_probe_scores", "train_state_probes", "weighted_f1",
]
