"""TS2Vec's hierarchical contrastive loss (Yue et al., AAAI 2022).

Given per-timestep representations z1, z2 (B, T, D) of the same timesteps seen in two views (the
overlap of two crops), two contrastive terms compare them, both with plain dot products as logits
(no normalisation, no temperature):

* instance-wise, at each timestep t: the 2B representations at t are compared with each other;
  sample i's representation in one view must pick out sample i's in the other view among the
  other 2B - 1:  l_inst(i, t) = -log exp(z1[i,t] . z2[i,t]) / sum_{j != (i, view 1)} exp(z1[i,t] . z_j,t)
* temporal, within each sample i: its 2T representations (both views, all timesteps) are compared;
  timestep t in one view must pick out timestep t in the other among the other 2T - 1.

Both are averaged over every anchor (both views). The loss at one scale is
alpha * instance + (1 - alpha) * temporal. Then both sequences are max-pooled over time with
kernel 2 (stride 2, an odd last timestep dropped) and the loss is taken again, until one
timestep is left, where only the instance term applies (a single timestep has no temporal
contrast). The result is the mean over the scales. The temporal term is left out at the first
``temporal_unit`` scales, where neighbouring timesteps are too alike to be told apart.

A term with a single candidate (B = 1 for the instance term, T = 1 for the temporal one) has no
negatives and counts as 0, as in the paper's implementation.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_finite, check_floating, check_ndim
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import full_precision, loss_dtype


def _contrast(first: Tensor, second: Tensor) -> Tensor:
    """Mean cross-entropy of matching rows across two row-aligned sets, batched over the leading dim.

    first, second: (G, N, D). In each group the 2N rows are compared by dot product with all the
    others; row n of ``first`` has row n of ``second`` as its positive and vice versa.
    """
    rows = first.shape[1]
    both = torch.cat([first, second], dim=1)  # (G, 2N, D)
    logits = both @ both.transpose(1, 2)
    self_similarity = torch.eye(2 * rows, dtype=torch.bool, device=both.device)
    logits = logits.masked_fill(self_similarity, float("-inf"))
    partner = torch.arange(2 * rows, device=both.device).roll(rows)  # n <-> n + N
    positive = logits.gather(2, partner.expand(logits.shape[0], -1)[:, :, None]).squeeze(2)
    return (torch.logsumexp(logits, dim=2) - positive).mean()


def instance_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """TS2Vec's instance-wise term (module docstring) for z1, z2 (B, T, D); 0 when B = 1."""
    if z1.shape[0] == 1:
        return z1.new_zeros(()) + 0 * (z1.sum() + z2.sum())
    return _contrast(z1.transpose(0, 1), z2.transpose(0, 1))


def temporal_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """TS2Vec's temporal term (module docstring) for z1, z2 (B, T, D); 0 when T = 1."""
    if z1.shape[1] == 1:
        return z1.new_zeros(()) + 0 * (z1.sum() + z2.sum())
    return _contrast(z1, z2)


def _check_inputs(z1: Tensor, z2: Tensor, alpha: float, temporal_unit: int, validate: bool) -> None:
    check_ndim("z1", z1, 3, "(batch, time, dim)")
    check_ndim("z2", z2, 3, "(batch, time, dim)")
    check_floating("z1", z1)
    check_floating("z2", z2)
    if z1.shape != z2.shape:
        raise InputError(f"z1 and z2 must have the same shape (batch, time, dim): the representations of the same "
                         f"timesteps in two views; got {tuple(z1.shape)} and {tuple(z2.shape)}. Cut both views to "
                         "their overlap first.")
    if z1.shape[0] == 0 or z1.shape[1] == 0:
        raise InputError(f"hierarchical_contrastive_loss got an empty batch or overlap, shape {tuple(z1.shape)}; "
                         "check the crops that feed it.")
    if not (isinstance(alpha, Real) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha!r}; TS2Vec weighs both terms equally (0.5).")
    if not (isinstance(temporal_unit, Integral) and not isinstance(temporal_unit, bool) and temporal_unit >= 0):
        raise ConfigError(f"temporal_unit must be an integer >= 0, got {temporal_unit!r}; TS2Vec uses 0.")
    if validate:
        check_finite("z1", z1)
        check_finite("z2", z2)


def hierarchical_contrastive_loss(z1: Tensor, z2: Tensor, alpha: float = 0.5, temporal_unit: int = 0, *,
                                  validate: bool = True) -> Tensor:
    """TS2Vec's loss over all time scales (see the module docstring).

    Args:
        z1: per-timestep representations (B, T, D) of the overlapping timesteps in the first view.
        z2: the same timesteps' representations (B, T, D) in the second view.
        alpha: weight of the instance-wise term; the temporal term gets 1 - alpha.
        temporal_unit: number of the finest scales without the temporal term.
        validate: check that the inputs are finite (one host sync per tensor).

    Returns:
        The scalar loss, in float32 (float64 for float64 inputs).

    Example:
        >>> z1, z2 = torch.randn(4, 10, 8), torch.randn(4, 10, 8)
        >>> hierarchical_contrastive_loss(z1, z2).shape
        torch.Size([])
    """
    _check_inputs(z1, z2, alpha, temporal_unit, validate)
    dtype = loss_dtype(z1)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    total, scales = z1.new_zeros(()), 0
    with full_precision(z1):
        while True:
            if alpha > 0:
                total = total + alpha * instance_contrastive_loss(z1, z2)
            if z1.shape[1] == 1:
                scales += 1
                break
            if scales >= temporal_unit and alpha < 1:
                total = total + (1 - alpha) * temporal_contrastive_loss(z1, z2)
            scales += 1
            z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
            z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    return total / scales


class HierarchicalContrastiveLoss(nn.Module):
    """:func:`hierarchical_contrastive_loss` with its settings held.

    Example:
        >>> loss_fn = HierarchicalContrastiveLoss(alpha=0.5)
        >>> loss = loss_fn(torch.randn(4, 10, 8), torch.randn(4, 10, 8))
    """

    def __init__(self, alpha: float = 0.5, temporal_unit: int = 0) -> None:
        super().__init__()
        _check_inputs(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), alpha, temporal_unit, validate=False)
        self.alpha = alpha
        self.temporal_unit = temporal_unit

    def forward(self, z1: Tensor, z2: Tensor, validate: bool = True) -> Tensor:
        return hierarchical_contrastive_loss(z1, z2, self.alpha, self.temporal_unit, validate=validate)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temporal_unit={self.temporal_unit}"
