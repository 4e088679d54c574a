"""InfoNCE on (anchor, positive) pairs with in-batch negatives, optionally hard negatives.

sentence-transformers calls it MultipleNegativesRankingLoss; it is supervised SimCSE's loss (Gao
et al., 2021), and DPR's (Karpukhin et al., 2020) with cosines in place of dot products. For N pairs
(a_i, p_i) and M optional hard negatives n_1..n_M, with cosine similarities and temperature t,
anchor i classifies its positive among every positive of the batch and every hard negative:

    C = [p_1, ..., p_N, n_1, ..., n_M]
    L_fwd = 1/N sum_i -log( exp(cos(a_i, p_i) / t) / sum_{c in C} exp(cos(a_i, c) / t) )

so the other pairs' positives are the in-batch negatives of a_i. sentence-transformers' scale is
1/t (20 there is t = 0.05 here). With ``symmetric=True`` each positive also classifies its anchor
among all anchors (MultipleNegativesSymmetricRankingLoss), and the two directions are averaged:

    L_rev = 1/N sum_i -log( exp(cos(p_i, a_i) / t) / sum_j exp(cos(p_i, a_j) / t) )
    L = (L_fwd + L_rev) / 2

Unlike :func:`contrastkit.losses.info_nce`, an anchor is never contrasted with the other anchors
(nor, in the reverse direction, a positive with the other positives): the two sides may come from
different encoders or inputs (a question and its passage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_embeddings, check_finite, check_paired_embeddings, check_positive
from contrastkit._distributed import gather_with_grad, rank, world_size
from contrastkit.errors import InputError
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_temperature(temperature: float) -> None:
    check_positive("temperature", temperature, "sentence-transformers and SimCSE use 0.05 (a scale of 20).")


def _check_inputs(anchors: Tensor, positives: Tensor, negatives: Tensor | None, symmetric: bool,
                  validate: bool, processes: int) -> None:
    if negatives is not None:
        check_embeddings("negatives", negatives, "(num_negatives, dim)")
    has_negatives = negatives is not None and negatives.shape[0] > 0
    # The forward direction's negatives are the other pairs' positives and the hard negatives; the
    # reverse direction's are the other anchors only, so it always needs a second pair.
    if symmetric:
        minimum, reason = 2, ("with symmetric=True each positive classifies its anchor among the anchors, and "
                              "with one pair its anchor is the only one (that direction is 0); use a larger "
                              "batch, or symmetric=False.")
    else:
        minimum, reason = (1 if has_negatives else 2), (
            "with one pair and no hard negatives the anchor's only candidate is its own positive, so the loss "
            "is 0; use a larger batch, or pass negatives=.")
    check_paired_embeddings("pair_info_nce", anchors, positives, ("anchors", "positives"), min_batch=minimum,
                            reason=reason, processes=processes, validate=validate)
    if negatives is not None:
        if negatives.shape[1] != anchors.shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the anchors have dim "
                             f"{anchors.shape[1]}; embed them with the encoder of the positives.")
        if validate:
            check_finite("negatives", negatives)


def _gathered(tensor: Tensor, gather: bool) -> Tensor:
    """Every process's ``tensor`` (with gradients) with ``gather``; this process's only without."""
    return gather_with_grad(tensor) if gather else tensor


def pair_info_nce(anchors: Tensor, positives: Tensor, *, negatives: Tensor | None = None,
                  temperature: float = 0.05, symmetric: bool = False, validate: bool = True,
                  gather_across_processes: bool = False) -> Tensor:
    """InfoNCE of anchors against the batch's positives and hard negatives (see the module docstring).

    Under torch.distributed, ``gather_across_processes=True`` classifies this process's anchors
    among the positives and hard negatives of every process (and, with ``symmetric``, this
    process's positives among every process's anchors), gathered with gradients
    (``gather_with_grad``); anchor i of rank r has target r * N + i. The loss is the mean over
    this process's anchors; with equal batches on every process, the mean of the per-process
    losses is the loss of one process holding the whole global batch, and the gradients DDP
    averages are that single process's gradients: use the loss as returned, unscaled.

    Args:
        anchors: (N, D) floating-point embeddings (e.g. questions, or SimCSE's first view).
        positives: (N, D) embeddings; positives[i] is the match of anchors[i] and a negative of
            every other anchor. N >= 2 (in the global batch with ``gather_across_processes``),
            or N >= 1 with hard negatives and ``symmetric=False``.
        negatives: optional (M, D) hard negatives, candidates of every anchor (for k per anchor,
            concatenate them: M = k * N). With ``gather_across_processes`` every process must
            pass the same shape (None everywhere or nowhere).
        temperature: softmax temperature t > 0 on the cosine similarities (0.05 = scale 20).
        symmetric: also classify each positive's anchor among all anchors and average the two
            directions (hard negatives take part only in the anchor-to-candidate direction).
        validate: check that the inputs are finite (one host sync per tensor); the trainer turns
            this off on its hot path.
        gather_across_processes: contrast with every process's candidates (see above); a no-op
            in a single process.

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> anchors, positives, hard = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> pair_info_nce(anchors, positives, negatives=hard, temperature=0.05).shape
        torch.Size([])
    """
    _check_temperature(temperature)
    gather = gather_across_processes
    _check_inputs(anchors, positives, negatives, symmetric, validate, world_size() if gather else 1)
    dtype = loss_dtype(anchors)
    a = F.normalize(anchors.to(dtype), dim=1)
    p = F.normalize(positives.to(dtype), dim=1)
    candidates = _gathered(p, gather)
    if negatives is not None and negatives.shape[0] > 0:
        candidates = torch.cat([candidates, _gathered(F.normalize(negatives.to(dtype), dim=1), gather)])
    # Gathered rows come in rank order: this process's positives start at row rank * N.
    targets = (rank() * a.shape[0] if gather else 0) + torch.arange(a.shape[0], device=a.device)
    with full_precision(a):
        loss = F.cross_entropy(a @ candidates.T / temperature, targets)
        if symmetric:
            reverse_loss = F.cross_entropy(p @ _gathered(a, gather).T / temperature, targets)
            loss = (loss + reverse_loss) / 2
    return loss


class PairInfoNCELoss(nn.Module):
    """Module form of :func:`pair_info_nce` (MultipleNegativesRankingLoss; with ``symmetric=True``
    MultipleNegativesSymmetricRankingLoss).

    Example:
        >>> loss_fn = PairInfoNCELoss(temperature=0.05, symmetric=True)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False,
                 gather_across_processes: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.symmetric = symmetric
        self.gather_across_processes = gather_across_processes

    def forward(self, anchors: Tensor, positives: Tensor, negatives: Tensor | None = None,
                validate: bool = True) -> Tensor:
        return pair_info_nce(anchors, positives, negatives=negatives, temperature=self.temperature,
                             symmetric=self.symmetric, validate=validate,
                             gather_across_processes=self.gather_across_processes)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, symmetric={self.symmetric}, "
                f"gather_across_processes={self.gather_across_processes}")
