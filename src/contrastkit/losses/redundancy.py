"""Redundancy-reduction losses on the batch statistics of two views: Barlow Twins and VICReg.

Barlow Twins (Zbontar et al., 2021). Standardise each view per feature over the N samples as the
paper's affine-free batch-norm layer does, (z - mean) / sqrt(biased variance + 1e-5), take the
cross-correlation C = z_a^T z_b / N (D x D) and push it to the identity:

    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2

VICReg (Bardes et al., 2022), with Cov(z) = 1/(N-1) sum_n (z_n - mean)(z_n - mean)^T:

    L = a * 1/(N D) sum_n ||z_a,n - z_b,n||^2                      (invariance: mean squared error)
      + b * 1/2 sum_{z in (z_a, z_b)} 1/D sum_j max(0, 1 - sqrt(Cov(z)_jj + eps))      (variance)
      + c * sum_{z in (z_a, z_b)} 1/D sum_{i != j} Cov(z)_ij^2                      (covariance)

This is the form of the authors' code (and lightly's): the invariance term is the mean over all
N*D entries (the paper's Eq. 5 writes a per-sample sum over dims, D times larger), the variance
term is the mean of the two views' hinges and the covariance term their sum. The paper's
coefficients a = b = 25, c = 1 go with exactly this form.

The covariance term is quartic in the embedding's scale, and at initialisation, when a network
maps every image to nearly the same direction, it dominates the gradient (ten times the other
terms for a ResNet-18 on CIFAR-10). Plain SGD then overshoots and diverges within a few steps
at any usual learning rate; the authors, lightly and solo-learn all train VICReg with LARS, which
bounds each layer's step relative to its weights, and so do contrastkit's recipes.

Under torch.distributed every batch statistic (means, variances, C, Cov, the invariance sum) is
summed over all processes with ``all_reduce_with_grad``, so every process computes the loss of the
global batch (equal batches on every process assumed), and the backward of each sum gathers the
gradient of every process's copy of the loss. With DistributedDataParallel averaging the
parameter gradients, a step on W processes is the step of one process holding the global batch:
not 1/W of it, and not missing the cross-process path through the shared statistics (lightly
#1977).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit._checks import check_paired_embeddings, check_positive
from contrastkit._distributed import all_reduce_with_grad, world_size
from contrastkit.losses._precision import full_precision, loss_dtype

# The variance floor of torch.nn.BatchNorm1d, so that a constant feature standardises to 0, not NaN.
_BATCH_NORM_EPSILON = 1e-5


def _off_diagonal_squares(matrix: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of a square matrix, through a view: no mask and no
    data-dependent shape, so it compiles and captures into CUDA graphs."""
    n = matrix.shape[0]
    # Dropping the last entry and reading rows of n + 1 puts each diagonal entry first in its row.
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].pow(2).sum()


def _check_barlow_options(lambda_offdiag: float) -> None:
    check_positive("lambda_offdiag", lambda_offdiag, "the paper uses 5e-3.", allow_zero=True)


def _check_vicreg_options(invariance_weight: float, variance_weight: float, covariance_weight: float,
                          epsilon: float) -> None:
    for name, value in (("invariance_weight", invariance_weight), ("variance_weight", variance_weight),
                        ("covariance_weight", covariance_weight)):
        check_positive(name, value, "the paper uses 25, 25 and 1.", allow_zero=True)
    check_positive("epsilon", epsilon, "it keeps sqrt differentiable at zero variance; the paper uses 1e-4.")


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, *, lambda_offdiag: float = 5e-3,
                      validate: bool = True) -> Tensor:
    """Barlow Twins redundancy-reduction loss (see the module docstring).

    Args:
        z_a, z_b: floating-point embeddings (N, D) of the same samples under two views; the
            global batch (N times the number of processes) must hold at least 2 samples.
        lambda_offdiag: weight lambda >= 0 of the off-diagonal (redundancy) term.
        validate: check that the inputs are finite (one host sync).

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> barlow_twins_loss(z_a, z_b).shape
        torch.Size([])
    """
    _check_barlow_options(lambda_offdiag)
    # The per-feature standard deviation is taken over the global batch: it needs two samples,
    # which may sit on two processes.
    check_paired_embeddings("Barlow Twins", z_a, z_b, min_batch=2, processes=world_size(), validate=validate,
                            reason="each feature is standardised by its standard deviation over the batch, "
                                   "which one sample does not have; use a larger batch.")
    dtype = loss_dtype(z_a)
    batch = z_a.shape[0] * world_size()

    def standardise(z: Tensor) -> Tensor:
        centred = z - all_reduce_with_grad(z.sum(dim=0)) / batch
        variance = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / batch
        return centred / torch.sqrt(variance + _BATCH_NORM_EPSILON)

    with full_precision(z_a):
        correlation = all_reduce_with_grad(standardise(z_a.to(dtype)).T @ standardise(z_b.to(dtype))) / batch
    on_diagonal = (1 - correlation.diagonal()).pow(2).sum()
    return on_diagonal + lambda_offdiag * _off_diagonal_squares(correlation)


