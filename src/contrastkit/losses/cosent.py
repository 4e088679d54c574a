"""CoSENT: a ranking loss on scored sentence pairs (Su, 2022; sentence-transformers' CoSENTLoss).

For N pairs (a_i, b_i) with gold similarity scores s_i (e.g. STS ratings 0..5) and
c_i = cos(a_i, b_i), every ordered pair of pairs (i, j) with s_i > s_j asks for c_i > c_j:

    L = log( 1 + sum_{(i, j): s_i > s_j} exp( scale * (c_j - c_i) ) )

It trains the cosine of a pair to rank like its score, the quantity the STS benchmark measures
with Spearman's correlation, where a regression on the cosine would fix its value. The sum runs
over all O(N^2) ordered pairs and is not averaged, as in the paper and sentence-transformers.
Only the order of the scores matters: any rescaling of them that keeps the order leaves L as is.

Under torch.distributed, ``gather_across_processes=True`` ranks every process's pairs together:
the cosines are gathered with gradients and the scores with them, and each process returns the
global batch's loss (so its average over the processes, DistributedDataParallel's, is that loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_finite, check_ndim, check_paired_embeddings, check_positive
from contrastkit._distributed import gather_no_grad, gather_with_grad, world_size
from contrastkit.errors import InputError
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_scale(scale: float) -> None:
    check_positive("scale", scale, "CoSENT uses 20 (a softmax temperature of 0.05).")


def _check_scores(scores: Tensor, batch: int, validate: bool, gather: bool) -> None:
    check_ndim("scores", scores, 1, "(batch,)")
    if scores.is_complex():
        raise InputError(f"scores must hold real gold similarity scores, got dtype {scores.dtype}.")
    if scores.shape[0] != batch:
        raise InputError(f"scores has {scores.shape[0]} entries but the batch has {batch} pairs; "
                         "give one gold score per pair.")
    if not validate:
        return
    if scores.is_floating_point():
        check_finite("scores", scores)
    if gather:
        scores = gather_no_grad(scores)
    # Every pair (i, j) with s_i > s_j is a term of the loss: with all scores equal there is none,
    # and L = log(1 + 0) = 0 with no gradient, a step that silently learns nothing.
    if bool((scores == scores[0]).all()):
        raise InputError(f"all {scores.shape[0]} scores are equal ({scores[0].item()!r}), so no pair of pairs is "
                         "ordered and the loss is 0 with no gradient; CoSENT learns from pairs with "
                         "different scores: shuffle the data so that batches mix scores, or use a larger "
                         "batch (validate=False returns the 0).")


def cosent_loss(z_a: Tensor, z_b: Tensor, scores: Tensor, *, scale: float = 20.0,
                validate: bool = True, gather_across_processes: bool = False) -> Tensor:
    """CoSENT on N scored pairs (see the module docstring).

    Args:
        z_a, z_b: (N, D) floating-point embeddings; row i of each forms pair i. N >= 2, since
            the loss compares pairs with each other.
        scores: (N,) gold similarity scores, any real dtype (integer ratings, bool or 0/1
            labels, floats); only their order is used.
        scale: the inverse temperature scale > 0 of the cosine differences (20 in the paper).
        validate: check that the inputs are finite and that the scores are not all equal
            (host syncs); the trainer turns this off on its hot path. With all scores equal
            there is no ordered pair: validate=True refuses the batch, validate=False returns 0
            (with zero gradient).
        gather_across_processes: rank every process's pairs together (see the module
            docstring); a no-op in a single process. Every process must call the loss.

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> scores = torch.tensor([0.0, 1.2, 5.0, 3.4, 2.0, 4.1, 0.5, 3.0])
        >>> cosent_loss(z_a, z_b, scores).shape
        torch.Size([])
    """
    _check_scale(scale)
    check_paired_embeddings("cosent_loss", z_a, z_b, min_batch=2,
                            reason="the loss compares the cosines of pairs with different scores, and one "
                                   "pair has nothing to be compared with; use a larger batch.",
                            processes=world_size() if gather_across_processes else 1, validate=validate)
    _check_scores(scores, z_a.shape[0], validate, gather_across_processes)
    dtype = loss_dtype(z_a)
    a, b = F.normalize(z_a.to(dtype), dim=1), F.normalize(z_b.to(dtype), dim=1)
    with full_precision(a):
        cosines = (a * b).sum(dim=1)
    scores = scores.to(cosines.device)
    if gather_across_processes:
        cosines, scores = gather_with_grad(cosines), gather_no_grad(scores)
    # differences[i, j] = scale * (c_j - c_i), kept where s_i > s_j: -inf elsewhere drops the
    # entry from the log-sum-exp, and the extra 0 entry is the 1 of log(1 + sum).
    differences = scale * (cosines[None, :] - cosines[:, None])
    ordered = scores[:, None] > scores[None, :]
    terms = differences.masked_fill(~ordered, float("-inf")).flatten()
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


class CoSENTLoss(nn.Module):
    """Module form of :func:`cosent_loss`.

    Example:
        >>> loss_fn = CoSENTLoss(scale=20.0)
        >>> loss = loss_fn(torch.randn(4, 16), torch.randn(4, 16), torch.tensor([1, 4, 2, 0]))
    """

    def __init__(self, scale: float = 20.0, gather_across_processes: bool = False) -> None:
        super().__init__()
        _check_scale(scale)
        self.scale = scale
        self.gather_across_processes = gather_across_processes

    def forward(self, z_a: Tensor, z_b: Tensor, scores: Tensor, validate: bool = True) -> Tensor:
        return cosent_loss(z_a, z_b, scores, scale=self.scale, validate=validate,
                           gather_across_processes=self.gather_across_processes)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gather_across_processes={self.gather_across_processes}"
