"""CLIP's symmetric contrastive loss between two modalities (Radford et al., 2021).

For N matching pairs (x_i, y_i) (an image and its caption), L2-normalise both, scale the cosine
similarities by exp(s) with s the learnable log-scale (log 1/temperature), and classify the right
partner in both directions:

    logits = exp(s) * x_hat y_hat^T                                          (N x N)
    L = ( CE(logits, [0..N-1]) + CE(logits^T, [0..N-1]) ) / 2

CLIP initialises the temperature to 0.07 and keeps exp(s) <= 100. The negatives are the rest of
the local batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_positive
from contrastkit.errors import ConfigError
from contrastkit.losses import fused as fused_kernels
from contrastkit.losses import tiled as tiled_losses
from contrastkit.losses._contrastive import _check_clip_inputs
from contrastkit.losses._precision import full_precision, loss_dtype


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, *,
              validate: bool = True, tiled: bool | None = None, fused: bool | None = None) -> Tensor:
    """Symmetric image-text cross-entropy (see the module docstring).

    Args:
        image_features: floating-point embeddings (N, D) of the first modality; N >= 2, since
            the negatives of a pair are the other pairs of the batch.
        text_features: embeddings (N, D) of the second modality; row i matches image row i.
        logit_scale: 0-dim tensor holding the LOG of the logit scale (log 1/temperature); its
            gradient is returned when it requires one.
        validate: check that the inputs are finite (one host sync per tensor).
        tiled: compute by tiles (:func:`~contrastkit.losses.tiled.tiled_clip_loss`), never holding
            the N x N logits: True forces it, False forbids it, None (default) picks it when N x N
            exceeds ``tiled.AUTO_TILED_LOGITS`` (8192 x 8192).
        fused: compute both directions in the Triton kernels of :mod:`contrastkit.losses.fused`,
            features kept in their dtype: None (default) on CUDA with Triton, first call checked
            against the torch loss; True forces it; False keeps the torch paths.

    Returns:
        The scalar loss, in float32 (or float64 for float64 features).

    Example:
        >>> images, texts = torch.randn(8, 16), torch.randn(8, 16)
        >>> clip_loss(images, texts, torch.tensor(math.log(1 / 0.07))).shape
        torch.Size([])
    """
    _check_clip_inputs(image_features, text_features, logit_scale, validate, "clip_loss")
    dtype = loss_dtype(image_features)
    images = F.normalize(image_features.to(dtype), dim=1)
    texts = F.normalize(text_features.to(dtype), dim=1)
    if tiled is True and fused is None:
        fused = False  # the tiled path was asked for
    if fused_kernels.use_fused(fused, image_features):
        def in_kernels() -> Tensor:
            kernel_dtype, scale = image_features.dtype, logit_scale.float().exp()
            rows, columns = images.to(kernel_dtype), texts.to(kernel_dtype)
            return (fused_kernels.fused_paired_cross_entropy(rows, columns, scale)
                    + fused_kernels.fused_paired_cross_entropy(columns, rows, scale)) / 2

        return fused_kernels.checked_once("clip_loss", image_features, fused, in_kernels, lambda: clip_loss(
            image_features, text_features, logit_scale, validate=False, tiled=tiled, fused=False),
            inputs=(image_features, text_features, logit_scale))
    if tiled_losses._use_tiled(tiled, images.shape[0] ** 2):
        return tiled_losses._clip_from_normalised(images, texts, logit_scale.to(dtype).exp(),
                                                  tiled_losses.DEFAULT_TILE_SIZE)
    with full_precision(images):
        logits = logit_scale.to(dtype).exp() * images @ texts.T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class CLIPLoss(nn.Module):
    """:func:`clip_loss` holding the (log) logit scale.

    The effective scale is capped at ``max_scale`` by clamping the log-scale in forward: while
    the parameter sits above log(max_scale) it gets no gradient from the loss, as with CLIP's
    clipping.

    Args:
        init_temperature: initial temperature, logit_scale = log(1/init_temperature) (CLIP: 0.07).
        learnable: make the log-scale an nn.Parameter (CLIP) or a fixed buffer.
        max_scale: cap on exp(logit_scale) (CLIP: 100), at least 1/init_temperature.
        tiled: passed to :func:`clip_loss` (None: tiled above 8192 x 8192 logits).

    Example:
        >>> loss_fn = CLIPLoss(init_temperature=0.07)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True, max_scale: float = 100.0,
                 tiled: bool | None = None, fused: bool | None = None) -> None:
        super().__init__()
        check_positive("init_temperature", init_temperature, "CLIP uses 0.07.")
        check_positive("max_scale", max_scale, "CLIP uses 100.")
        if max_scale < 1 / init_temperature:
            raise ConfigError(f"max_scale must be >= 1/init_temperature = {1 / init_temperature:.4g}, got "
                              f"{max_scale}; raise max_scale (CLIP uses 100) or init_temperature.")
        self.max_scale = max_scale
        self.fused = fused
        self.tiled = tiled
        logit_scale = torch.tensor(math.log(1 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(logit_scale)
        else:
            self.register_buffer("logit_scale", logit_scale)

    def forward(self, image_features: Tensor, text_features: Tensor, validate: bool = True) -> Tensor:
        logit_scale = self.logit_scale.clamp(max=math.log(self.max_scale))
        return clip_loss(image_features, text_features, logit_scale, validate=validate, tiled=self.tiled,
                         fused=self.fused)

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale}, tiled={self.tiled}, fused={self.fused}"
