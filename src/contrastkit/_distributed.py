"""torch.distributed helpers that fall back to single-process behaviour when no group is running.

The library blocks (queues, SwAV's Sinkhorn, DINO's centre) call these so that the same code runs
under torchrun and in a plain Python process.
"""

from __future__ import annotations

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
