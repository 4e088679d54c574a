"""Decoupled contrastive loss (DCL and DCLW, Yeh et al., 2022).

InfoNCE with the positive pair taken out of the denominator. For two views z^(1), z^(2) of N
samples and s the cosine similarity, the anchor z_i^(k) (k = 1, 2) has the loss

    L_i^(k) = -w_i s(z_i^(1), z_i^(2))/t + log sum_{l in {1,2}, j != i} exp(s(z_i^(k), z_j^(l))/t)

so its 2N - 2 negatives are every other sample in both views, and L is the mean over all 2N
anchors. DCL has w_i = 1; DCLW weights the positive with the negative von Mises-Fisher weight

    w_i = 2 - exp(s_i/sigma) / ( 1/N sum_j exp(s_j/sigma) ),    s_i = s(z_i^(1), z_i^(2)),

which averages to 1 over the batch and is larger for the pairs that are still far apart. The
paper puts no stop-gradient on w, so gradients flow through it as the formula is written.

Under torch.distributed, ``gather_across_processes=True`` makes the negatives (and DCLW's batch
average) span every process's samples, gathered with gradients; each process returns the mean over
its own anchors, which DistributedDataParallel's average over the processes turns into the global
batch's loss and gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_positive
from contrastkit._distributed import gather_with_grad, rank, world_size
from contrastkit.losses._contrastive import _check_finite_views, _check_views
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_options(temperature: float, weight_sigma: float | None) -> None:
    check_positive("temperature", temperature, "typical values are 0.1 to 0.5.")
    if weight_sigma is not None:
        check_positive("weight_sigma", weight_sigma, "DCLW uses 0.5 (the paper); None gives plain DCL.")


def dcl_loss(z_a: Tensor, z_b: Tensor, *, temperature: float = 0.1, weight_sigma: float | None = None,
             validate: bool = True, gather_across_processes: bool = False) -> Tensor:
    """Decoupled contrastive loss of two views (see the module docstring).

    Args:
        z_a, z_b: floating-point embeddings (N, D) of the same N samples under two views, N >= 2.
        temperature: softmax temperature t > 0.
        weight_sigma: sigma of DCLW's von Mises-Fisher positive weight (the paper uses 0.5);
            None gives plain DCL.
        validate: check that the inputs are finite (one host sync).
        gather_across_processes: contrast with every process's samples (see the module
            docstring); a no-op in a single process. Every process must call the loss.

    Returns:
        The scalar mean loss over the 2N anchors, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> dcl_loss(z_a, z_b, temperature=0.1, weight_sigma=0.5).shape
        torch.Size([])
    """
    _check_options(temperature, weight_sigma)
    _check_views((z_a, z_b), None)
    batch = z_a.shape[0]
    gather = gather_across_processes
    check_batch_size("dcl_loss", batch, 2, "with one sample there are no negatives (the decoupled denominator "
                     "is empty); use a larger batch.", processes=world_size() if gather else 1)
    if validate:
        _check_finite_views((z_a, z_b))
    dtype = loss_dtype(z_a)
    anchors = F.normalize(torch.cat([z_a, z_b]).to(dtype), dim=1)
    candidates = gather_with_grad(anchors) if gather else anchors
    first_sample = rank() * batch if gather else 0
    with full_precision(anchors):
        logits = anchors @ candidates.T / temperature
        positive = (anchors[:batch] * anchors[batch:]).sum(dim=1)
    # Decoupling: drop each anchor itself and its positive. Candidates come in blocks of 2N rows
    # per process, rows i and i + N of a block holding that process's sample i.
    anchor_sample = first_sample + torch.arange(2 * batch, device=anchors.device) % batch
    column = torch.arange(candidates.shape[0], device=anchors.device)
    candidate_sample = column // (2 * batch) * batch + column % batch
    logits = logits.masked_fill(anchor_sample[:, None] == candidate_sample[None, :], float("-inf"))
    log_norm = torch.logsumexp(logits, dim=1)
    if weight_sigma is not None:
        positives = gather_with_grad(positive) if gather else positive
        weights = 2 - positives.shape[0] * torch.softmax(positives / weight_sigma, dim=0)
        positive = positive * weights[first_sample:first_sample + batch]
    return (log_norm - positive.repeat(2) / temperature).mean()


class DCLLoss(nn.Module):
    """Module form of :func:`dcl_loss` (DCLW when ``weight_sigma`` is set).

    Example:
        >>> loss_fn = DCLLoss(temperature=0.1, weight_sigma=0.5)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, temperature: float = 0.1, weight_sigma: float | None = None,
                 gather_across_processes: bool = False) -> None:
        super().__init__()
        _check_options(temperature, weight_sigma)
        self.temperature = temperature
        self.weight_sigma = weight_sigma
        self.gather_across_processes = gather_across_processes

    def forward(self, z_a: Tensor, z_b: Tensor, validate: bool = True) -> Tensor:
        return dcl_loss(z_a, z_b, temperature=self.temperature, weight_sigma=self.weight_sigma,
                        validate=validate, gather_across_processes=self.gather_across_processes)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, weight_sigma={self.weight_sigma}, "
                f"gather_across_processes={self.gather_across_processes}")
