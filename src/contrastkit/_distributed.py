"""torch.distributed helpers that fall back to single-process behaviour when no group is running.

The library blocks (queues, SwAV's Sinkhorn, DINO's centre) call these so that the same code runs
under torchrun and in a plain Python process.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (same shape on every process) along dim 0 across processes, without
    gradients (for queue keys and statistics). Returns ``tensor`` itself in a single process."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place across processes (a no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each process the gradient of its own slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Every process computes its loss from the whole gathered tensor, so my slice reaches the
        # sum of the per-process losses through every process: the gradient of that sum for my
        # slice is the sum over processes of each one's gradient for it. All-reduce, then slice.
        # (gloo has no reduce_scatter, which would send only the slice.)
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        start = rank() * ctx.rows
        return total[start:start + ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (same shape on every process) along dim 0 across processes, keeping
    the gradient: backward returns to each process the sum over processes of the gradients for its
    own slice. Every process must run backward through it. Returns ``tensor`` itself in a single
    process.

    Example:
        >>> x = torch.ones(2, 3, requires_grad=True)
        >>> gather_with_grad(x) is x  # a single process
        True
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum across processes whose backward sums the incoming gradients across processes too."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Every process's loss depends on the total, so my share reaches the sum of the
        # per-process losses through every process: its gradient is the sum of theirs.
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


def all_reduce_with_grad(tensor: Tensor) -> Tensor:
    """``tensor`` summed over all processes, differentiably: backward hands each process the
    gradient of the sum of every process's loss with respect to its own share. Every process must
    run backward through it. Returns ``tensor`` itself in a single process.

    With the losses of all processes summed (and DistributedDataParallel then averaging the
    parameter gradients over the ``world_size`` processes), a loss that every process computes
    from global statistics gets exactly the gradient of one process holding the global batch.

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> all_reduce_with_grad(x) is x  # a single process
        True
    """
    if not is_distributed():
        return tensor
    return _AllReduceWithGrad.apply(tensor)


def shuffle_order(size: int, step: Tensor) -> Tensor:
    """A permutation of ``range(size)`` drawn from ``step`` (a 0-dim integer tensor) alone, on its
    device: the same on every process without a broadcast, the same again when a resumed run
    replays the step, and no host sync. The order of the indices' hashes (a 32-bit integer mixer
    of index and step)."""
    mixed = torch.arange(size, device=step.device, dtype=torch.int64) + step.to(torch.int64) * 0x9E3779B9
    for _ in range(3):
        mixed = ((mixed ^ (mixed >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return torch.argsort(mixed, stable=True)


@torch.no_grad()
def forward_shuffled(module: Callable[[Tensor], Tensor], batch: Tensor, step: Tensor) -> Tensor:
    """``module(batch)``, computed on the batch shuffled, across processes where there are several,
    and put back in order: MoCo's shuffling BN for its key encoder. Each process's batch norm (or
    each group of a :class:`contrastkit.models.SplitBatchNorm` on one process) then normalises a
    random share of the samples, so that a query and its key never share batch statistics, which
    would let the model find the positive by them. Without gradients (keys are constants).

    Args:
        module: the key encoder.
        batch: this process's inputs; the same number of rows on every process.
        step: a 0-dim integer tensor the shuffle is drawn from (:func:`shuffle_order`), the same
            on every process; a new value gives a new shuffle.
    """
    every_batch = gather_no_grad(batch)
    order = shuffle_order(every_batch.shape[0], step)
    rows = slice(rank() * batch.shape[0], (rank() + 1) * batch.shape[0])
    outputs = gather_no_grad(module(every_batch[order[rows]]))  # in shuffled order
    return outputs[torch.argsort(order)][rows]
