"""MoCo's query-key InfoNCE (He et al. 2020; Chen et al. 2020, 2021).

Queries q (from the online encoder) are classified against keys k (from the momentum encoder).
With q, k L2-normalised and t the temperature, for query i:

* MoCo v3 (no queue): the negatives are the other keys of the batch,
      L_i = -log( exp(q_i.k_i / t) / sum_j exp(q_i.k_j / t) )
* MoCo v1/v2 (a queue of K past keys n_1..n_K): the negatives are the queue only,
      L_i = -log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_k exp(q_i.n_k / t)) )

L is the mean over queries. Unlike :func:`contrastkit.losses.info_nce`, keys are never anchors and
queries are never negatives: the asymmetry the momentum encoder relies on.

Under torch.distributed, ``gather_across_processes=True`` makes MoCo v3's negatives every
process's keys (gathered; keys carry no gradient), query i of rank r having key r * N + i as its
positive; the mean over this process's queries, averaged over the processes as
DistributedDataParallel averages gradients, is the global batch's loss. MoCo v2's queue is filled
with the gathered keys by :class:`contrastkit.models.MemoryQueue`, so its loss needs no gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_embeddings, check_finite, check_positive
from contrastkit._distributed import gather_no_grad, rank, world_size
from contrastkit.errors import InputError
from contrastkit.losses import fused as fused_kernels
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_temperature(temperature: float) -> None:
    check_positive("temperature", temperature, "MoCo uses 0.2 (v2) or 0.1 to 0.2 (v3).")


def moco_info_nce(queries: Tensor, keys: Tensor, *, negatives: Tensor | None = None,
                  temperature: float = 0.2, validate: bool = True, gather_across_processes: bool = False,
                  fused: bool | None = None) -> Tensor:
    """MoCo's InfoNCE of queries against their keys (see the module docstring).

    Args:
        queries: (N, D) floating-point online-encoder embeddings; without ``negatives`` N >= 2,
            as the other keys of the batch are the negatives.
        keys: (N, D) momentum-encoder embeddings of the other view of the same samples; they are
            used as given (detach them, as MoCo does, if they carry a graph).
        negatives: optional (K, D) memory queue (MoCo v2), K >= 1; without it the other keys of
            the batch are the negatives (MoCo v3).
        temperature: softmax temperature t > 0.
        validate: check that the inputs are finite (one host sync).
        gather_across_processes: without a queue, contrast with every process's keys (see the
            module docstring); a no-op in a single process or with ``negatives``.
        fused: compute in the Triton kernels of :mod:`contrastkit.losses.fused`, rows kept in
            their dtype: None (default) on CUDA with Triton where they were measured faster or the
            plain loss would not fit (``fused.kernels_preferred``), first call checked against the
            torch loss; True forces it; False keeps the torch path.

    Example:
        >>> q, k, queue = torch.randn(8, 16), torch.randn(8, 16), torch.randn(64, 16)
        >>> moco_info_nce(q, k, negatives=queue, temperature=0.2).shape
        torch.Size([])
    """
    _check_temperature(temperature)
    check_embeddings("queries", queries)
    check_embeddings("keys", keys)
    if queries.shape != keys.shape:
        raise InputError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must have the same "
                         "shape: key i is the positive of query i.")
    if negatives is not None:
        check_embeddings("negatives", negatives, "(num_negatives, dim)")
        if negatives.shape[1] != queries.shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the queries have dim "
                             f"{queries.shape[1]}; both must come from the same projection head.")
        # With a queue the negatives are the queue only: an empty one leaves the positive alone in
        # the softmax and the loss at exactly 0.
        if negatives.shape[0] == 0:
            raise InputError("negatives is an empty queue (0 rows), so no query has a negative and the loss "
                             "would be 0; pass negatives=None while the queue is empty to use the other keys "
                             "of the batch instead.")
    check_batch_size("moco_info_nce", queries.shape[0], 1 if negatives is not None else 2,
                     "without a queue the negatives of a query are the other keys of the batch, and one "
                     "sample has none; use a larger batch or pass negatives= (a queue of past keys).",
                     unit="samples (or a queue of negatives)")
    if validate:
        for name, tensor in (("queries", queries), ("keys", keys), ("negatives", negatives)):
            if tensor is not None:
                check_finite(name, tensor)
    dtype = loss_dtype(queries)
    q = F.normalize(queries.to(dtype), dim=1)
    k = F.normalize(keys.to(dtype), dim=1)
    num_keys = keys.shape[0] * (world_size() if gather_across_processes else 1)
    num_logits = queries.shape[0] * (num_keys + (0 if negatives is None else negatives.shape[0]))
    if fused_kernels.use_fused(fused, queries, num_logits):
        return fused_kernels.checked_once(
            "moco_info_nce", queries, fused,
            lambda: _fused_moco(q.to(queries.dtype), k.to(queries.dtype), negatives, temperature,
                                gather_across_processes),
            lambda: moco_info_nce(queries, keys, negatives=negatives, temperature=temperature, validate=False,
                                  gather_across_processes=gather_across_processes, fused=False),
            inputs=(queries, keys, negatives))
    with full_precision(q):
        if negatives is None:
            offset = 0
            if gather_across_processes:
                k, offset = gather_no_grad(k.detach()), rank() * q.shape[0]
            logits = q @ k.T / temperature
            targets = torch.arange(q.shape[0], device=q.device) + offset
        else:
            n = F.normalize(negatives.to(dtype), dim=1)
            positive = (q * k).sum(dim=1, keepdim=True)
            logits = torch.cat([positive, q @ n.T], dim=1) / temperature
            targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, targets)


def _fused_moco(q: Tensor, k: Tensor, negatives: Tensor | None, temperature: float, gather: bool) -> Tensor:
    scale = torch.full((1,), 1.0 / temperature, dtype=torch.float32, device=q.device)
    if negatives is None:
        offset = 0
        if gather:
            k, offset = gather_no_grad(k.detach()), rank() * q.shape[0]
        return fused_kernels.fused_paired_cross_entropy(q, k, scale, offset)
    queue = F.normalize(negatives.to(loss_dtype(negatives)), dim=1).to(q.dtype)
    # The queue follows the keys; of the keys, each query sees only its own.
    return fused_kernels.fused_paired_cross_entropy(q, torch.cat([k, queue]), scale, drop_others=True)


class MoCoLoss(nn.Module):
    """Module form of :func:`moco_info_nce`.

    Example:
        >>> loss_fn = MoCoLoss(temperature=0.2)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16), negatives=torch.randn(32, 16))
    """

    def __init__(self, temperature: float = 0.2, gather_across_processes: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.gather_across_processes = gather_across_processes
        self.fused = fused

    def forward(self, queries: Tensor, keys: Tensor, *, negatives: Tensor | None = None,
                validate: bool = True) -> Tensor:
        return moco_info_nce(queries, keys, negatives=negatives, temperature=self.temperature, validate=validate,
                             gather_across_processes=self.gather_across_processes, fused=self.fused)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, gather_across_processes={self.gather_across_processes}, "
                f"fused={self.fused}")
