"""Linear probe: multinomial logistic regression on frozen features, fitted with L-BFGS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.evaluate.knn import _check_split, _resolve_num_classes


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    batch_size: int = 65536,
    device: str | torch.device | None = None,
) -> Tensor:
    """Fit a linear classifier on standardised train features and return int64 test predictions.

    Features are standardised with the train mean/std, then one ``nn.Linear`` (zero-initialised)
    minimises mean cross-entropy + ``weight_decay / 2 * ||W||^2`` with full-batch L-BFGS
    (strong-Wolfe line search), as in CLIP's linear-probe protocol. The problem is convex, so
    the result does not depend on a seed, learning rate or schedule and is deterministic. On
    frozen features it matches ``sklearn.linear_model.LogisticRegression``; in our comparison
    it was both more accurate and faster than mini-batch AdamW with a cosine schedule. ``weight_decay`` is the one knob worth tuning (raise it
    when there are few samples per class). ``batch_size`` only bounds memory: the loss is
    accumulated over chunks of that many rows. Runs on ``device`` (default: the train
    features' device); predictions come back on that device.

    Example:
        >>> train = torch.randn(200, 8); labels = (train[:, 0] > 0).long()
        >>> preds = linear_probe(train, labels, train[:20])
        >>> preds.shape, preds.dtype
        (torch.Size([20]), torch.int64)
    """
    _check_split(train_features, train_labels, test_features)
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}; 1e-3 is a good start.")
    if max_iter < 1:
        raise ConfigError(f"max_iter must be >= 1, got {max_iter}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device) if device is not None else train_features.device
    classes = _resolve_num_classes(train_labels, num_classes, "train_labels")

    # Leaving inference mode lets callers pass features made under torch.inference_mode and
    # call this from inside no_grad/inference blocks; the copies made here are ordinary tensors.
    with torch.inference_mode(False), torch.enable_grad():
        labels = train_labels.to(device=device, dtype=torch.long, copy=True)
        train = train_features.to(device=device, dtype=torch.float32)
        mean = train.mean(dim=0)
        std = train.std(dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay at 0
        train = (train - mean) / std

        linear = nn.Linear(train.shape[1], classes, device=device)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        optimizer = torch.optim.LBFGS(
            linear.parameters(), lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
        )
        n = train.shape[0]

        def closure() -> Tensor:
            optimizer.zero_grad()
            total = torch.zeros((), device=device)
            for start in range(0, n, batch_size):
                chunk = slice(start, start + batch_size)
                loss = F.cross_entropy(linear(train[chunk]), labels[chunk], reduction="sum") / n
                loss.backward()
                total += loss.detach()
            penalty = 0.5 * weight_decay * linear.weight.square().sum()  # bias unpenalised, as in sklearn
            penalty.backward()
            return total + penalty.detach()

        optimizer.step(closure)

    with torch.no_grad():
        preds = torch.empty(test_features.shape[0], dtype=torch.long, device=device)
        for start in range(0, test_features.shape[0], batch_size):
            test = test_features[start : start + batch_size].to(device=device, dtype=torch.float32)
            preds[start : start + test.shape[0]] = linear((test - mean) / std).argmax(dim=1)
    return preds
