"""A first-in-first-out queue of past embeddings: MoCo's dictionary of negatives (He et al., 2020).

Every process enqueues the keys of the whole (gathered) batch, so all ranks hold the same queue.
The state lives in buffers, so it follows ``.to()`` and is saved in ``state_dict``: a resumed run
continues with exactly the same negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit._checks import check_ndim
from contrastkit._distributed import gather_no_grad
from contrastkit.errors import ConfigError, InputError


class MemoryQueue(nn.Module):
    """Fixed-size FIFO of key vectors (and optionally their labels), oldest replaced first.

    Buffers: ``keys`` (size, dim), ``labels`` (size,) int64 with -1 for empty slots (only with
    ``with_labels``), ``pointer`` (next row to write) and ``count`` (rows filled so far).

    Args:
        size: number of keys kept (MoCo: 65536); at least the global batch size.
        dim: key dimension.
        dtype: floating dtype the keys are stored in (keys are cast on enqueue).
        with_labels: also keep one int64 label per key (e.g. for supervised-contrastive queues).

    Example:
        >>> queue = MemoryQueue(1024, 128)
        >>> queue.enqueue(torch.randn(32, 128))
        >>> keys, _ = queue.get()
        >>> keys.shape
        torch.Size([32, 128])
    """

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32, with_labels: bool = False) -> None:
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"queue {name} must be a positive integer, got {value!r}.")
        if not dtype.is_floating_point:
            raise ConfigError(f"queue dtype must be a floating-point dtype, got {dtype}.")
        self.size, self.dim, self.with_labels = size, dim, bool(with_labels)
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long) if with_labels else None)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # Once the queue is full it stays full, so get() can stop reading `count` (a host sync).
        self._known_full = False

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Append a batch of keys (and labels), overwriting the oldest entries once full.

        The batch is detached, gathered from every process and cast to the queue's dtype and
        device; no host sync is needed.

        Args:
            keys: (batch, dim) keys of this process.
            labels: (batch,) integer labels; required exactly when the queue has ``with_labels``.

        Example:
            >>> queue = MemoryQueue(8, 2, with_labels=True)
            >>> queue.enqueue(torch.ones(3, 2), torch.tensor([0, 1, 2]))
        """
        check_ndim("keys", keys, 2, "(batch, dim)")
        if keys.shape[1] != self.dim:
            raise InputError(f"keys have dim {keys.shape[1]} but the queue was built with dim={self.dim}.")
        if self.with_labels != (labels is not None):
            raise InputError("pass labels exactly when the queue was built with with_labels=True "
                             f"(with_labels={self.with_labels}, labels given: {labels is not None}).")
        if labels is not None:
            check_ndim("labels", labels, 1, "(batch,)")
            if labels.shape[0] != keys.shape[0]:
                raise InputError(f"got {labels.shape[0]} labels for {keys.shape[0]} keys; give one label per key.")
            labels = gather_no_grad(labels.detach())
        keys = gather_no_grad(keys.detach())
        batch = keys.shape[0]
        if batch > self.size:
            raise ConfigError(f"queue size {self.size} must be at least the (global) batch size {batch}; "
                              "increase the queue size or lower the batch size.")
        if batch == 0:
            return
        # Rows pointer, pointer+1, ... modulo size: a batch that runs past the end wraps to the start.
        rows = (self.pointer + torch.arange(batch, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, rows, keys.to(device=self.keys.device, dtype=self.keys.dtype))
        if labels is not None:
            self.labels.index_copy_(0, rows, labels.to(device=self.labels.device, dtype=torch.long))
        self.pointer.add_(batch).remainder_(self.size)
        self.count.add_(batch).clamp_(max=self.size)

    def get(self) -> tuple[Tensor, Tensor | None]:
        """The filled part of the queue: (keys (n, dim), labels (n,) or None), n = ``count``.

        Until the queue is full this reads ``count`` (one host sync); afterwards the whole buffer is
        returned without a sync. Rows are in storage order, not age order. The tensors are views of
        the buffers: use them in the loss before the next :meth:`enqueue` (autograd raises if they
        are overwritten before backward).

        Example:
            >>> keys, labels = MemoryQueue(16, 4).get()
            >>> keys.shape, labels
            (torch.Size([0, 4]), None)
        """
        if not self._known_full:
            filled = int(self.count)
            self._known_full = filled == self.size
            if not self._known_full:
                labels = None if self.labels is None else self.labels[:filled]
                return self.keys[:filled], labels
        return self.keys, self.labels

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # The loaded queue may be only partly filled.
        self._known_full = False

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, dtype={self.keys.dtype}, with_labels={self.with_labels}"
