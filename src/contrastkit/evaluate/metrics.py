"""Classification metrics in torch: accuracy, macro precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import ConfigError, InputError

LabelsLike = Tensor | np.ndarray


def _as_labels(name: str, labels: LabelsLike) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise InputError(f"{name} must be 1-D (N,), got shape {tuple(labels.shape)}; flatten it.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {labels.dtype}; convert with .long().")
    if labels.numel() and int(labels.min()) < 0:
        raise InputError(f"{name} holds negative values; class indices must be in [0, num_classes).")
    return labels.long()


def _pair(y_true: LabelsLike, y_pred: LabelsLike, num_classes: int | None) -> tuple[Tensor, Tensor, int]:
    true = _as_labels("y_true", y_true)
    pred = _as_labels("y_pred", y_pred).to(true.device)
    if true.shape != pred.shape:
        raise InputError(
            f"y_true has {true.shape[0]} labels but y_pred has {pred.shape[0]}; pass one prediction per label."
        )
    if true.numel() == 0:
        raise InputError("y_true is empty; metrics need at least one label.")
    top = int(torch.maximum(true.max(), pred.max())) + 1
    if num_classes is None:
        num_classes = top
    elif num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}.")
    elif top > num_classes:
        raise InputError(f"labels reach class {top - 1} but num_classes={num_classes}; raise num_classes.")
    return true, pred, num_classes


def confusion_matrix(y_true: LabelsLike, y_pred: LabelsLike, num_classes: int | None = None) -> Tensor:
    """Return the int64 (C, C) confusion matrix: entry [i, j] counts true class i predicted as j.

    Same layout as ``sklearn.metrics.confusion_matrix``; ``num_classes`` defaults to the
    largest label + 1.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
        tensor([[1, 0],
                [1, 1]])
    """
    true, pred, num_classes = _pair(y_true, y_pred, num_classes)
    counts = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def classification_metrics(
    y_true: LabelsLike, y_pred: LabelsLike, num_classes: int | None = None
) -> dict[str, float]:
    """Return ``top1`` accuracy and macro ``precision``, ``recall`` and ``f1``.

    Macro averages run over the classes that occur in ``y_true`` or ``y_pred``; a class
    never predicted has precision 0 and one never true has recall 0, matching
    ``sklearn.metrics.precision_recall_fscore_support(average="macro", zero_division=0)``.

    Example:
        >>> m = classification_metrics(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2]))
        >>> round(m["top1"], 2), round(m["recall"], 3)
        (0.75, 0.667)
    """
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    tp = cm.diagonal()
    true_count = cm.sum(dim=1)
    pred_count = cm.sum(dim=0)
    present = (true_count + pred_count) > 0
    # clamp_min(1) turns 0/0 into 0/1 = 0: the zero_division=0 convention.
    precision = tp / pred_count.clamp_min(1)
    recall = tp / true_count.clamp_min(1)
    f1 = 2 * tp / (true_count + pred_count).clamp_min(1)
    return {
        "top1": float(tp.sum() / cm.sum()),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
    }
