"""Pair losses: contrastive (Hadsell et al., 2006), N-pair (Sohn, 2016), logistic and SigLIP
(Zhai et al., 2023).

Contrastive, on N pairs (x_a[i], x_b[i]) labelled y_i = 1 (similar) or 0 (dissimilar), with D_i
their Euclidean or cosine (1 - cos) distance and margin m > 0:

    L = 1/(2N)  sum_i  [ y_i D_i^2 + (1 - y_i) max(0, m - D_i)^2 ]

N-pair, on anchors a_i and positives p_i of N different classes (every p_j, j != i, is a negative
of a_i), with plain dot products and an optional L2 penalty on the embeddings (default off):

    L = 1/N sum_i log(1 + sum_{j!=i} exp(a_i.p_j - a_i.p_i))  +  l2_reg/N sum_i (|a_i|^2 + |p_i|^2)

Logistic and SigLIP treat every entry of the N x N similarity matrix s_ij = s(x_a[i], x_b[j]) as a
binary classification with logit l_ij = scale * s_ij + bias and target z_ij = +1 for a positive
pair (i == j, or equal labels) and -1 otherwise:

    logistic:  L = 1/N^2  sum_ij  -log sigmoid(z_ij l_ij)     scale = 1/t, s cosine or dot
    SigLIP:    L = 1/N    sum_ij  -log sigmoid(z_ij l_ij)     scale = exp(t'), s cosine

They differ only in the normalisation: the logistic loss averages over the N^2 pairs, SigLIP sums
over j and averages over i as in the paper (so it is N times larger for the same logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit import _distributed
from contrastkit._checks import (MAX_LOGIT_SCALE, check_class_labels, check_finite, check_finite_number,
                                 check_log_scale, check_ndim, check_paired_embeddings, check_positive)
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import fused as fused_kernels
from contrastkit.losses._precision import full_precision, loss_dtype
from contrastkit.losses.clip import check_caption_ids, same_caption
from contrastkit.losses.miners import _check_distance, _paired_distances

CONTRASTIVE_DISTANCES = ("euclidean", "cosine")
SIMILARITIES = ("cosine", "dot")


# The logistic and SigLIP losses classify every pair of the batch: with one sample there is only
# the positive pair, and the loss just pushes the bias and that similarity up.
_NEEDS_A_NEGATIVE_PAIR = ("with one sample the only pair is the positive one, so nothing is learnt but a "
                          "larger bias; use a larger batch.")


def _check_contrastive_options(margin: float, distance: str) -> None:
    check_positive("margin", margin, "it is the distance beyond which dissimilar pairs stop being pushed apart.")
    _check_distance(distance, CONTRASTIVE_DISTANCES)


def _check_l2_reg(l2_reg: float) -> None:
    check_positive("l2_reg", l2_reg, "0 turns the penalty off.", allow_zero=True)


def _check_logistic_options(temperature: float, bias: float, similarity: str) -> None:
    check_positive("temperature", temperature, "try 0.1 with cosine similarity.")
    check_finite_number("bias", bias, "about -log(N) balances the start of training.")
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")


def _check_labels(name: str, labels: Tensor, batch: int) -> None:
    check_ndim(name, labels, 1, "(batch,)")
    if labels.shape[0] != batch:
        raise InputError(f"{name} has {labels.shape[0]} entries but the batch has {batch} pairs; "
                         "give one per pair.")


def _pair_logistic_terms(x_a: Tensor, x_b: Tensor, scale: Tensor | float, bias: Tensor | float,
                         positive: Tensor, normalize: bool) -> Tensor:
    """The (N, N) matrix of -log sigmoid(z_ij (scale * s_ij + bias)), z = +1 where ``positive``."""
    dtype = loss_dtype(x_a)
    x, y = x_a.to(dtype), x_b.to(dtype)
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    sign = positive.to(device=x.device, dtype=dtype) * 2 - 1
    # Autocast would run the matrix product in bf16; the logits need float32.
    with full_precision(x):
        return -F.logsigmoid(sign * (scale * (x @ y.T) + bias))


def contrastive_loss(x_a: Tensor, x_b: Tensor, same: Tensor, *, margin: float = 1.0,
                     distance: str = "euclidean", validate: bool = True) -> Tensor:
    """Hadsell et al.'s contrastive loss on labelled pairs (see the module docstring).

    Args:
        x_a, x_b: (N, D) floating-point embeddings; row i of each forms pair i.
        same: (N,) labels, bool or 0/1 numbers: 1 for a similar pair, 0 for a dissimilar one.
        margin: m > 0; dissimilar pairs farther apart than m cost nothing.
        distance: "euclidean" (its gradient at identical points is taken as 0, not NaN) or
            "cosine" (1 - cosine similarity, in [0, 2]).
        validate: check that the embeddings are finite and ``same`` holds only 0/1 (host syncs);
            the trainer turns this off on its hot path.

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> x_a, x_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> contrastive_loss(x_a, x_b, torch.tensor([1, 0] * 4), margin=2.0).shape
        torch.Size([])
    """
    _check_contrastive_options(margin, distance)
    check_paired_embeddings("contrastive_loss", x_a, x_b, ("x_a", "x_b"), validate=validate)
    _check_labels("same", same, x_a.shape[0])
    if validate and same.dtype != torch.bool and not bool(((same == 0) | (same == 1)).all()):
        raise InputError("same must hold 0/1 (or bool) pair labels, 1 for a similar pair.")
    dtype = loss_dtype(x_a)
    distances = _paired_distances(x_a.to(dtype), x_b.to(dtype), distance)
    y = same.to(device=distances.device, dtype=dtype)
    return (y * distances.pow(2) + (1 - y) * F.relu(margin - distances).pow(2)).mean() / 2


def n_pair_loss(anchors: Tensor, positives: Tensor, *, l2_reg: float = 0.0,
                validate: bool = True) -> Tensor:
    """Sohn's multi-class N-pair loss (see the module docstring).

    Args:
        anchors, positives: (N, D) floating-point embeddings, N >= 2; (anchors[i], positives[i])
            share a class and the N classes are distinct, so positives[j] is a negative of
            anchors[i] for j != i.
        l2_reg: weight >= 0 of the penalty 1/N sum_i (|a_i|^2 + |p_i|^2), which the paper uses
            to keep the unnormalised embeddings from growing without bound; 0 turns it off.
        validate: check that the inputs are finite (host syncs).

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> n_pair_loss(torch.randn(8, 16), torch.randn(8, 16), l2_reg=0.002).shape
        torch.Size([])
    """
    _check_l2_reg(l2_reg)
    # The negatives of anchor i are the other pairs' positives: one pair gives log(1 + 0) = 0.
    check_paired_embeddings("n_pair_loss", anchors, positives, ("anchors", "positives"), min_batch=2,
                            reason="the negatives of an anchor are the other pairs' positives, and one pair "
                                   "has none (the loss is log 1 = 0); use a larger batch.",
                            validate=validate)
    dtype = loss_dtype(anchors)
    a, p = anchors.to(dtype), positives.to(dtype)
    # log(1 + sum_{j!=i} exp(l_ij - l_ii)) = logsumexp_j(l_ij) - l_ii: cross-entropy, target i.
    with full_precision(a):
        loss = F.cross_entropy(a @ p.T, torch.arange(a.shape[0], device=a.device))
    if l2_reg > 0:
        loss = loss + l2_reg * (a.pow(2).sum(dim=1) + p.pow(2).sum(dim=1)).mean()
    return loss


def logistic_loss(x_a: Tensor, x_b: Tensor, *, temperature: float = 0.1, bias: float = 0.0,
                  similarity: str = "cosine", labels: Tensor | None = None,
                  validate: bool = True) -> Tensor:
    """Binary cross-entropy over all N x N pair similarities (see the module docstring).

    Pair (i, j) is positive when i == j (or, with ``labels``, when labels[i] == labels[j]) and
    negative otherwise; the loss is the mean over all N^2 pairs, so with N - 1 negatives per
    positive a negative ``bias`` of about -log(N) balances the start of training.

    Args:
        x_a, x_b: (N, D) floating-point embeddings, N >= 2; x_a[i] and x_b[i] are two views of
            sample i.
        temperature: t > 0; the logits are s_ij / t + bias.
        bias: constant added to every logit.
        similarity: "cosine" (rows L2-normalised first) or "dot".
        labels: optional (N,) integer class labels shared by x_a[i] and x_b[i], not all equal.
        validate: check that the inputs are finite and the labels not all equal (host syncs).

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> logistic_loss(torch.randn(8, 16), torch.randn(8, 16), temperature=0.1, bias=-2.0).shape
        torch.Size([])
    """
    _check_logistic_options(temperature, bias, similarity)
    check_paired_embeddings("logistic_loss", x_a, x_b, ("x_a", "x_b"), min_batch=2, reason=_NEEDS_A_NEGATIVE_PAIR,
                            validate=validate)
    if labels is None:
        positive = torch.eye(x_a.shape[0], dtype=torch.bool, device=x_a.device)
    else:
        _check_labels("labels", labels, x_a.shape[0])
        check_class_labels("labels", labels)
        positive = labels[:, None] == labels[None, :]
        # Reading the labels is a host sync, hence only under validate.
        if validate and bool(positive.all()):
            raise InputError("logistic_loss got labels that are all equal, so every pair is positive and "
                             "nothing tells the embeddings apart; sample several classes per batch.")
    terms = _pair_logistic_terms(x_a, x_b, 1 / temperature, bias, positive,
                                 normalize=similarity == "cosine")
    return terms.mean()


def sigmoid_loss(x_a: Tensor, x_b: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float,
                 *, caption_ids: Tensor | None = None, gather_across_processes: bool = False,
                 validate: bool = True, fused: bool | None = None) -> Tensor:
    """SigLIP's pairwise sigmoid loss (see the module docstring).

    The negatives of row i are the other rows of the local batch (of the global batch with
    ``gather_across_processes``), except those with row i's caption when ``caption_ids`` is given.

    Args:
        x_a, x_b: (N, D) floating-point embeddings, N >= 2, e.g. images and their captions; rows
            are L2-normalised here.
        logit_scale: 0-dim tensor (or float) t', the log of the scale: logits are
            exp(t') * cos + b. At most log(1000) = 6.9078 (checked under ``validate``): a larger
            value is the scale itself passed by mistake (open_clip's SigLipLoss takes the scale),
            which exp() would blow up; pass math.log(10) for SigLIP's initial scale of 10.
        logit_bias: 0-dim tensor (or float) b; it is added, not exponentiated, so any finite
            value is taken.
        caption_ids: optional (N,) integer ids, equal for equal captions: every pair of rows with
            one caption is labelled positive, so repeated captions (templates, a class's prompts)
            are not pushed apart. Not in the fused kernels.
        gather_across_processes: under torch.distributed, classify this process's rows against
            every process's columns (gathered with gradients; the ids without). Each process's
            loss sums over all columns and averages over its rows, so the processes' average
            (DistributedDataParallel's) is the loss of one process holding the global batch. A
            no-op in a single process.
        validate: check that the embeddings, scale and bias are finite and the log-scale at most
            log(1000) (host syncs).
        fused: compute in the Triton kernels of :mod:`contrastkit.losses.fused`, never holding
            the N x N logits: None (default) on CUDA with Triton where they were measured faster or
            the plain loss would not fit (``fused.kernels_preferred``), first call checked against
            the torch loss; True forces it; False keeps the torch path.

    Returns:
        The scalar loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> scale, bias = torch.tensor(10.0).log(), torch.tensor(-10.0)
        >>> sigmoid_loss(torch.randn(8, 16), torch.randn(8, 16), scale, bias).shape
        torch.Size([])
    """
    check_paired_embeddings("sigmoid_loss", x_a, x_b, ("x_a", "x_b"), min_batch=2, reason=_NEEDS_A_NEGATIVE_PAIR,
                            validate=validate)
    dtype = loss_dtype(x_a)
    scalars = []
    for name, value in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if not isinstance(value, Tensor):
            check_finite_number(name, value, "SigLIP starts at log 10 and -10.")
            # Straight to the compute dtype: a float32 detour would round t' before exp().
            value = torch.tensor(float(value), dtype=dtype)
        if value.ndim != 0:
            raise InputError(f"{name} must be a 0-dim tensor, got shape {tuple(value.shape)}; "
                             "SigLIP learns a single scale and a single bias.")
        if validate and name == "logit_scale":
            check_log_scale("sigmoid_loss", name, value)
        elif validate:
            check_finite(name, value)
        scalars.append(value.to(device=x_a.device, dtype=dtype))
    check_caption_ids(caption_ids, x_a.shape[0])
    if fused is True and caption_ids is not None:
        raise ConfigError("the fused SigLIP kernels take one positive per pair; drop fused=True to use caption_ids.")
    gathered = gather_across_processes and _distributed.is_distributed()
    offset = _distributed.rank() * x_a.shape[0] if gathered else 0
    num_logits = x_a.shape[0] * x_b.shape[0] * (_distributed.world_size() if gathered else 1)
    if caption_ids is None and fused_kernels.use_fused(fused, x_a, num_logits):
        def in_kernels() -> Tensor:
            rows, columns = (F.normalize(x.to(dtype), dim=1).to(x_a.dtype) for x in (x_a, x_b))
            if gathered:
                columns = _distributed.gather_with_grad(columns)
            return fused_kernels.fused_sigmoid_loss(rows, columns, scalars[0].float().exp(), scalars[1].float(),
                                                    offset)

        return fused_kernels.checked_once("sigmoid_loss", x_a, fused, in_kernels, lambda: sigmoid_loss(
            x_a, x_b, scalars[0], scalars[1], gather_across_processes=gather_across_processes, validate=False,
            fused=False), inputs=(x_a, x_b, *scalars))
    columns = _distributed.gather_with_grad(x_b) if gathered else x_b
    if caption_ids is None:
        positive = torch.arange(columns.shape[0], device=x_a.device)[None, :] == (
            torch.arange(x_a.shape[0], device=x_a.device)[:, None] + offset)
    else:
        positive = same_caption(caption_ids, _distributed.gather_no_grad(caption_ids) if gathered else caption_ids)
    terms = _pair_logistic_terms(x_a, columns, scalars[0].exp(), scalars[1], positive, normalize=True)
    return terms.sum() / x_a.shape[0]


class ContrastiveLoss(nn.Module):
    """Module form of :func:`contrastive_loss`.

    Example:
        >>> loss_fn = ContrastiveLoss(margin=1.0)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16), torch.rand(8) > 0.5)
    """

    def __init__(self, margin: float = 1.0, distance: str = "euclidean") -> None:
        super().__init__()
        _check_contrastive_options(margin, distance)
        self.margin = margin
        self.distance = distance

    def forward(self, x_a: Tensor, x_b: Tensor, same: Tensor, validate: bool = True) -> Tensor:
        return contrastive_loss(x_a, x_b, same, margin=self.margin, distance=self.distance,
                                validate=validate)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}"


class NPairLoss(nn.Module):
    """Module form of :func:`n_pair_loss`.

    Example:
        >>> loss = NPairLoss()(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, l2_reg: float = 0.0) -> None:
        super().__init__()
        _check_l2_reg(l2_reg)
        self.l2_reg = l2_reg

    def forward(self, anchors: Tensor, positives: Tensor, validate: bool = True) -> Tensor:
        return n_pair_loss(anchors, positives, l2_reg=self.l2_reg, validate=validate)

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"


class LogisticLoss(nn.Module):
    """Module form of :func:`logistic_loss`, with a fixed temperature and bias.

    Example:
        >>> loss = LogisticLoss(temperature=0.1, bias=-2.0)(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, temperature: float = 0.1, bias: float = 0.0,
                 similarity: str = "cosine") -> None:
        super().__init__()
        _check_logistic_options(temperature, bias, similarity)
        self.temperature = temperature
        self.bias = bias
        self.similarity = similarity

    def forward(self, x_a: Tensor, x_b: Tensor, labels: Tensor | None = None,
                validate: bool = True) -> Tensor:
        return logistic_loss(x_a, x_b, temperature=self.temperature, bias=self.bias,
                             similarity=self.similarity, labels=labels, validate=validate)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, bias={self.bias}, similarity={self.similarity!r}"


class SigLIPLoss(nn.Module):
    """Module form of :func:`sigmoid_loss` holding the scale and bias, learnable by default.

    ``logit_scale`` stores the log of the scale (the paper's t', initialised to log 10) and
    ``logit_bias`` the bias (initialised to -10, which keeps the many negatives from dominating
    the first steps). They are nn.Parameters, or buffers when ``learnable=False``.

    Args:
        init_scale: the initial scale exp(t') itself (SigLIP: 10), in (0, 1000].
        init_bias: the initial bias (SigLIP: -10).
        learnable: make the scale and bias nn.Parameters (SigLIP) or fixed buffers.
        fused, gather_across_processes: passed to :func:`sigmoid_loss`.

    Example:
        >>> loss_fn = SigLIPLoss()
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
        >>> loss.backward()
        >>> loss_fn.logit_scale.grad is not None
        True
    """

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0,
                 learnable: bool = True, fused: bool | None = None, gather_across_processes: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.gather_across_processes = gather_across_processes
        check_positive("init_scale", init_scale, "it is exp(t') and SigLIP starts at 10.")
        if init_scale > MAX_LOGIT_SCALE:
            raise ConfigError(f"init_scale must be <= {MAX_LOGIT_SCALE:g} (the scale itself, not its log), got "
                              f"{init_scale}; SigLIP starts at 10.")
        check_finite_number("init_bias", init_bias, "SigLIP starts at -10.")
        logit_scale = torch.tensor(math.log(init_scale))
        logit_bias = torch.tensor(float(init_bias))
        if learnable:
            self.logit_scale = nn.Parameter(logit_scale)
            self.logit_bias = nn.Parameter(logit_bias)
        else:
            self.register_buffer("logit_scale", logit_scale)
            self.register_buffer("logit_bias", logit_bias)

    def forward(self, x_a: Tensor, x_b: Tensor, caption_ids: Tensor | None = None, validate: bool = True) -> Tensor:
        return sigmoid_loss(x_a, x_b, self.logit_scale, self.logit_bias, caption_ids=caption_ids,
                            gather_across_processes=self.gather_across_processes, validate=validate, fused=self.fused)

    def extra_repr(self) -> str:
        return (f"scale={self.logit_scale.exp().item():.4g}, bias={self.logit_bias.item():.4g}, "
                f"learnable={isinstance(self.logit_scale, nn.Parameter)}")
