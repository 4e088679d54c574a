"""CLIP's symmetric contrastive loss between two modalities (Radford et al., 2021).

For N matching pairs (x_i, y_i) (an image and its caption), L2-normalise both, scale the cosine
similarities by exp(s) with s the learnable log-scale (log 1/temperature), and classify the right
partner in both directions:

    logits = exp(s) * x_hat y_hat^T                                          (N x N)
    L = ( CE(logits, [0..N-1]) + CE(logits^T, [0..N-1]) ) / 2

CLIP initialises the temperature to 0.07 and keeps exp(s) <= 100. The negatives are the rest of
the local batch, or of the global batch with ``gather_across_processes``.

Repeated captions. When a batch holds several pairs with the same caption (templated captions, a
class's prompts), the one-positive targets would push apart an image and a caption that match.
With ``caption_ids`` (equal ids for equal captions) every column with the row's caption is a
positive, and each direction's cross-entropy takes the uniform distribution over them as its
target, as UniCL does for image-label data (Yang et al., 2022):

    L_i2t = -1/N sum_i 1/|P(i)| sum_{j in P(i)} log softmax_j(logits_i),  P(i) = {j : id_j = id_i}

and the same for the transposed logits. With all ids distinct it is the loss above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit import _distributed
from contrastkit._checks import MAX_LOGIT_SCALE, check_class_labels, check_ndim, check_positive
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import fused as fused_kernels
from contrastkit.losses import tiled as tiled_losses
from contrastkit.losses._contrastive import _check_clip_inputs
from contrastkit.losses._precision import full_precision, loss_dtype


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, *,
              caption_ids: Tensor | None = None, gather_across_processes: bool = False,
              validate: bool = True, tiled: bool | None = None, fused: bool | None = None) -> Tensor:
    """Symmetric image-text cross-entropy (see the module docstring).

    Args:
        image_features: floating-point embeddings (N, D) of the first modality; N >= 2, since
            the negatives of a pair are the other pairs of the batch.
        text_features: embeddings (N, D) of the second modality; row i matches image row i.
        logit_scale: 0-dim tensor holding the LOG of the logit scale (log 1/temperature); its
            gradient is returned when it requires one. At most log(1000) = 6.9078 (checked under
            ``validate``): a larger value is the scale itself passed by mistake (open_clip's
            ClipLoss takes ``logit_scale.exp()``), and its exp() makes the loss meaningless (1.6e6
            times the cosines for CLIP's 1/0.07) or NaN (inf in float32 for 100); pass
            math.log(100) = 4.6052 for CLIP's cap. It is not clamped here: :class:`CLIPLoss`
            keeps it at or below log(max_scale).
        caption_ids: optional (N,) integer ids, equal for equal captions: pairs sharing a caption
            are positives of each other (see the module docstring). Computed on the full logits.
        gather_across_processes: under torch.distributed, contrast this process's images with
            every process's captions and its captions with every process's images (gathered with
            gradients; the ids without). The loss is the mean over this process's rows, whose
            average over the processes (DistributedDataParallel's) is the loss of one process
            holding the global batch, gradients included. A no-op in a single process.
        validate: check that the inputs are finite and the log-scale at most log(1000) (one host
            sync per tensor).
        tiled: compute by tiles (:func:`~contrastkit.losses.tiled.tiled_clip_loss`), never holding
            the N x N logits: True forces it, False forbids it, None (default) picks it when N x N
            exceeds ``tiled.AUTO_TILED_LOGITS`` (8192 x 8192).
        fused: compute both directions in the Triton kernels of :mod:`contrastkit.losses.fused`,
            features kept in their dtype: None (default) on CUDA with Triton where they were
            measured faster or the plain loss would not fit (``fused.kernels_preferred``), first
            call checked against the torch loss; True forces it; False keeps the torch paths.

    Returns:
        The scalar loss, in float32 (or float64 for float64 features).

    Example:
        >>> images, texts = torch.randn(8, 16), torch.randn(8, 16)
        >>> clip_loss(images, texts, torch.tensor(math.log(1 / 0.07))).shape
        torch.Size([])
    """
    _check_clip_inputs(image_features, text_features, logit_scale, validate, "clip_loss")
    check_caption_ids(caption_ids, image_features.shape[0])
    gathered = gather_across_processes and _distributed.is_distributed()
    if tiled is True and (caption_ids is not None or gathered):
        raise ConfigError("the tiled CLIP loss takes one positive per pair within one process; drop tiled=True to "
                          "use caption_ids or gather_across_processes.")
    if fused is True and caption_ids is not None:
        raise ConfigError("the fused CLIP kernels take one positive per pair; drop fused=True to use caption_ids.")
    dtype = loss_dtype(image_features)
    images = F.normalize(image_features.to(dtype), dim=1)
    texts = F.normalize(text_features.to(dtype), dim=1)
    if tiled is True and fused is None:
        fused = False  # the tiled path was asked for
    num_logits = images.shape[0] ** 2 * (_distributed.world_size() if gathered else 1)
    if caption_ids is None and fused_kernels.use_fused(fused, image_features, num_logits):
        def in_kernels() -> Tensor:
            kernel_dtype, scale = image_features.dtype, logit_scale.float().exp()
            rows, columns = images.to(kernel_dtype), texts.to(kernel_dtype)
            offset = _distributed.rank() * rows.shape[0] if gathered else 0
            all_rows = _distributed.gather_with_grad(rows) if gathered else rows
            all_columns = _distributed.gather_with_grad(columns) if gathered else columns
            return (fused_kernels.fused_paired_cross_entropy(rows, all_columns, scale, offset)
                    + fused_kernels.fused_paired_cross_entropy(columns, all_rows, scale, offset)) / 2

        return fused_kernels.checked_once("clip_loss", image_features, fused, in_kernels, lambda: clip_loss(
            image_features, text_features, logit_scale, gather_across_processes=gather_across_processes,
            validate=False, tiled=tiled, fused=False), inputs=(image_features, text_features, logit_scale))
    if fused is None and tiled is None and fused_kernels.kernels_apply(image_features):
        tiled = False  # the plain loss fits (else the kernels ran), and on a GPU it beats the tiled path
    if caption_ids is None and not gathered and tiled_losses._use_tiled(tiled, images.shape[0] ** 2):
        return tiled_losses._clip_from_normalised(images, texts, logit_scale.to(dtype).exp(),
                                                  tiled_losses.DEFAULT_TILE_SIZE)
    # This process's rows against every process's columns (its own batch's in one process).
    all_images = _distributed.gather_with_grad(images) if gathered else images
    all_texts = _distributed.gather_with_grad(texts) if gathered else texts
    scale = logit_scale.to(dtype).exp()
    with full_precision(images):
        image_to_text, text_to_image = scale * images @ all_texts.T, scale * texts @ all_images.T
    if caption_ids is None:
        offset = _distributed.rank() * images.shape[0] if gathered else 0
        targets = torch.arange(images.shape[0], device=images.device) + offset
        return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2
    positive = same_caption(caption_ids, _distributed.gather_no_grad(caption_ids) if gathered else caption_ids)
    return (_soft_cross_entropy(image_to_text, positive) + _soft_cross_entropy(text_to_image, positive)) / 2


def check_caption_ids(caption_ids: Tensor | None, batch: int) -> None:
    """Refuse caption ids that are not one integer per pair."""
    if caption_ids is None:
        return
    check_ndim("caption_ids", caption_ids, 1, "(batch,)")
    check_class_labels("caption_ids", caption_ids)
    if caption_ids.shape[0] != batch:
        raise InputError(f"caption_ids has {caption_ids.shape[0]} entries but the batch has {batch} pairs; give "
                         "one id per pair, equal for equal captions.")


def same_caption(row_ids: Tensor, column_ids: Tensor) -> Tensor:
    """(rows, columns) bool matrix: where a row's caption is the column's."""
    return row_ids[:, None] == column_ids.to(row_ids.device)[None, :]


def _soft_cross_entropy(logits: Tensor, positive: Tensor) -> Tensor:
    """Mean over rows of the cross-entropy against the uniform distribution over each row's
    positive columns (every row has one: its own pair)."""
    target = positive.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class CLIPLoss(nn.Module):
    """:func:`clip_loss` holding the (log) logit scale.

    The effective scale is capped at ``max_scale`` by clamping the log-scale in forward: while
    the parameter sits above log(max_scale) it gets no gradient from the loss, as with CLIP's
    clipping.

    Args:
        init_temperature: initial temperature, logit_scale = log(1/init_temperature) (CLIP: 0.07).
        learnable: make the log-scale an nn.Parameter (CLIP) or a fixed buffer.
        max_scale: cap on exp(logit_scale) (CLIP: 100), at least 1/init_temperature and at most
            1000 (the most :func:`clip_loss` takes).
        tiled: passed to :func:`clip_loss` (None: tiled above 8192 x 8192 logits).
        fused, gather_across_processes: passed to :func:`clip_loss`.

    Example:
        >>> loss_fn = CLIPLoss(init_temperature=0.07)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True, max_scale: float = 100.0,
                 tiled: bool | None = None, fused: bool | None = None, gather_across_processes: bool = False) -> None:
        super().__init__()
        check_positive("init_temperature", init_temperature, "CLIP uses 0.07.")
        check_positive("max_scale", max_scale, "CLIP uses 100.")
        if max_scale < 1 / init_temperature:
            raise ConfigError(f"max_scale must be >= 1/init_temperature = {1 / init_temperature:.4g}, got "
                              f"{max_scale}; raise max_scale (CLIP uses 100) or init_temperature.")
        if max_scale > MAX_LOGIT_SCALE:
            raise ConfigError(f"max_scale must be <= {MAX_LOGIT_SCALE:g} (temperature 0.001), got {max_scale}; "
                              "CLIP uses 100.")
        self.max_scale = max_scale
        self.fused = fused
        self.gather_across_processes = gather_across_processes
        self.tiled = tiled
        logit_scale = torch.tensor(math.log(1 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(logit_scale)
        else:
            self.register_buffer("logit_scale", logit_scale)

    def forward(self, image_features: Tensor, text_features: Tensor, caption_ids: Tensor | None = None,
                validate: bool = True) -> Tensor:
        logit_scale = self.logit_scale.clamp(max=math.log(self.max_scale))
        return clip_loss(image_features, text_features, logit_scale, caption_ids=caption_ids,
                         gather_across_processes=self.gather_across_processes, validate=validate, tiled=self.tiled,
                         fused=self.fused)

    def extra_repr(self) -> str:
        return (f"max_scale={self.max_scale}, tiled={self.tiled}, fused={self.fused}, "
                f"gather_across_processes={self.gather_across_processes}")
