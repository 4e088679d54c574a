"""Shuffled batches of a uint8 dataset kept in host memory, for datasets too large for the device.

On a CUDA device a worker thread gathers the next batches into pinned (page-locked) memory while the
GPU trains, and each batch is copied on a side stream, so neither the gather nor the host-to-device
copy sits on the training stream's critical path. The batches are raw uint8 (a quarter of float32's
bytes); the augmentations then run on the GPU as with :class:`DeviceLoader`.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import torch
from torch import Tensor

from contrastkit.data.datasets import PLACEMENTS
from contrastkit.data.device_loader import BatchLoader, DeviceLoader
from contrastkit.data.streaming import StreamedImages, StreamLoader
from contrastkit.errors import ConfigError


class HostLoader(BatchLoader):
    """Iterate shuffled (images, labels) batches of a host-resident dataset on ``device``.

    The same interface as :class:`DeviceLoader`, and the same order for the same seed on a CPU
    device. ``prefetch`` batches are gathered ahead.

    Example:
        >>> loader = HostLoader(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10), batch_size=4)
        >>> [images.shape[0] for images, _ in loader.epoch(0)]
        [4, 4]
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *,
                 device: str | torch.device = "cpu", seed: int = 0, drop_last: bool = True,
                 prefetch: int = 3, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(images.shape[0], batch_size, device=device, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        self.images, self.labels = images.cpu(), labels.cpu()
        if prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1, got {prefetch}.")
        self.prefetch = prefetch

    def _gather(self, index: Tensor, pin: bool) -> tuple[Tensor, Tensor]:
        images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
        return (images.pin_memory(), labels.pin_memory()) if pin else (images, labels)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self.batch_indices(epoch)
        if self.device.type != "cuda":
            for index in batches:
                yield self._gather(index, pin=False)
            return
        yield from self._cuda_batches(batches)

    def _cuda_batches(self, batches: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        copy_stream = torch.cuda.Stream(self.device)
        compute_stream = torch.cuda.current_stream(self.device)

        def stage(future: Future) -> tuple[tuple[Tensor, Tensor], torch.cuda.Event]:
            images, labels = future.result()
            with torch.cuda.stream(copy_stream):
                batch = (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
                return batch, copy_stream.record_event()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = deque(pool.submit(self._gather, index, True) for index in batches[:self.prefetch])
            queued = len(pending)
            staged = stage(pending.popleft()) if pending else None
            while staged is not None:
                if queued < len(batches):
                    pending.append(pool.submit(self._gather, batches[queued], True))
                    queued += 1
                # Start the next copy before handing out this batch, so it overlaps this step's compute.
                following = stage(pending.popleft()) if pending else None
                batch, copied = staged
                compute_stream.wait_event(copied)
                for tensor in batch:
                    tensor.record_stream(compute_stream)  # the copy stream's allocation is used here
                yield batch
                staged = following


# A dataset may take this share of the device's free memory and still be kept there whole.
DEVICE_SHARE = 0.5


def create_loader(images: Tensor | StreamedImages, labels: Tensor, batch_size: int, *, device: torch.device,
                  seed: int = 0, placement: str = "auto", rank: int | None = None,
                  world_size: int | None = None) -> BatchLoader:
    """The loader for where the dataset lives: a :class:`StreamLoader` for streamed images, else a
    :class:`DeviceLoader` when the uint8 dataset fits on ``device`` (``placement="auto"``: at most
    half its free memory; always on a CPU), else a :class:`HostLoader`."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"data_placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}.")
    if isinstance(images, StreamedImages):
        if placement in ("device", "host"):
            raise ConfigError(f"data_placement={placement} holds decoded images, but these are streamed from their "
                              "files; load them with the same placement (load_dataset(..., placement=...)).")
        return StreamLoader(images, labels, batch_size, device=device, seed=seed, rank=rank, world_size=world_size)
    if placement == "stream":
        raise ConfigError("data_placement=stream needs images streamed from their files (load_dataset(path, "
                          "placement='stream')); these are decoded in memory.")
    if placement == "auto":
        fits = device.type != "cuda" or images.nbytes <= DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]
        placement = "device" if fits else "host"
    loader = DeviceLoader if placement == "device" else HostLoader
    return loader(images, labels, batch_size, device=device, seed=seed, rank=rank, world_size=world_size)
