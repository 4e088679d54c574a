"""Triplet miners: choose (anchor, positive, negative) index triplets inside a labelled batch.

With D the distance between embeddings, a valid triplet (a, p, n) has a != p, label(a) == label(p)
and label(n) != label(a); its triplet loss is max(0, D(a,p) - D(a,n) + margin). The miners return
index tensors and never carry gradients; the loss is then computed on the chosen rows. A batch
without a valid triplet (every label distinct, a single class, no rows at all) gives three empty
tensors, never an error: with randomly drawn batches it happens by chance (pytorch-metric-learning's
miners return empty index tensors too).

- batch all (Hermans et al., 2017): every valid triplet (optionally only those with loss > 0);
- batch hard (Hermans et al., 2017): per anchor its farthest positive and its nearest negative;
- semi-hard (Schroff et al., 2015, FaceNet): per (a, p) the nearest negative with
  D(a,p) < D(a,n) < D(a,p) + margin;
- hard negatives from a bank: per anchor the k nearest entries of a memory bank with another label.

The three batch miners accept an optional memory bank: its rows join the candidate negatives, and a
negative index n then points into ``torch.cat([embeddings, bank])``. Choosing the triplets needs
one host sync (their number depends on the data).

This module also holds the distance helpers shared by the triplet and pairwise losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_class_labels, check_count, check_embeddings, check_ndim, check_positive
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import full_precision, loss_dtype

DISTANCES = ("euclidean", "squared_euclidean", "cosine")


def _check_distance(distance: str, allowed: tuple[str, ...] = DISTANCES) -> None:
    if distance not in allowed:
        raise ConfigError(f"distance must be one of {allowed}, got {distance!r}.")


def _safe_sqrt(squared: Tensor) -> Tensor:
    # sqrt has an infinite derivative at 0 (identical points), which backward turns into NaN.
    # Take the root only of positive entries and give 0 elsewhere: exact values, and a zero
    # gradient at 0, which is a valid subgradient of the norm there.
    positive = squared > 0
    root = torch.where(positive, squared, torch.ones_like(squared)).sqrt()
    return torch.where(positive, root, torch.zeros_like(squared))


def _paired_distances(x: Tensor, y: Tensor, distance: str) -> Tensor:
    """Distances D(x[i], y[i]) between matching rows of two (N, D) tensors, shape (N,)."""
    if distance == "cosine":
        return 1 - (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(dim=1)
    squared = (x - y).pow(2).sum(dim=1)
    return squared if distance == "squared_euclidean" else _safe_sqrt(squared)


def _distance_matrix(x: Tensor, y: Tensor, distance: str) -> Tensor:
    """All distances D(x[i], y[j]), shape (N, M), in float32 (float64 for float64 inputs).

    Uses the matrix-product expansion |x|^2 + |y|^2 - 2 x.y, which is fast but loses a few digits
    for near-identical points; the miners only rank these values, the losses recompute exact
    distances of the chosen rows with :func:`_paired_distances`.
    """
    dtype = loss_dtype(x)
    x, y = x.to(dtype), y.to(dtype)
    # Autocast would run the matrix product in bf16 and create ties between close candidates.
    with full_precision(x):
        if distance == "cosine":
            return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
        squared = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
    return squared if distance == "squared_euclidean" else squared.sqrt()


def _check_labelled(embeddings: Tensor, labels: Tensor, name: str = "embeddings",
                    labels_name: str = "labels") -> None:
    check_embeddings(name, embeddings)
    check_ndim(labels_name, labels, 1, "(batch,)")
    check_class_labels(labels_name, labels)
    if labels.shape[0] != embeddings.shape[0]:
        raise InputError(f"{name} has {embeddings.shape[0]} rows but {labels_name} has "
                         f"{labels.shape[0]} entries; give one label per row.")


def _negative_pool(embeddings: Tensor, labels: Tensor, bank: Tensor | None,
                   bank_labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The labels on the embeddings' device, and the candidate negatives with their labels: the
    batch, followed by the bank when there is one."""
    _check_labelled(embeddings, labels)
    labels = labels.to(embeddings.device)
    if (bank is None) != (bank_labels is None):
        raise InputError("bank and bank_labels go together; give both or neither.")
    if bank is None:
        return labels, embeddings, labels
    _check_labelled(bank, bank_labels, "bank", "bank_labels")
    if bank.shape[1] != embeddings.shape[1]:
        raise InputError(f"bank has dim {bank.shape[1]} but the embeddings have dim "
                         f"{embeddings.shape[1]}; both must come from the same embedding head.")
    pool = torch.cat([embeddings, bank.to(device=embeddings.device, dtype=embeddings.dtype)])
    return labels, pool, torch.cat([labels, bank_labels.to(embeddings.device)])


