"""Additive angular margin softmax (AAM-softmax, ArcFace; Deng et al., 2019), the standard training
loss of speaker-verification encoders (ECAPA-TDNN, SpeechBrain, WeSpeaker).

Embeddings x_i and class weights w_c are L2-normalised; with θ_ic the angle between them, the
true class y_i's logit has a margin m added to its angle, and every logit is scaled by s:

    logit_ic = s cos(θ_ic + m)  if c = y_i,      s cos θ_ic  otherwise,      L = mean_i CE(logit_i, y_i)

so an embedding must sit at least m radians closer to its class than to any other. Where θ + m
would pass π, cos(θ + m) would rise again and reward moving away from the class; there the target
logit is s (cos θ - m sin m) instead (ArcFace's reference code), which keeps it decreasing in θ.
Typical settings: m = 0.2, s = 30.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_class_labels, check_finite, check_floating, check_ndim
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import full_precision, loss_dtype

__all__ = ["AAMSoftmaxLoss", "aam_softmax_loss"]


def _check_margin_scale(margin: float, scale: float) -> None:
    if not (isinstance(margin, (int, float)) and 0 <= margin < math.pi / 2):
        raise ConfigError(f"margin must be an angle in [0, pi/2) radians (0.2 is usual), got {margin!r}.")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a finite number > 0 (30 is usual), got {scale!r}.")


def aam_softmax_loss(embeddings: Tensor, weight: Tensor, labels: Tensor, *, margin: float = 0.2,
                     scale: float = 30.0, validate: bool = True) -> Tensor:
    """AAM-softmax of ``embeddings`` against the class weights ``weight`` (module docstring).

    Args:
        embeddings: (N, D) floating-point embeddings, N >= 1.
        weight: (C, D) one weight vector per class; normalised here, so only its directions count.
        labels: (N,) int64 class ids in [0, C).
        margin: the additive angular margin m, radians, in [0, pi/2).
        scale: the logit scale s > 0.
        validate: check that the inputs are finite (one host sync each).

    Returns:
        The scalar mean loss, in float32 (float64 for float64 inputs).

    Example:
        >>> x, w = torch.randn(8, 16), torch.randn(4, 16)
        >>> aam_softmax_loss(x, w, torch.arange(8) % 4).shape
        torch.Size([])
    """
    _check_margin_scale(margin, scale)
    check_ndim("embeddings", embeddings, 2, "(batch, dim)")
    check_ndim("weight", weight, 2, "(classes, dim)")
    check_floating("embeddings", embeddings)
    check_floating("weight", weight)
    check_ndim("labels", labels, 1, "(batch,)")
    check_class_labels("labels", labels)
    if weight.shape[1] != embeddings.shape[1]:
        raise InputError(f"weight has dim {weight.shape[1]} but the embeddings have dim {embeddings.shape[1]}; "
                         f"pass one ({embeddings.shape[1]},) weight vector per class.")
    if labels.shape[0] != embeddings.shape[0]:
        raise InputError(f"labels has {labels.shape[0]} entries for {embeddings.shape[0]} embeddings; pass one each.")
    if labels.numel() and int(labels.max()) >= weight.shape[0]:
        raise InputError(f"labels go up to {int(labels.max())} but there are {weight.shape[0]} class weights; "
                         "size the weights by the number of classes.")
    if validate:
        check_finite("embeddings", embeddings)
        check_finite("weight", weight)
    dtype = loss_dtype(embeddings)
    with full_precision(embeddings):
        cosine = F.normalize(embeddings.to(dtype), dim=1) @ F.normalize(weight.to(dtype), dim=1).T
        target = cosine.gather(1, labels[:, None])
        # cos(θ + m) = cos θ cos m - sin θ sin m; the clamp keeps sqrt's gradient finite at |cos θ| = 1.
        sine = (1 - target.square()).clamp_min(1e-12).sqrt()
        with_margin = target * math.cos(margin) - sine * math.sin(margin)
        # Past θ = π - m the margin is applied linearly (module docstring).
        with_margin = torch.where(target > math.cos(math.pi - margin), with_margin,
                                  target - margin * math.sin(margin))
        logits = cosine.scatter(1, labels[:, None], with_margin)
        return F.cross_entropy(scale * logits, labels)


class AAMSoftmaxLoss(nn.Module):
    """:func:`aam_softmax_loss` owning its (classes, dim) class weights, for a training loop.

    Args:
        dim: the embeddings' width.
        classes: the number of classes (speakers).
        margin: the additive angular margin m, radians.
        scale: the logit scale s.

    Example:
        >>> criterion = AAMSoftmaxLoss(dim=16, classes=4)
        >>> criterion(torch.randn(8, 16), torch.arange(8) % 4).backward()
    """

    def __init__(self, dim: int, classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        if not (isinstance(classes, int) and classes >= 2):
            raise ConfigError(f"AAM-softmax needs at least 2 classes, got {classes!r}.")
        _check_margin_scale(margin, scale)
        self.margin, self.scale = margin, scale
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, embeddings: Tensor, labels: Tensor, *, validate: bool = True) -> Tensor:
        return aam_softmax_loss(embeddings, self.weight, labels, margin=self.margin, scale=self.scale,
                                validate=validate)
