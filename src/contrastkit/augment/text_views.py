"""Views of a text batch: the text counterpart of :class:`contrastkit.augment.MultiView`.

A text batch is a tuple of sentence lists, one per column of the dataset: ``(sentences,)``,
``(anchors, positives)`` or ``(anchors, positives, negatives)``. :class:`TextViews` turns it into
the tokenized views a method trains on, in three named recipes (``text_preset``):

* ``dropout``: the sentences twice, unchanged; the encoder's dropout makes the two views differ
  (unsupervised SimCSE).
* ``pairs``: the dataset's columns as they are (supervised SimCSE, CoSENT, pair InfoNCE).
* ``eda``: two views with word deletion and word swaps (text augmentation in SimCLR's manner).

Each view is tokenized on its own, padded to its longest sentence: views of one length (the two
dropout views) still go through the encoder as one batch, and a column of short sentences does not
pay for the padding of a column of long ones (a pair's two sides pad to about half the tokens they
would together on STS-B). Random choices come from the CPU generator, as for images.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from contrastkit.errors import ConfigError, InputError

Tokenize = Callable[[Sequence[str]], Mapping[str, Tensor]]
TextTransform = Callable[..., list[str]]

TEXT_PRESETS = ("dropout", "pairs", "eda")


class TextViews:
    """Tokenized views of a text batch.

    Args:
        tokenize: sentences -> token tensors (the encoder's :meth:`TextEncoder.tokenize`).
        transforms: one entry per view, each a text transform ``(texts, generator) -> texts`` or
            None (the sentences as they are); with ``columns=True`` there is one view per batch
            column and ``transforms`` (if given) pairs with the columns.
        columns: take the views from the batch's columns (pairs, triplets) instead of making them
            from its first column.
        device: where the token tensors go.

    Example:
        >>> views = TextViews(lambda texts: {"input_ids": torch.ones(len(texts), 3, dtype=torch.long),
        ...                                  "attention_mask": torch.ones(len(texts), 3, dtype=torch.long)},
        ...                   [None, None])
        >>> [view["input_ids"].shape for view in views((["a b", "c d"],))]
        [torch.Size([2, 3]), torch.Size([2, 3])]
    """

    def __init__(self, tokenize: Tokenize, transforms: Sequence[TextTransform | None] = (None, None), *,
                 columns: bool = False, device: str | torch.device = "cpu") -> None:
        if not columns and not transforms:
            raise ConfigError("TextViews needs at least one view (one transform, or None for the sentences as "
                              "they are).")
        self.tokenize = tokenize
        self.transforms = list(transforms)
        self.columns = columns
        self.device = torch.device(device)

    def to(self, device: str | torch.device) -> "TextViews":
        self.device = torch.device(device)
        return self

    def __call__(self, batch: Sequence[Sequence[str]], generator: torch.Generator | None = None) -> list[dict[str, Tensor]]:
        if not isinstance(batch, (tuple, list)) or not batch or not isinstance(batch[0], (list, tuple)):
            raise InputError(f"a text batch is a tuple of sentence lists, got {type(batch).__name__}.")
        if self.columns:
            transforms = self.transforms or [None] * len(batch)
            if len(transforms) != len(batch):
                raise InputError(f"{len(transforms)} column transforms for a batch of {len(batch)} columns.")
            views = [list(column) if transform is None else transform(list(column), generator)
                     for column, transform in zip(batch, transforms)]
        else:
            views = [list(batch[0]) if transform is None else transform(list(batch[0]), generator)
                     for transform in self.transforms]
        return [{key: value.to(self.device, non_blocking=True) for key, value in self.tokenize(view).items()}
                for view in views]


def text_preset(name: str, tokenize: Tokenize, *, device: str | torch.device = "cpu") -> TextViews:
    """The named view recipe (see the module docstring) for an encoder's ``tokenize``."""
    if name == "dropout":
        return TextViews(tokenize, [None, None], device=device)
    if name == "pairs":
        return TextViews(tokenize, (), columns=True, device=device)
    if name == "eda":
        from contrastkit.augment.text import TextCompose, WordDeletion, WordSwap

        eda = TextCompose([WordDeletion(0.1), WordSwap(1)])
        return TextViews(tokenize, [eda, eda], device=device)
    raise ConfigError(f"unknown text preset {name!r}; choose one of {', '.join(TEXT_PRESETS)}.")
