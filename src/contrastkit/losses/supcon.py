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

Under torch.distributed, ``gather_across_processes=True`` takes this process's rows as the anchors
and every process's rows (gathered with gradients, labels with them) as the candidates, and
returns the mean over this process's anchors: averaged over equal batches on every process, as
DistributedDataParallel averages gradients, it is the loss and gradient of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_class_labels, check_ndim
from contrastkit._distributed import gather_no_grad, gather_with_grad, rank, world_size
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
                temperature: float = 0.1, similarity: str = "cosine", validate: bool = True,
                gather_across_processes: bool = False) -> Tensor:
    """Supervised contrastive loss L_out over two or more views of a labelled batch.

    Args:
        z_a, z_b, *more_views: floating-point embeddings (N, D) of the same N >= 2 samples under
            different views.
        labels: integer class ids (N,), one per sample, at least two distinct ones; rows with
            equal labels are positives, rows with other labels the negatives.
        temperature: softmax temperature t > 0 (the paper uses 0.1).
        similarity: "cosine" (rows L2-normalised first, as in the paper) or "dot".
        validate: check that the inputs are finite and the labels not all equal (host syncs).
        gather_across_processes: contrast with every process's rows (see the module docstring);
            a no-op in a single process. Every process must call the loss.

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
                     "contrast with; use a larger batch with several classes.",
                     processes=world_size() if gather_across_processes else 1)
    _check_labels(labels, z_a.shape[0])
    if validate:
        _check_finite_views(views)
        # Reading the labels is a host sync, hence only under validate.
        batch_labels = gather_no_grad(labels) if gather_across_processes else labels
        if bool((batch_labels == batch_labels[0]).all()):
            raise InputError(f"supcon_loss got a batch whose {batch_labels.shape[0]} labels are all "
                             f"{batch_labels[0].item()}, so "
                             "every row is a positive of every other and there is no negative to contrast with; "
                             "sample several classes per batch.")
    dtype = loss_dtype(z_a)
    anchors = torch.cat(views).to(dtype)
    if similarity == "cosine":
        anchors = F.normalize(anchors, dim=1)
    anchor_labels = labels.to(anchors.device).repeat(len(views))
    candidates, candidate_labels, self_offset = anchors, anchor_labels, 0
    if gather_across_processes:
        candidates, candidate_labels = gather_with_grad(anchors), gather_no_grad(anchor_labels)
        self_offset = rank() * anchors.shape[0]
    with full_precision(anchors):
        logits = anchors @ candidates.T / temperature
    # A row is never in its own denominator nor its own positive.
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, rows + self_offset] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    log_norm = torch.logsumexp(logits, dim=1)
    positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    # where() rather than a product: the -inf diagonal times 0 would be NaN.
    mean_positive_logit = torch.where(positive, logits, 0.0).sum(dim=1) / positive.sum(dim=1)
    return (log_norm - mean_positive_logit).mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss`.

    Example:
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16), labels=torch.arange(8) % 3)
    """

    def __init__(self, temperature: float = 0.1, similarity: str = "cosine",
                 gather_across_processes: bool = False) -> None:
        super().__init__()
        _check_options(temperature, similarity)
        self.temperature = temperature
        self.similarity = similarity
        self.gather_across_processes = gather_across_processes

    def forward(self, z_a: Tensor, z_b: Tensor, *more_views: Tensor, labels: Tensor | None,
                validate: bool = True) -> Tensor:
        return supcon_loss(z_a, z_b, *more_views, labels=labels, temperature=self.temperature,
                           similarity=self.similarity, validate=validate,
                           gather_across_processes=self.gather_across_processes)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, similarity={self.similarity!r}, "
                f"gather_across_processes={self.gather_across_processes}")