def vicreg_loss(z_a: Tensor, z_b: Tensor, *, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                covariance_weight: float = 1.0, epsilon: float = 1e-4, validate: bool = True) -> Tensor:
    """VICReg variance-invariance-covariance loss (see the module docstring).

    Args:
        z_a, z_b: floating-point embeddings (N, D) of the same samples under two views; the
            global batch (N times the number of processes) must hold at least 2 samples.
        invariance_weight: weight of the mean-squared-error term (paper: 25).
        variance_weight: weight of the per-feature standard-deviation hinge, averaged over the two
            views (paper: 25).
        covariance_weight: weight of the off-diagonal covariance penalty, summed over the two
            views (paper: 1).
        epsilon: added to the variance inside the square root (paper: 1e-4).
        validate: check that the inputs are finite (one host sync).

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> vicreg_loss(z_a, z_b).shape
        torch.Size([])
    """
    _check_vicreg_options(invariance_weight, variance_weight, covariance_weight, epsilon)
    # The covariance divides by (global batch - 1).
    check_paired_embeddings("VICReg", z_a, z_b, min_batch=2, processes=world_size(), validate=validate,
                            reason="the variance and covariance terms divide by N - 1, and one sample has no "
                                   "spread; use a larger batch.")
    dtype = loss_dtype(z_a)
    z_a, z_b = z_a.to(dtype), z_b.to(dtype)
    batch, dim = z_a.shape[0] * world_size(), z_a.shape[1]
    invariance = all_reduce_with_grad((z_a - z_b).pow(2).sum()) / (batch * dim)
    variance = covariance = 0.0
    for z in (z_a, z_b):
        centred = z - all_reduce_with_grad(z.sum(dim=0)) / batch
        with full_precision(z):
            cov = all_reduce_with_grad(centred.T @ centred) / (batch - 1)
        variance = variance + torch.relu(1 - torch.sqrt(cov.diagonal() + epsilon)).mean() / 2
        covariance = covariance + _off_diagonal_squares(cov) / dim
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss`.

    Example:
        >>> loss_fn = BarlowTwinsLoss(lambda_offdiag=5e-3)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, lambda_offdiag: float = 5e-3) -> None:
        super().__init__()
        _check_barlow_options(lambda_offdiag)
        self.lambda_offdiag = lambda_offdiag

    def forward(self, z_a: Tensor, z_b: Tensor, validate: bool = True) -> Tensor:
        return barlow_twins_loss(z_a, z_b, lambda_offdiag=self.lambda_offdiag, validate=validate)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}"


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg_loss`.

    Example:
        >>> loss_fn = VICRegLoss()
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, epsilon: float = 1e-4) -> None:
        super().__init__()
        _check_vicreg_options(invariance_weight, variance_weight, covariance_weight, epsilon)
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.epsilon = epsilon

    def forward(self, z_a: Tensor, z_b: Tensor, validate: bool = True) -> Tensor:
        return vicreg_loss(z_a, z_b, invariance_weight=self.invariance_weight,
                           variance_weight=self.variance_weight, covariance_weight=self.covariance_weight,
                           epsilon=self.epsilon, validate=validate)

    def extra_repr(self) -> str:
        return (f"invariance_weight={self.invariance_weight}, variance_weight={self.variance_weight}, "
                f"covariance_weight={self.covariance_weight}, epsilon={self.epsilon}")
