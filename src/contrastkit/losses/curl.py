"""CURL's bilinear InfoNCE: anchors a_i, keys k_i (from a momentum encoder, carrying no gradient)
and a learned matrix W score every pair bilinearly,

    logits_ij = a_i W k_j^T - max_j' a_i W k_j'^T,      L = 1/N sum_i -log softmax_j(logits_ij)[j = i]

the key of the same observation (j = i) being the positive and the other keys of the batch the
negatives. The per-row max is subtracted for numerical range, as in CURL's reference code; it
changes neither the loss nor its gradients. The modules that own the encoder, W and the momentum
copies for an agent are :class:`contrastkit.methods.CURLAuxiliaryLoss` and
:class:`contrastkit.methods.ATCAuxiliaryLoss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_finite, check_floating, check_ndim, check_paired_embeddings
from contrastkit.errors import InputError
from contrastkit.losses._precision import full_precision, loss_dtype

__all__ = ["bilinear_info_nce"]


def bilinear_info_nce(anchors: Tensor, keys: Tensor, weight: Tensor, *, validate: bool = True) -> Tensor:
    """InfoNCE with the bilinear similarity a W k^T, key i the positive of anchor i (module docstring).

    Args:
        anchors: (N, D) floating-point embeddings from the online encoder, N >= 2.
        keys: (N, D) embeddings of the positives from the momentum encoder; detached here, so no
            gradient reaches them.
        weight: the (D, D) bilinear matrix W.
        validate: check that the inputs are finite (one host sync each).

    Returns:
        The scalar mean loss, in float32 (float64 for float64 inputs).

    Example:
        >>> a, k, W = torch.randn(8, 16), torch.randn(8, 16), torch.rand(16, 16)
        >>> bilinear_info_nce(a, k, W).shape
        torch.Size([])
    """
    check_paired_embeddings("bilinear_info_nce", anchors, keys, ("anchors", "keys"), min_batch=2,
                            reason="the other keys of the batch are each anchor's negatives; use a larger batch.",
                            validate=validate)
    check_ndim("weight", weight, 2, "(dim, dim)")
    check_floating("weight", weight)
    dim = anchors.shape[1]
    if weight.shape != (dim, dim):
        raise InputError(f"weight has shape {tuple(weight.shape)} but the embeddings have dim {dim}; W must be "
                         f"({dim}, {dim}).")
    if validate:
        check_finite("weight", weight)
    dtype = loss_dtype(anchors)
    a, k, w = anchors.to(dtype), keys.detach().to(dtype), weight.to(dtype)
    with full_precision(a):
        logits = a @ (w @ k.T)
        # A per-row constant: the softmax and its gradients are unchanged, the logits stay near 0.
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))
