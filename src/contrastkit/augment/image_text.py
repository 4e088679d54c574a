"""Views of an image-caption batch: one augmented image view, one caption per image (drawn among
its candidates), tokenized, and the caption ids that tell the loss which captions repeat."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from contrastkit import _distributed
from contrastkit.augment.image import params_to
from contrastkit.augment.presets import MultiView
from contrastkit.errors import InputError

Tokenize = Callable[[Sequence[str]], Mapping[str, Tensor]]


def pick_captions(candidates: Tensor, draws: Tensor) -> Tensor:
    """One caption id per row of ``candidates`` (B, K): the row's ids >= 0 (-1 pads the end of a
    row) chosen by uniform ``draws`` (B,) in [0, 1).

    Example:
        >>> pick_captions(torch.tensor([[3, -1], [5, 6]]), torch.tensor([0.9, 0.6]))
        tensor([3, 6])
    """
    if candidates.ndim != 2 or draws.shape != candidates.shape[:1]:
        raise InputError(f"candidates must be (B, K) caption ids and draws (B,), got {tuple(candidates.shape)} and "
                         f"{tuple(draws.shape)}.")
    counts = (candidates >= 0).sum(dim=1)
    if bool((counts == 0).any()):
        raise InputError("every image needs at least one caption id >= 0 in its row of candidates.")
    choice = (draws.to(candidates.device) * counts).long().clamp(max=candidates.shape[1] - 1)
    return candidates.gather(1, choice[:, None]).squeeze(1)


class ImageTextViews(nn.Module):
    """Make ``[image view, caption tokens, caption ids]`` from a ``(images, candidate ids)`` batch.

    As :class:`MultiView` under the trainer, the random choices (image augmentation, caption) are
    drawn for the global batch and each process keeps its rows, so a sample gets the same view on
    any number of processes (``draws_for_global_batch``: the trainer gives every process one stream).

    Args:
        image_views: a :class:`MultiView` whose first pipeline augments the images (the others
            are left out; its evaluation transform is :meth:`eval_view`).
        captions: the dataset's captions; ids index it.
        tokenize: captions -> token tensors (the text encoder's ``tokenize``); None: no tokens
            are made (the second view is None), for a method that caches its locked text tower's
            features by caption id (``cache_text_features``).

    Example::

        views = ImageTextViews(preset("digits"), splits.captions, text_encoder.tokenize)
        images, tokens, ids = views((uint8_images, candidate_ids), generator)
    """

    draws_for_global_batch = True

    def __init__(self, image_views: MultiView, captions: Sequence[str], tokenize: Tokenize | None) -> None:
        super().__init__()
        self.image_views = MultiView(list(image_views.views)[:1], image_views.eval_transform,
                                     channels_last=image_views.channels_last, backend=image_views.backend)
        self.captions = list(captions)
        self.tokenize = tokenize

    def forward(self, batch: tuple[Tensor, Tensor], generator: torch.Generator | None = None) -> list[Any]:
        """``batch``: this process's uint8 images (B, C, H, W) on the training device and their
        candidate caption ids (B, K) on the CPU, where the captions are drawn and tokenized
        without a host sync."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InputError("an image-text batch is (images, candidate caption ids); load it with CaptionedLoader.")
        images, candidates = batch
        rows, world = images.shape[0], _distributed.world_size()
        params = self.image_views.sample_params(images.new_zeros(()).expand(rows * world, *images.shape[1:]),
                                                generator)
        draws = torch.rand(rows * world, generator=generator)
        if world > 1:
            mine = slice(_distributed.rank() * rows, (_distributed.rank() + 1) * rows)
            params, draws = tree_map(lambda leaf: leaf[mine], params), draws[mine]
        image = self.image_views.apply(images, params_to(params, images.device))[0]
        ids = pick_captions(candidates.cpu(), draws)
        tokens = None
        if self.tokenize is not None:
            tokens = {key: value.to(images.device, non_blocking=True)
                      for key, value in self.tokenize([self.captions[index] for index in ids.tolist()]).items()}
        return [image, tokens, ids.to(images.device, non_blocking=True)]

    def eval_view(self, images: Tensor) -> Tensor:
        return self.image_views.eval_view(images)
