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

    Subclasses decide where the dataset lives and what a batch is (a uint8 image tensor, a tuple of
    sentence lists...), and implement ``epoch(epoch)``, which yields ``(batch, labels)``.
    """

    def __init__(self, num_samples: int, batch_size: int, *, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if drop_last and batch_size > num_samples:
            raise ConfigError(f"batch_size {batch_size} is larger than the dataset ({num_samples} samples); use "
                              f"batch_size <= {num_samples}.")
        self.num_samples = num_samples
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        count, rest = divmod(self.num_samples, self.batch_size)
        return count if self.drop_last or rest == 0 else count + 1

    def batch_indices(self, epoch: int) -> list[Tensor]:
        """The epoch's shuffled index batches (CPU int64), a function of (seed, epoch) only."""
        order = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch))
        return list(order[:len(self) * self.batch_size].split(self.batch_size))

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
                 device: str | torch.device = "cpu", seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(images.shape[0], batch_size, device=device, seed=seed, drop_last=drop_last)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.cat(self.batch_indices(epoch)).to(self.device)  # one copy per epoch
        for index in order.split(self.batch_size):
            yield self.images.index_select(0, index), self.labels.index_select(0, index)
