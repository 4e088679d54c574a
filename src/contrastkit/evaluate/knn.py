"""Weighted k-nearest-neighbour classification of frozen features (InstDisc-style kNN monitor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_finite, check_ndim
from contrastkit.errors import ConfigError, InputError


def _check_labels(name: str, labels: Tensor, n: int, features_name: str) -> None:
    check_ndim(name, labels, 1, "(N,)")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {labels.dtype}; convert with .long().")
    if labels.shape[0] != n:
        raise InputError(
            f"{name} has {labels.shape[0]} entries but {features_name} has {n} rows; pass one label per row."
        )


def _resolve_num_classes(labels: Tensor, num_classes: int | None, name: str) -> int:
    """Return ``num_classes`` (default: largest label + 1) after checking the non-empty ``labels`` fit it."""
    if int(labels.min()) < 0:
        raise InputError(f"{name} holds negative values; class indices must be in [0, num_classes).")
    top = int(labels.max()) + 1
    if num_classes is None:
        return top
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}.")
    if top > num_classes:
        raise InputError(
            f"{name} holds class {top - 1} but num_classes={num_classes}; raise num_classes or fix the labels."
        )
    return num_classes


def _check_split(train_features: Tensor, train_labels: Tensor, test_features: Tensor) -> None:
    """Validate a (train features, train labels, test features) triple; shared with the linear probe."""
    check_ndim("train_features", train_features, 2, "(N_train, D)")
    check_ndim("test_features", test_features, 2, "(N_test, D)")
    if train_features.shape[1] != test_features.shape[1]:
        raise InputError(
            f"train_features has D={train_features.shape[1]} but test_features has D={test_features.shape[1]}; "
            "extract both with the same encoder."
        )
    if train_features.shape[0] == 0:
        raise InputError("train_features is empty; pass at least one training row.")
    _check_labels("train_labels", train_labels, train_features.shape[0], "train_features")
    check_finite("train_features", train_features)
    check_finite("test_features", test_features)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Predict test labels by a weighted vote of the ``k`` most cosine-similar training features.

    Features are L2-normalised; each of a test row's top-``k`` neighbours votes for its
    label with weight ``exp(similarity / temperature)`` and the class with the largest
    summed vote wins (ties go to the lowest class index). ``k`` larger than the training
    set is clipped to it. Test rows are processed ``chunk_size`` at a time, so memory is
    O(chunk_size * N_train), on ``train_features``' device (test chunks are moved there).
    Half-precision features are compared in float32; float32/float64 keep their dtype.

    Returns:
        int64 predicted labels of shape (N_test,), on ``train_features``' device.

    Example:
        >>> train = torch.randn(100, 16); labels = torch.randint(0, 5, (100,))
        >>> knn_predict(train, labels, train[:10], k=20).shape
        torch.Size([10])
    """
    _check_split(train_features, train_labels, test_features)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}.")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}; 0.1 is a common choice.")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}.")
    device = train_features.device
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    labels = train_labels.to(device=device, dtype=torch.long)
    classes = _resolve_num_classes(labels, num_classes, "train_labels")
    train = F.normalize(train_features.to(dtype), dim=1)
    k = min(k, train.shape[0])

    preds = torch.empty(test_features.shape[0], dtype=torch.long, device=device)
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].to(device=device, dtype=dtype), dim=1)
        sims, idx = (test @ train.T).topk(k, dim=1)
        # Subtracting each row's best similarity leaves the argmax unchanged but keeps
        # exp() finite for small temperatures (exp(1 / 0.01) overflows float32).
        weights = ((sims - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(test.shape[0], classes, dtype=dtype, device=device)
        votes.scatter_add_(1, labels[idx], weights)
        preds[start : start + test.shape[0]] = votes.argmax(dim=1)
    return preds
