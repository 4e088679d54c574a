"""Shuffled batches of a text dataset: tuples of sentence lists, with their targets on the device.

The order follows the same (seed, epoch) rule as the image loaders (drawn on the CPU), so resuming
is exact. Sentences stay strings here: the views (augmentation, then tokenization) are made per
batch by :mod:`contrastkit.augment.text_views`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from contrastkit.data.device_loader import BatchLoader
from contrastkit.data.text import TextDataset


class TextLoader(BatchLoader):
    """Iterate ``(columns, targets)`` batches of a :class:`TextDataset`.

    ``columns`` is ``(sentences,)``, ``(anchors, positives)`` or ``(anchors, positives, negatives)``
    as the dataset holds them; ``targets`` are its similarity scores (float32), else its class
    labels (int64), else zeros, on ``device``.

    Example:
        >>> loader = TextLoader(TextDataset(["a", "b", "c", "d", "e"]), batch_size=2)
        >>> [len(columns[0]) for columns, _ in loader.epoch(0)]
        [2, 2]
    """

    def __init__(self, dataset: TextDataset, batch_size: int, *, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = True, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(len(dataset), batch_size, device=device, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        self.columns = [column for column in (dataset.texts, dataset.pairs, dataset.negatives) if column is not None]
        if dataset.scores is not None:
            self.targets: Tensor = dataset.scores.float()
        elif dataset.labels is not None:
            self.targets = dataset.labels.long()
        else:
            self.targets = torch.zeros(len(dataset), dtype=torch.long)

    def epoch(self, epoch: int) -> Iterator[tuple[tuple[list[str], ...], Tensor]]:
        for index in self.batch_indices(epoch):
            rows = index.tolist()
            columns = tuple([column[row] for row in rows] for column in self.columns)
            yield columns, self.targets.index_select(0, index).to(self.device, non_blocking=True)
