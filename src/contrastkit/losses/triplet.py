"""Triplet loss (Schroff et al., 2015, FaceNet), on given triplets or on triplets mined in a batch.

For T triplets (a_i, p_i, n_i) of an anchor, a positive of its class and a negative of another
class, with D the Euclidean, squared Euclidean or cosine distance and margin alpha >= 0:

    L = 1/T  sum_i  max(0, D(a_i, p_i) - D(a_i, n_i) + alpha)

The "mean_positive" reduction divides by the number of triplets with a positive loss instead of T
(the batch-all "non-zero" average of Hermans et al., 2017), so easy triplets do not dilute the
gradient. With no triplet (or no positive one) the loss is 0, never NaN; but a labelled batch
that admits no valid triplet at all (a single class, or no class with two samples) is refused
when mining, since its 0 would say nothing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_embeddings, check_finite, check_positive
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import loss_dtype
from contrastkit.losses.miners import (
    _check_distance,
    _has_valid_triplet,
    _negative_pool,
    _paired_distances,
    batch_all_triplets,
    batch_hard_triplets,
    semi_hard_triplets,
)

REDUCTIONS = ("mean", "mean_positive")
MINERS = {"batch_all": batch_all_triplets, "batch_hard": batch_hard_triplets,
          "semi_hard": semi_hard_triplets}


def _check_options(margin: float, distance: str, reduction: str) -> None:
    check_positive("margin", margin, "FaceNet uses 0.2 on unit-norm embeddings.", allow_zero=True)
    _check_distance(distance)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, *, margin: float = 0.2,
                 distance: str = "euclidean", reduction: str = "mean",
                 validate: bool = True) -> Tensor:
    """Triplet margin loss over given triplets (see the module docstring).

    Args:
        anchor, positive, negative: (T, D) floating-point embeddings; row i of each forms
            triplet i. T may be 0 (e.g. a semi-hard miner found nothing): the loss is then a zero
            that backward accepts.
        margin: alpha >= 0, the gap wanted between D(a, n) and D(a, p).
        distance: "euclidean" (its gradient at identical points is taken as 0, not NaN),
            "squared_euclidean" or "cosine" (1 - cosine similarity).
        reduction: "mean" over all T triplets, or "mean_positive" over those with loss > 0.
        validate: check that the inputs are finite (one host sync per tensor); the trainer turns
            this off on its hot path.

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> a, p, n = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> triplet_loss(a, p, n, margin=0.2).shape
        torch.Size([])
    """
    _check_options(margin, distance, reduction)
    named = {"anchor": anchor, "positive": positive, "negative": negative}
    for name, tensor in named.items():
        check_embeddings(name, tensor, "(num_triplets, dim)")
        if tensor.shape != anchor.shape:
            raise InputError(f"anchor, positive and negative must have the same shape; anchor is "
                             f"{tuple(anchor.shape)} but {name} is {tuple(tensor.shape)}.")
    if validate:
        for name, tensor in named.items():
            check_finite(name, tensor)
    dtype = loss_dtype(anchor)
    a, p, n = anchor.to(dtype), positive.to(dtype), negative.to(dtype)
    losses = F.relu(_paired_distances(a, p, distance) - _paired_distances(a, n, distance) + margin)
    # A sum over a clamped count rather than .mean(): no triplets give 0 (still on the graph),
    # not 0/0, and the count needs no host sync.
    if reduction == "mean_positive":
        return losses.sum() / (losses > 0).sum().clamp_min(1)
    return losses.sum() / max(losses.shape[0], 1)


class TripletLoss(nn.Module):
    """Module form of :func:`triplet_loss`, optionally mining the triplets inside the batch.

    It is called one of two ways, fixed by ``miner``:

    - ``miner=None``: ``forward(anchor, positive, negative)`` on given (T, D) triplets;
    - ``miner="batch_all" | "batch_hard" | "semi_hard"``:
      ``forward(embeddings, labels, bank=None, bank_labels=None)``, which mines triplets among the
      (N, D) embeddings with (N,) labels (see :mod:`contrastkit.losses.miners`) and averages the
      loss over them. An optional memory bank (K, D) with labels (K,) adds candidate negatives;
      no gradient flows into the bank.

    "batch_all" uses every valid triplet; pair it with ``reduction="mean_positive"`` to average
    over the active ones only. A batch whose labels admit no valid triplet (no anchor with both
    a positive and a negative) is refused; one where the miner keeps none of them (semi-hard
    mining when every triplet is satisfied or hard) gives a loss of 0.

    Example:
        >>> loss_fn = TripletLoss(margin=0.2, miner="batch_hard")
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> TripletLoss()(torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, margin: float = 0.2, distance: str = "euclidean", miner: str | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        _check_options(margin, distance, reduction)
        if miner is not None and miner not in MINERS:
            raise ConfigError(f"miner must be None or one of {tuple(MINERS)}, got {miner!r}.")
        if miner == "semi_hard" and margin == 0:
            raise ConfigError("semi-hard mining needs margin > 0; it looks for negatives with "
                              "D(a,p) < D(a,n) < D(a,p) + margin.")
        self.margin = margin
        self.distance = distance
        self.miner = miner
        self.reduction = reduction

    def forward(self, *inputs: Tensor, bank: Tensor | None = None,
                bank_labels: Tensor | None = None, validate: bool = True) -> Tensor:
        options = {"margin": self.margin, "distance": self.distance, "reduction": self.reduction}
        if self.miner is None:
            if len(inputs) != 3 or bank is not None or bank_labels is not None:
                raise InputError(
                    f"TripletLoss(miner=None) takes forward(anchor, positive, negative), got "
                    f"{len(inputs)} tensor(s){' and a bank' if bank is not None else ''}; to "
                    "mine triplets from forward(embeddings, labels) build "
                    "TripletLoss(miner='batch_hard') (or 'batch_all', 'semi_hard').")
            return triplet_loss(*inputs, **options, validate=validate)
        if len(inputs) != 2:
            raise InputError(
                f"TripletLoss(miner={self.miner!r}) takes forward(embeddings, labels), optionally "
                f"with bank= and bank_labels=, got {len(inputs)} tensors; for given "
                "(anchor, positive, negative) triplets build TripletLoss(miner=None).")
        embeddings, labels = inputs
        bank = None if bank is None else bank.detach()
        labels, candidates, candidate_labels = _negative_pool(embeddings, labels, bank, bank_labels)
        check_batch_size(f"TripletLoss(miner={self.miner!r})", embeddings.shape[0])
        if validate:
            check_finite("embeddings", embeddings)
            if bank is not None:
                check_finite("bank", bank)
        mining = {"margin": self.margin} if self.miner == "semi_hard" else {}
        a, p, n = MINERS[self.miner](embeddings, labels, distance=self.distance, bank=bank,
                                     bank_labels=bank_labels, **mining)
        # Mining has synced already (the number of triplets depends on the data), so the shape is
        # free to read; the labels are read only when nothing was mined, to tell a batch with no
        # valid triplet (a sampling mistake) from one whose triplets the miner all left out.
        if a.shape[0] == 0 and not _has_valid_triplet(labels, candidate_labels):
            raise InputError(
                f"TripletLoss(miner={self.miner!r}) got a batch of {embeddings.shape[0]} with no valid triplet: no "
                "sample has both a positive (another sample with its label) and a negative (a sample"
                f"{' or bank entry' if bank is not None else ''} with another label), so the loss would be a "
                "meaningless 0; draw at least 2 samples per class from at least 2 classes (e.g. with a "
                "class-balanced sampler).")
        # The inputs were checked above; the gathered rows need no second check.
        return triplet_loss(embeddings[a], embeddings[p], candidates[n], **options, validate=False)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, distance={self.distance!r}, miner={self.miner!r}, "
                f"reduction={self.reduction!r}")