def _label_masks(labels: Tensor, pool_labels: Tensor) -> tuple[Tensor, Tensor]:
    """(N, N) mask of valid positives (same label, not the anchor) and (N, M) mask of negatives."""
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    return same, labels[:, None] != pool_labels[None, :]


def _no_triplets(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The empty (a, p, n) of a batch without rows, whose per-anchor argmin and argmax over an
    empty dimension would raise an IndexError."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty.clone(), empty.clone()


def _has_valid_triplet(labels: Tensor, pool_labels: Tensor) -> bool:
    """Whether some anchor has both a positive and a negative (one host sync)."""
    positive, negative = _label_masks(labels, pool_labels)
    return bool((positive.any(dim=1) & negative.any(dim=1)).any())


@torch.no_grad()
def batch_all_triplets(embeddings: Tensor, labels: Tensor, *, distance: str = "euclidean",
                       margin: float | None = None, bank: Tensor | None = None,
                       bank_labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Every valid triplet of a labelled batch (the "batch all" strategy).

    Builds an (N, N, N + K) mask, so with a large bank prefer :func:`batch_hard_triplets`.

    Args:
        embeddings: (N, D) floating-point embeddings.
        labels: (N,) integer class labels.
        distance: "euclidean", "squared_euclidean" or "cosine" (1 - cosine similarity).
        margin: when given (>= 0), keep only the triplets whose loss D(a,p) - D(a,n) + margin
            is > 0.
        bank, bank_labels: optional (K, D) memory bank and its (K,) labels; its rows join the
            candidate negatives.

    Returns:
        LongTensors (a, p, n), sorted by anchor; a and p index ``embeddings``, n indexes
        ``torch.cat([embeddings, bank])``. All three are empty when the batch has no valid triplet.

    Example:
        >>> a, p, n = batch_all_triplets(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> a.shape
        torch.Size([24])
    """
    _check_distance(distance)
    if margin is not None:
        check_positive("margin", margin, "triplets with D(a,p) - D(a,n) + margin <= 0 are left out.",
                       allow_zero=True)
    labels, pool, pool_labels = _negative_pool(embeddings, labels, bank, bank_labels)
    positive, negative = _label_masks(labels, pool_labels)
    valid = positive[:, :, None] & negative[:, None, :]
    if margin is not None:
        distances = _distance_matrix(embeddings, pool, distance)
        to_positive = distances[:, :embeddings.shape[0]]
        valid &= to_positive[:, :, None] - distances[:, None, :] + margin > 0
    return valid.nonzero(as_tuple=True)


@torch.no_grad()
def batch_hard_triplets(embeddings: Tensor, labels: Tensor, *, distance: str = "euclidean",
                        bank: Tensor | None = None,
                        bank_labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per anchor its hardest positive and hardest negative (Hermans et al., 2017, "batch hard").

    Args:
        embeddings: (N, D) floating-point embeddings.
        labels: (N,) integer class labels.
        distance: "euclidean", "squared_euclidean" or "cosine".
        bank, bank_labels: optional (K, D) memory bank and its (K,) labels; its rows join the
            candidate negatives.

    Returns:
        LongTensors (a, p, n): one triplet per anchor, p the farthest row with the anchor's label,
        n the nearest row (of the batch or the bank) with another label. Anchors lacking a
        positive or a negative are dropped, so the tensors may be shorter than N, or empty.

    Example:
        >>> a, p, n = batch_hard_triplets(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> a.tolist()
        [0, 1, 2, 3, 4, 5]
    """
    _check_distance(distance)
    labels, pool, pool_labels = _negative_pool(embeddings, labels, bank, bank_labels)
    if embeddings.shape[0] == 0:
        return _no_triplets(embeddings.device)
    positive, negative = _label_masks(labels, pool_labels)
    distances = _distance_matrix(embeddings, pool, distance)
    to_positive = distances[:, :embeddings.shape[0]].masked_fill(~positive, float("-inf"))
    to_negative = distances.masked_fill(~negative, float("inf"))
    anchors = (positive.any(dim=1) & negative.any(dim=1)).nonzero().squeeze(1)
    return anchors, to_positive.argmax(dim=1)[anchors], to_negative.argmin(dim=1)[anchors]


@torch.no_grad()
def semi_hard_triplets(embeddings: Tensor, labels: Tensor, *, distance: str = "euclidean",
                       margin: float = 0.2, bank: Tensor | None = None,
                       bank_labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """FaceNet's semi-hard triplets (Schroff et al., 2015).

    For every (anchor, positive) pair, the negative nearest to the anchor among those farther
    than the positive but inside the margin: D(a,p) < D(a,n) < D(a,p) + margin. These triplets
    have a loss in (0, margin). Pairs with no such negative are dropped, with no fall-back to a
    harder or easier negative: an empty result then means every triplet is already satisfied or
    the batch holds only hard negatives (consider batch-hard mining in that case).

    Builds an (N, N, N + K) tensor, so keep a bank small or use :func:`batch_hard_triplets`.

    Args:
        embeddings: (N, D) floating-point embeddings.
        labels: (N,) integer class labels.
        distance: "euclidean", "squared_euclidean" or "cosine".
        margin: the triplet margin, > 0.
        bank, bank_labels: optional (K, D) memory bank and its (K,) labels; its rows join the
            candidate negatives.

    Returns:
        LongTensors (a, p, n), sorted by anchor then positive; n indexes
        ``torch.cat([embeddings, bank])``. Empty when no pair has a semi-hard negative (or the
        batch has no valid triplet, or no rows).

    Example:
        >>> a, p, n = semi_hard_triplets(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
        ...                              margin=1.0)
        >>> bool((a != p).all())
        True
    """
    _check_distance(distance)
    check_positive("margin", margin, "semi-hard mining needs margin > 0, as the window "
                   "D(a,p) < D(a,n) < D(a,p) + margin is empty otherwise.")
    labels, pool, pool_labels = _negative_pool(embeddings, labels, bank, bank_labels)
    if embeddings.shape[0] == 0:
        return _no_triplets(embeddings.device)
    positive, negative = _label_masks(labels, pool_labels)
    distances = _distance_matrix(embeddings, pool, distance)
    to_positive = distances[:, :embeddings.shape[0], None]
    to_negative = distances[:, None, :]
    in_window = (to_negative > to_positive) & (to_negative < to_positive + margin)
    semi_hard = negative[:, None, :] & in_window
    nearest = torch.where(semi_hard, to_negative, float("inf")).argmin(dim=2)
    anchors, positives = (positive & semi_hard.any(dim=2)).nonzero(as_tuple=True)
    return anchors, positives, nearest[anchors, positives]


@torch.no_grad()
def hard_negatives_from_bank(anchors: Tensor, anchor_labels: Tensor, bank: Tensor,
                             bank_labels: Tensor, *, distance: str = "euclidean",
                             k: int = 1) -> Tensor:
    """For each anchor, the k nearest memory-bank entries with a different label.

    Args:
        anchors: (N, D) floating-point embeddings.
        anchor_labels: (N,) their integer labels.
        bank: (K, D) memory bank, e.g. a queue of past embeddings.
        bank_labels: (K,) labels of the bank entries.
        distance: "euclidean", "squared_euclidean" or "cosine".
        k: number of negatives per anchor, >= 1.

    Returns:
        An (N, k) LongTensor of bank indices, nearest first. Where an anchor has fewer than k
        bank entries of another label the row is padded with -1, so ``indices >= 0`` is the mask
        of real negatives.

    Example:
        >>> bank, bank_labels = torch.randn(32, 4), torch.randint(0, 4, (32,))
        >>> anchors, anchor_labels = torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
        >>> hard_negatives_from_bank(anchors, anchor_labels, bank, bank_labels, k=3).shape
        torch.Size([6, 3])
    """
    _check_distance(distance)
    check_count("k", k, 1, "it is the number of negatives per anchor.")
    _check_labelled(anchors, anchor_labels, "anchors", "anchor_labels")
    _check_labelled(bank, bank_labels, "bank", "bank_labels")
    if bank.shape[1] != anchors.shape[1]:
        raise InputError(f"bank has dim {bank.shape[1]} but the anchors have dim "
                         f"{anchors.shape[1]}; both must come from the same embedding head.")
    distances = _distance_matrix(anchors, bank.to(anchors.device), distance)
    same = anchor_labels.to(anchors.device)[:, None] == bank_labels.to(anchors.device)[None, :]
    nearest, indices = distances.masked_fill(same, float("inf")).topk(min(k, bank.shape[0]), dim=1,
                                                                       largest=False)
    indices = indices.masked_fill(nearest.isinf(), -1)
    # A bank smaller than k (a queue still filling up) leaves columns with no candidate at all.
    return F.pad(indices, (0, k - indices.shape[1]), value=-1)
