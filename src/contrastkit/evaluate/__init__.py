"""Evaluation of learned representations: feature extraction (images, sentences), kNN and linear
probes, zero-shot classification, STS Spearman, retrieval recall, metrics, plots.

Depends only on torch, numpy, scikit-learn and matplotlib (never on contrastkit.train,
contrastkit.methods or contrastkit.cli).
"""

from contrastkit.evaluate.features import extract_features, extract_text_features
from contrastkit.evaluate.knn import knn_predict
from contrastkit.evaluate.linear import linear_probe
from contrastkit.evaluate.metrics import classification_metrics, confusion_matrix
from contrastkit.evaluate.plots import plot_embedding, plot_training_curves
from contrastkit.evaluate.retrieval import retrieval_recall
from contrastkit.evaluate.sts import spearman, sts_spearman
from contrastkit.evaluate.zero_shot import zero_shot_classifier, zero_shot_predict

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "extract_features",
    "extract_text_features",
    "knn_predict",
    "linear_probe",
    "plot_embedding",
    "plot_training_curves",
    "retrieval_recall",
    "spearman",
    "sts_spearman",
    "zero_shot_classifier",
    "zero_shot_predict",
]
