"""Supervised contrastive loss (SupCon, Khosla et al., 2020), the paper's L_out variant.

For views z^1..z^V of N labelled samples, stack them into M = V*N rows. With s(a, b) the cosine
(or dot) similarity, every row i is an anchor whose positives P(i) are all other rows with the same
label, the other views of its own sample included:

    L = 1/M  sum_i  -1/|P(i)|  sum_{p in P(i)}  log( exp(s(i,p)/t) / sum_{a != i} exp(s(i,a)/t) )

The API takes at least two views, so every anchor has a positive (its own other view) and the
1/|P(i)| average is always defined. The negatives are the rows of the other classes: a batch of
one sample, or (checked under ``validate``) of a single class, has none, and is refused, since
the loss then rewards nothing but equal similarities (a collapse minimises it). With labels all
distinct this is :func:`info_nce`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_class_labels, check_ndim
from contrastkit.errors import InputError
from contrastkit.losses._contrastive import _check_finite_views, _check_options, _check_views
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_labels(labels: Tensor | None, batch: int) -> None:
    if labels is None:
        raise InputError("SupCon needs labels: pass labels=(N,) class ids; use info_nce for the "
                         "self-supervised case without labels.")
    check_ndim("labels", labels, 1, "(batch,)")
    check_class_labels("labels", labels)
    if labels.shape[0] != batch:
        raise InputError(f"labels has {labels.shape[0]} entries but the views have batch {batch}; "
                         "pass one label per sample (not per view).")


def supcon_loss(z_a: Tensor, z_b: Tensor, *more_views: Tensor, labels: Tensor | None,
                temperature: float = 0.1, similarity: str = "cosine", validate: bool = True) -> Tensor:
    """Supervised contrastive loss L_out over two or more views of a labelled batch.

    Args:
        z_a, z_b, *more_views: floating-point embeddings (N, D) of the same N >= 2 samples under
            different views.
        labels: integer class ids (N,), one per sample, at least two distinct ones; rows with
            equal labels are positives, rows with other labels the negatives.
        temperature: softmax temperature t > 0 (the paper uses 0.1).
        similarity: "cosine" (rows L2-normalised first, as in the paper) or "dot".
        validate: check that the inputs are finite and the labels not all equal (host syncs).

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> supcon_loss(z_a, z_b, labels=torch.tensor([0, 1, 0, 2, 1, 1, 0, 2])).shape
        torch.Size([])
    """
    views = (z_a, z_b, *more_views)
    _check_options(temperature, similarity)
    _check_views(views, None)
    check_batch_size("supcon_loss", z_a.shape[0], 2,
                     "with one sample every other row is one of its positives, so there is no negative to "
                     "contrast with; use a larger batch with several classes.")
    _check_labels(labels, z_a.shape[0])
    if validate:
        _check_finite_views(views)
        # Reading the labels is a host sync, hence only under validate.
        if bool((labels == labels[0]).all()):
            raise InputError(f"supcon_loss got a batch whose {labels.shape[0]} labels are all {labels[0].item()}, so "
                             "every row is a positive of every other and there is no negative to contrast with; "
                             "sample several classes per batch.")
    dtype = loss_dtype(z_a)
    z = torch.cat(views).to(dtype)
    if similarity == "cosine":
        z = F.normalize(z, dim=1)
    with full_precision(z):
        logits = z @ z.T / temperature
    # A row is never in its own denominator nor its own positive.
    logits.fill_diagonal_(float("-inf"))
    log_norm = torch.logsumexp(logits, dim=1)
    row_labels = labels.to(z.device).repeat(len(views))
    positive = row_labels[:, None] == row_labels[None, :]
    positive.fill_diagonal_(False)
    # where() rather than a product: the -inf diagonal times 0 would be NaN.
    mean_positive_logit = torch.where(positive, logits, 0.0).sum(dim=1) / positive.sum(dim=1)
    return (log_norm - mean_positive_logit).mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss`.

    Example:
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16), labels=torch.arange(8) % 3)
    """

    def __init__(self, temperature: float = 0.1, similarity: str = "cosine") -> None:
        super().__init__()
        _check_options(temperature, similarity)
        self.temperature = temperature
        self.similarity = similarity

    def forward(self, z_a: Tensor, z_b: Tensor, *more_views: Tensor, labels: Tensor | None,
                validate: bool = True) -> Tensor:
        return supcon_loss(z_a, z_b, *more_views, labels=labels, temperature=self.temperature,
                           similarity=self.similarity, validate=validate)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"
