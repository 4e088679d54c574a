"""ST-DIM's loss (Anand et al., 2019): spatio-temporal InfoNCE between consecutive frames.

For a batch of N consecutive pairs (x_t, x_t+1), an encoder gives each frame a global feature
g (N, D) and a local feature map l (N, C, H, W). Two InfoNCE terms, averaged over the H x W cells
s, the other pairs of the batch being the negatives:

    global-local:  score_ij(s) = (W_g g_i(t) + b_g) . l_j(t+1)[s]
    local-local:   score_ij(s) = (W_l l_i(t)[s] + b_l) . l_j(t+1)[s]
    term = 1/(H W) sum_s 1/N sum_i -log softmax_j(score_i.(s))[j = i]

The loss is the sum of the two terms. The score heads (W_g: C x D, W_l: C x C, with biases) are
linear maps of the anchor, as in AtariARI's ``stdim.py``, so each score is bilinear in the two
features plus a term in the positive alone. AtariARI's code takes the later frame as the anchor
and the earlier one as the positive; the paper writes it the other way. Either order trains the
same objective on pairs of consecutive frames. Gradients reach both frames.
:class:`STDIMLoss` holds the two heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_batch_size, check_count, check_finite, check_floating, check_ndim
from contrastkit.errors import InputError
from contrastkit.losses._precision import full_precision, loss_dtype

__all__ = ["STDIMLoss", "stdim_loss", "stdim_loss_terms"]


def _check_head(name: str, weight: Tensor, bias: Tensor | None, out_dim: int, in_dim: int) -> None:
    check_ndim(name, weight, 2, f"({out_dim}, {in_dim})")
    check_floating(name, weight)
    if tuple(weight.shape) != (out_dim, in_dim):
        raise InputError(f"{name} has shape {tuple(weight.shape)} but must be ({out_dim}, {in_dim}): it maps the "
                         f"anchor's {in_dim}-dim feature onto the {out_dim} channels of the local map.")
    if bias is not None and tuple(bias.shape) != (out_dim,):
        raise InputError(f"the bias of {name} has shape {tuple(bias.shape)} but must be ({out_dim},).")


def _cell_info_nce(predictions: Tensor, positives: Tensor) -> Tensor:
    """Mean over cells s and rows i of -log softmax_j(predictions[s, i] . positives[s, j])[i].

    predictions, positives: (S, N, C).
    """
    logits = predictions @ positives.transpose(1, 2)  # (S, N, N)
    cells, n = logits.shape[:2]
    target = torch.arange(n, device=logits.device).repeat(cells)
    return F.cross_entropy(logits.reshape(cells * n, n), target)


def stdim_loss_terms(global_anchor: Tensor, local_anchor: Tensor, local_positive: Tensor, global_weight: Tensor,
                     local_weight: Tensor, global_bias: Tensor | None = None, local_bias: Tensor | None = None, *,
                     validate: bool = True) -> tuple[Tensor, Tensor]:
    """The global-local and local-local terms of ST-DIM's loss (module docstring).

    Args:
        global_anchor: (N, D) global features of the anchor frames (frame t), N >= 2.
        local_anchor: (N, C, H, W) local feature maps of the anchor frames.
        local_positive: (N, C, H, W) local feature maps of the positives (frame t + 1), row i pairing row i.
        global_weight: the (C, D) global score head W_g.
        local_weight: the (C, C) local score head W_l.
        global_bias, local_bias: the heads' (C,) biases, or None.
        validate: check that the inputs are finite (one host sync each).

    Returns:
        (global-local term, local-local term), scalars in float32 (float64 for float64 inputs).
    """
    check_ndim("global_anchor", global_anchor, 2, "(batch, dim)")
    check_ndim("local_anchor", local_anchor, 4, "(batch, channels, height, width)")
    check_ndim("local_positive", local_positive, 4, "(batch, channels, height, width)")
    for name, tensor in (("global_anchor", global_anchor), ("local_anchor", local_anchor),
                         ("local_positive", local_positive)):
        check_floating(name, tensor)
    if local_anchor.shape != local_positive.shape:
        raise InputError(f"local_anchor and local_positive must have the same shape, got {tuple(local_anchor.shape)} "
                         f"and {tuple(local_positive.shape)}.")
    n, channels = local_anchor.shape[:2]
    if global_anchor.shape[0] != n:
        raise InputError(f"global_anchor has {global_anchor.shape[0]} rows but the local maps have {n}; "
                         "pass the features of the same frames.")
    check_batch_size("stdim_loss", n, 2, "the other pairs of the batch are each anchor's negatives; use a larger "
                     "batch.", unit="pairs")
    _check_head("global_weight", global_weight, global_bias, channels, global_anchor.shape[1])
    _check_head("local_weight", local_weight, local_bias, channels, channels)
    if validate:
        for name, tensor in (("global_anchor", global_anchor), ("local_anchor", local_anchor),
                             ("local_positive", local_positive), ("global_weight", global_weight),
                             ("local_weight", local_weight)):
            check_finite(name, tensor)
    dtype = loss_dtype(global_anchor)
    with full_precision(global_anchor):
        positives = local_positive.to(dtype).flatten(2).permute(2, 0, 1)  # (S, N, C)
        anchors = local_anchor.to(dtype).flatten(2).permute(2, 0, 1)
        global_prediction = F.linear(global_anchor.to(dtype), global_weight.to(dtype),
                                     None if global_bias is None else global_bias.to(dtype))
        local_prediction = F.linear(anchors, local_weight.to(dtype),
                                    None if local_bias is None else local_bias.to(dtype))
        global_local = _cell_info_nce(global_prediction.expand(positives.shape[0], -1, -1), positives)
        local_local = _cell_info_nce(local_prediction, positives)
    return global_local, local_local


def stdim_loss(global_anchor: Tensor, local_anchor: Tensor, local_positive: Tensor, global_weight: Tensor,
               local_weight: Tensor, global_bias: Tensor | None = None, local_bias: Tensor | None = None, *,
               validate: bool = True) -> Tensor:
    """ST-DIM's loss: the global-local plus the local-local term (arguments as :func:`stdim_loss_terms`).

    Example:
        >>> g, la, lp = torch.randn(4, 16), torch.randn(4, 8, 3, 2), torch.randn(4, 8, 3, 2)
        >>> stdim_loss(g, la, lp, torch.randn(8, 16), torch.randn(8, 8)).shape
        torch.Size([])
    """
    global_local, local_local = stdim_loss_terms(global_anchor, local_anchor, local_positive, global_weight,
                                                 local_weight, global_bias, local_bias, validate=validate)
    return global_local + local_local


class STDIMLoss(nn.Module):
    """ST-DIM's loss with its two linear score heads (module docstring).

    Args:
        global_dim: the size D of the encoder's global feature (AtariARI: 256).
        local_dim: the channels C of its local feature map (AtariARI's NatureCNN: 128).
        validate: check that the inputs are finite on every call.
    """

    def __init__(self, global_dim: int = 256, local_dim: int = 128, *, validate: bool = True):
        super().__init__()
        check_count("global_dim", global_dim, 1, "AtariARI's encoder gives 256.")
        check_count("local_dim", local_dim, 1, "AtariARI's encoder's local map has 128 channels.")
        self.global_head = nn.Linear(global_dim, local_dim)
        self.local_head = nn.Linear(local_dim, local_dim)
        self.validate = validate

    def terms(self, global_anchor: Tensor, local_anchor: Tensor, local_positive: Tensor, *,
              validate: bool | None = None) -> tuple[Tensor, Tensor]:
        """The (global-local, local-local) terms (see :func:`stdim_loss_terms`); ``validate`` None
        follows the module's setting."""
        return stdim_loss_terms(global_anchor, local_anchor, local_positive, self.global_head.weight,
                                self.local_head.weight, self.global_head.bias, self.local_head.bias,
                                validate=self.validate if validate is None else validate)

    def forward(self, global_anchor: Tensor, local_anchor: Tensor, local_positive: Tensor, *,
                validate: bool | None = None) -> Tensor:
        """The loss for anchors (frame t: global feature and local map) and positives (frame t + 1: local map)."""
        global_local, local_local = self.terms(global_anchor, local_anchor, local_positive, validate=validate)
        return global_local + local_local
