"""Checks and input preparation shared by the InfoNCE family (plain and tiled) and CLIP's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import (check_batch_size, check_embeddings, check_finite, check_log_scale, check_ndim,
                                 check_positive)
from contrastkit._distributed import gather_with_grad, rank, world_size
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import loss_dtype

SIMILARITIES = ("cosine", "dot")


def _check_options(temperature: float, similarity: str) -> None:
    check_positive("temperature", temperature, "contrastive losses use 0.05 to 0.5.")
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")


def _view_name(index: int) -> str:
    """The argument name of view ``index`` of ``f(z_a, z_b, *more_views)``, for messages."""
    return ("z_a", "z_b")[index] if index < 2 else f"more_views[{index - 2}]"


def _check_views(views: tuple[Tensor, ...], negatives: Tensor | None) -> None:
    """Shapes and dtypes of the views (and extra negatives): floating point, all (batch, dim) alike."""
    for index, view in enumerate(views):
        check_embeddings(_view_name(index), view)
        if view.shape != views[0].shape:
            raise InputError(f"all views must have the same shape (batch, dim); z_a is "
                             f"{tuple(views[0].shape)} but {_view_name(index)} is {tuple(view.shape)}.")
    if negatives is not None:
        check_embeddings("negatives", negatives, "(num_negatives, dim)")
        if negatives.shape[1] != views[0].shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the views have dim "
                             f"{views[0].shape[1]}; both must come from the same projection head.")


def _check_finite_views(views: tuple[Tensor, ...]) -> None:
    for index, view in enumerate(views):
        check_finite(_view_name(index), view)


def _check_inputs(views: tuple[Tensor, ...], temperature: float, similarity: str, negatives: Tensor | None,
                  validate: bool, gather: bool, loss: str) -> None:
    _check_options(temperature, similarity)
    _check_views(views, negatives)
    # An anchor's negatives are the other samples' rows (of every process, when gathered) and the
    # extra negatives: with one sample in all and no extra negatives, every other row is one of
    # its positives and the loss has nothing to contrast (exactly 0 for two views).
    has_extra_negatives = negatives is not None and negatives.shape[0] > 0
    check_batch_size(loss, views[0].shape[0], 1 if has_extra_negatives else 2,
                     "with one sample every other row is one of its positives, so there is no negative to "
                     "contrast with; use a larger batch, or pass negatives= (e.g. a memory queue).",
                     unit="samples per view (or extra negatives)", processes=world_size() if gather else 1)
    if validate:
        _check_finite_views(views)
        if negatives is not None:
            check_finite("negatives", negatives)


def _contrast_rows(views: tuple[Tensor, ...], similarity: str, gather: bool,
                   dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, int]:
    """The rows of the loss, L2-normalised (in the loss dtype) for cosine similarity, then in
    ``dtype`` (default: the loss dtype).

    Returns (anchors, rows, self_offset): this process's views stacked view by view (A = V*N, D);
    every row an anchor contrasts with (M, D), which are the anchors themselves or, with
    ``gather``, every process's anchors in rank order; and the column of anchor 0 among the rows,
    so that anchor i is row i + self_offset and its positives are rows self_offset + (i + j*N) % A.
    """
    anchors = torch.cat(views).to(loss_dtype(views[0]))
    if similarity == "cosine":
        anchors = F.normalize(anchors, dim=1)
    if dtype is not None:
        anchors = anchors.to(dtype)
    if not gather:
        return anchors, anchors, 0
    return anchors, gather_with_grad(anchors), rank() * anchors.shape[0]


def _prepared_negatives(negatives: Tensor | None, dtype: torch.dtype, similarity: str) -> Tensor | None:
    if negatives is None:
        return None
    negatives = negatives.to(dtype)
    return F.normalize(negatives, dim=1) if similarity == "cosine" else negatives


def _check_clip_inputs(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, validate: bool,
                       loss: str) -> None:
    check_embeddings("image_features", image_features)
    check_embeddings("text_features", text_features)
    check_ndim("logit_scale", logit_scale, 0, "() (a 0-dim tensor)")
    if image_features.shape != text_features.shape:
        raise InputError(f"image_features and text_features must have the same shape (batch, dim); got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}; project both "
                         "modalities to the same dim and pass matching pairs.")
    # The negatives of a pair are the other pairs of the batch: with one pair, each direction's
    # softmax has a single entry and both cross-entropies are exactly 0.
    check_batch_size(loss, image_features.shape[0], 2,
                     "with one pair each image's only candidate caption is its own, so there is no negative "
                     "and the loss is 0; use a larger batch.", unit="pairs")
    if validate:
        check_finite("image_features", image_features)
        check_finite("text_features", text_features)
        check_log_scale(loss, "logit_scale", logit_scale)
