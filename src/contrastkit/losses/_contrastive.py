"""Checks and input preparation shared by the InfoNCE family (plain and tiled) and CLIP's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_finite, check_ndim
from contrastkit._distributed import gather_with_grad, rank
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import loss_dtype

SIMILARITIES = ("cosine", "dot")


def _check_options(temperature: float, similarity: str) -> None:
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; contrastive losses use 0.05 to 0.5.")
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")


def _check_views(views: tuple[Tensor, ...], negatives: Tensor | None, loss: str = "info_nce") -> None:
    for index, view in enumerate(views):
        check_ndim(f"view {index}", view, 2, "(batch, dim)")
        if view.shape != views[0].shape:
            raise InputError(f"all views must have the same shape (batch, dim); view 0 is "
                             f"{tuple(views[0].shape)} but view {index} is {tuple(view.shape)}.")
    if views[0].shape[0] < 1:
        raise InputError(f"{loss} got an empty batch.")
    if negatives is not None:
        check_ndim("negatives", negatives, 2, "(num_negatives, dim)")
        if negatives.shape[1] != views[0].shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the views have dim "
                             f"{views[0].shape[1]}; both must come from the same projection head.")


def _check_inputs(views: tuple[Tensor, ...], temperature: float, similarity: str, negatives: Tensor | None,
                  validate: bool) -> None:
    _check_options(temperature, similarity)
    _check_views(views, negatives)
    if validate:
        for index, view in enumerate(views):
            check_finite(f"view {index}", view)


def _contrast_rows(views: tuple[Tensor, ...], similarity: str, gather: bool) -> tuple[Tensor, Tensor, int]:
    """The rows of the loss, in the loss dtype and L2-normalised for cosine similarity.

    Returns (anchors, rows, self_offset): this process's views stacked view by view (A = V*N, D);
    every row an anchor contrasts with (M, D), which are the anchors themselves or, with
    ``gather``, every process's anchors in rank order; and the column of anchor 0 among the rows,
    so that anchor i is row i + self_offset and its positives are rows self_offset + (i + j*N) % A.
    """
    anchors = torch.cat(views).to(loss_dtype(views[0]))
    if similarity == "cosine":
        anchors = F.normalize(anchors, dim=1)
    if not gather:
        return anchors, anchors, 0
    return anchors, gather_with_grad(anchors), rank() * anchors.shape[0]


def _prepared_negatives(negatives: Tensor | None, dtype: torch.dtype, similarity: str) -> Tensor | None:
    if negatives is None:
        return None
    negatives = negatives.to(dtype)
    return F.normalize(negatives, dim=1) if similarity == "cosine" else negatives


def _check_clip_inputs(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, validate: bool) -> None:
    check_ndim("image_features", image_features, 2, "(batch, dim)")
    check_ndim("text_features", text_features, 2, "(batch, dim)")
    check_ndim("logit_scale", logit_scale, 0, "() (a 0-dim tensor)")
    if image_features.shape != text_features.shape:
        raise InputError(f"image_features and text_features must have the same shape (batch, dim); got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}; project both "
                         "modalities to the same dim and pass matching pairs.")
    if image_features.shape[0] < 1:
        raise InputError("clip_loss got an empty batch.")
    if validate:
        check_finite("image_features", image_features)
        check_finite("text_features", text_features)
        check_finite("logit_scale", logit_scale)
