"""SwAV's swapped-prediction loss and its Sinkhorn-Knopp codes (Caron et al., 2020).

Each view v of a batch of B samples gives prototype scores S_v (B, K) (cosine similarities of the
embeddings to K prototypes). The codes Q_v of an assignment view (a global crop) are the
equipartitioned soft assignment: Q = diag(u) exp(S_v/eps) diag(w) with every sample's row summing
to 1 and every prototype's column summing to B/K, approximated by a few Sinkhorn-Knopp
iterations. Every other view w then predicts those codes:

    L = 1/A  sum_{v < A}  1/(V-1)  sum_{w != v}  -1/B  sum_b  sum_k  Q_v[b,k] log softmax(S_w[b]/t)_k

with A the number of assignment views. The codes carry no gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_count, check_embeddings, check_finite, check_positive
from contrastkit._distributed import gather_no_grad, world_size
from contrastkit.errors import InputError
from contrastkit.losses._precision import loss_dtype


def _check_sinkhorn_options(epsilon: float, iterations: int, iterations_name: str) -> None:
    check_positive("epsilon", epsilon, "SwAV uses 0.05 (smaller gives sharper codes).")
    check_count(iterations_name, iterations, 1, "SwAV uses 3.")


def _check_swav_options(temperature: float, epsilon: float, sinkhorn_iterations: int,
                        num_assignment_views: int) -> None:
    check_positive("temperature", temperature, "SwAV uses 0.1.")
    _check_sinkhorn_options(epsilon, sinkhorn_iterations, "sinkhorn_iterations")
    check_count("num_assignment_views", num_assignment_views, 1, "SwAV computes codes for its 2 global crops.")


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Equipartitioned soft assignments (codes) of a batch to prototypes, without gradient.

    Starting from exp(scores/epsilon), ``iterations`` times give every prototype the same total
    over the batch, then every sample a total of 1 over the prototypes. This is SwAV's algorithm:
    its initial division by the grand total and its 1/K, 1/B and final *B factors are constants
    that the next normalisation cancels, so they are left out. The iterations run in log space,
    which stays finite whatever the scale of the scores (exp(scores/eps) overflows float32 once
    scores/eps passes 88). Under torch.distributed the prototype totals span every process (B is
    then the global batch).

    Args:
        scores: floating-point prototype scores (B, K) of one view.
        epsilon: entropic regularisation eps > 0; smaller gives sharper codes.
        iterations: number of Sinkhorn-Knopp iterations (>= 1).

    Returns:
        Codes (B, K) in float32 (float64 for float64 scores): every row sums to 1 and the column
        sums approach B/K as the iterations converge.

    Example:
        >>> codes = sinkhorn_knopp(torch.randn(8, 4), epsilon=0.05, iterations=3)
        >>> torch.allclose(codes.sum(dim=1), torch.ones(8))
        True
    """
    _check_sinkhorn_options(epsilon, iterations, "iterations")
    check_embeddings("scores", scores, "(batch, num_prototypes)")
    dtype = loss_dtype(scores)
    log_codes = scores.to(dtype) / epsilon
    for _ in range(iterations):
        # Per-prototype log-totals of every process, combined into the global batch's.
        prototype_totals = torch.logsumexp(gather_no_grad(torch.logsumexp(log_codes, dim=0)[None]), dim=0)
        log_codes = log_codes - prototype_totals
        log_codes = log_codes - torch.logsumexp(log_codes, dim=1, keepdim=True)
    return log_codes.exp()


def swav_loss(scores: Sequence[Tensor], *, temperature: float = 0.1, epsilon: float = 0.05,
              sinkhorn_iterations: int = 3, num_assignment_views: int = 2, validate: bool = True) -> Tensor:
    """SwAV swapped-prediction loss over two or more views (see the module docstring).

    Args:
        scores: per-view floating-point prototype scores, each (B, K) with K >= 2 and B >= 2 in
            the global batch (B times the number of processes); the first
            ``num_assignment_views`` are the views whose codes are predicted (the global crops).
        temperature: softmax temperature t > 0 of the predictions.
        epsilon: Sinkhorn entropic regularisation eps > 0.
        sinkhorn_iterations: Sinkhorn-Knopp iterations (>= 1).
        num_assignment_views: how many leading views get codes (1 <= A <= number of views).
        validate: check that the scores are finite (one host sync per view).

    Returns:
        The scalar loss, in float32 (or float64 for float64 scores).

    Example:
        >>> scores = [torch.randn(8, 16) for _ in range(4)]
        >>> swav_loss(scores, temperature=0.1).shape
        torch.Size([])
    """
    _check_swav_options(temperature, epsilon, sinkhorn_iterations, num_assignment_views)
    if len(scores) < 2:
        raise InputError(f"swav_loss needs the scores of at least 2 views, got {len(scores)}: every "
                         "view predicts the codes of another.")
    if num_assignment_views > len(scores):
        raise InputError(f"num_assignment_views={num_assignment_views} but only {len(scores)} views of "
                         "scores were given; pass every crop's scores or lower num_assignment_views.")
    for index, view in enumerate(scores):
        check_embeddings(f"scores[{index}]", view, "(batch, num_prototypes)")
        if view.shape != scores[0].shape:
            raise InputError(f"all views' scores must have the same shape (batch, num_prototypes); "
                             f"scores[0] is {tuple(scores[0].shape)} but scores[{index}] is {tuple(view.shape)}.")
    batch, num_prototypes = scores[0].shape
    # Sinkhorn spans every process's batch, so the rule is on the global batch.
    check_batch_size("swav_loss", batch, 2, "the equipartition constraint makes the codes of a single sample "
                     "uniform whatever its scores, so they carry nothing to predict; use a larger batch.",
                     processes=world_size())
    if num_prototypes < 2:
        raise InputError(f"swav_loss needs at least 2 prototypes, got scores of shape {tuple(scores[0].shape)}: "
                         "with one prototype every code and prediction is 1 and the loss is 0; use more "
                         "prototypes (SwAV uses 3000).")
    if validate:
        for index, view in enumerate(scores):
            check_finite(f"scores[{index}]", view)
    dtype = loss_dtype(scores[0])
    log_predictions = [torch.log_softmax(view.to(dtype) / temperature, dim=1) for view in scores]
    total = 0.0
    for v in range(num_assignment_views):
        codes = sinkhorn_knopp(scores[v].detach(), epsilon=epsilon, iterations=sinkhorn_iterations)
        cross_entropies = [-(codes * log_predictions[w]).sum(dim=1).mean() for w in range(len(scores)) if w != v]
        total = total + sum(cross_entropies) / len(cross_entropies)
    return total / num_assignment_views


class SwAVLoss(nn.Module):
    """Module form of :func:`swav_loss`.

    Example:
        >>> loss_fn = SwAVLoss(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)
        >>> loss = loss_fn([torch.randn(8, 16), torch.randn(8, 16)])
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
                 num_assignment_views: int = 2) -> None:
        super().__init__()
        _check_swav_options(temperature, epsilon, sinkhorn_iterations, num_assignment_views)
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.num_assignment_views = num_assignment_views

    def forward(self, scores: Sequence[Tensor], validate: bool = True) -> Tensor:
        return swav_loss(scores, temperature=self.temperature, epsilon=self.epsilon,
                         sinkhorn_iterations=self.sinkhorn_iterations,
                         num_assignment_views=self.num_assignment_views, validate=validate)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, epsilon={self.epsilon}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}, num_assignment_views={self.num_assignment_views}")
