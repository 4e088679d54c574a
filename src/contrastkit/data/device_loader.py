"""Shuffled batches of a uint8 dataset held whole on the training device.

Each epoch's order is drawn once on the CPU from (seed, epoch) and moved to the device in one copy,
so the loop never runs per-sample Python, resuming is exact, and the same seed gives the same
batches whether the data lives on the device or in host memory, on a laptop or a GPU (their random
generators differ, so nothing random is drawn on the device).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from contrastkit import _distributed
from contrastkit._wording import counted
from contrastkit.errors import ConfigError


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """Independent seeds per (run seed, epoch, stream): stream 0 orders the data, 1 augments it."""
    return (seed * 1_000_003 + epoch) * 7 + stream


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded for (run seed, epoch, stream), the only source of training randomness."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))


class BatchLoader:
    """What every loader shares, whatever the modality: the checks, the batch count, and the
    (seed, epoch) -> order rule.

    ``batch_size`` is the global batch. Under torch.distributed (``world_size`` processes, by
    default those of the running process group) each process takes its own slice of every global
    batch, ``batch_size / world_size`` samples, so the processes together see exactly the batches
    of a single process, whatever their number.

    Subclasses decide where the dataset lives and what a batch is (a uint8 image tensor, a tuple of
    sentence lists...), and implement ``epoch(epoch)``, which yields this process's ``(batch, labels)``.
    """

    def __init__(self, num_samples: int, batch_size: int, *, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = True, rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if drop_last and batch_size > num_samples:
            raise ConfigError(f"batch_size {batch_size} is larger than the dataset "
                              f"({counted(num_samples, 'sample')}); use batch_size <= {num_samples}.")
        self.rank = _distributed.rank() if rank is None else rank
        self.world_size = _distributed.world_size() if world_size is None else world_size
        if batch_size % self.world_size:
            raise ConfigError(f"batch_size {batch_size} is the global batch and must split evenly over the "
                              f"{self.world_size} processes; use a multiple of {self.world_size}.")
        if self.world_size > 1 and not drop_last:
            raise ConfigError("drop_last=False would leave a last batch that does not split evenly over the "
                              "processes; keep drop_last=True under torch.distributed.")
        self.num_samples = num_samples
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.local_batch_size = batch_size // self.world_size
        self.seed = seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        count, rest = divmod(self.num_samples, self.batch_size)
        return count if self.drop_last or rest == 0 else count + 1

    def batch_indices(self, epoch: int) -> list[Tensor]:
        """This process's index batches of the epoch (CPU int64), a function of (seed, epoch) only:
        its slice of each shuffled global batch."""
        order = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch))
        start = self.rank * self.local_batch_size
        return [batch[start:start + self.local_batch_size]
                for batch in order[:len(self) * self.batch_size].split(self.batch_size)]

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Tensor]]:
        raise NotImplementedError


class DeviceLoader(BatchLoader):
    """Iterate shuffled (images, labels) batches of a dataset resident on ``device``.

    Example:
        >>> loader = DeviceLoader(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10), batch_size=4)
        >>> [images.shape[0] for images, _ in loader.epoch(0)]
        [4, 4]
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *,
                 device: str | torch.device = "cpu", seed: int = 0, drop_last: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(images.shape[0], batch_size, device=device, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.cat(self.batch_indices(epoch)).to(self.device)  # one copy per epoch
        for index in order.split(self.local_batch_size):
            yield self.images.index_select(0, index), self.labels.index_select(0, index)
