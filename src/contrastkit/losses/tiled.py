"""Exact InfoNCE and CLIP losses that never hold the full similarity matrix.

Both losses are means of per-anchor cross-entropies. With A anchor rows q_a, C columns c_c and a
scale s (1/temperature, or CLIP's exp(logit_scale)), the logits are l_ac = s * q_a . c_c, some of
them dropped (-inf: an anchor against itself), and anchor a with positives P(a) contributes

    CE_a = log sum_c exp(l_ac)  -  1/|P(a)| sum_{p in P(a)} l_ap

InfoNCE is mean_a CE_a; CLIP averages it with the same along columns (P(a) = {a} both ways). The
dropped logits and the positives lie on a few diagonals of the matrix (anchor a is column
block_start + a, its positives are whole views away), so each tile finds its own from its position.

Forward: for each tile of T anchor rows, for each tile of T columns, compute the T x T logits and
fold them into each row's running max m and rescaled sum S = sum exp(l - m) (the online
log-sum-exp: when the max grows, S is multiplied by exp(old m - new m)), and add the tile's
positive logits to each row's positive sum. Then CE_a = (m_a - mean positive) + log S_a. Only the
inputs, m and log S are saved: O(A·D + C·D) memory.

Backward: with g_a the incoming gradient of CE_a and P_ac = exp(l_ac - m_a - log S_a), the weights
W_ac = g_a (P_ac - [c in P(a)] / |P(a)|) (CLIP adds the same along columns) are softmax minus
target, as in cross-entropy. Recompute each tile's logits and accumulate

    dq_a = s * sum_c W_ac c_c        dc_c = s * sum_a W_ac q_a        ds = sum_ac W_ac (q_a . c_c)

where the last sum is taken as sum_a q_a . (W c)_a from the product already formed for dq.

Memory beyond the inputs and their gradients is O(T^2): a few T x T tiles at a time, against the
(A x C) matrix, its softmax and its gradient that the plain losses keep. The price is a second
matmul per tile in backward (the logits are recomputed) and a Python loop over (A/T) x (C/T) tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastkit.errors import ConfigError
from contrastkit.losses._contrastive import (_check_clip_inputs, _check_inputs, _contrast_rows,
                                             _prepared_negatives)
from contrastkit.losses._precision import full_precision, loss_dtype

DEFAULT_TILE_SIZE = 4096

# Above this many logits on one process, info_nce / clip_loss take the tiled path (tiled=None).
# 8192 x 8192 float32 logits are 256 MiB and autograd keeps about three such matrices (logits,
# softmax, gradient): about 0.75 GiB (1.5 GiB in float64), small next to a model's activations.
# Below it, on a GPU, one large matmul and fused softmax kernels should beat the tiled path, which
# recomputes the logits in backward (4 matmuls instead of 3) and launches a dozen kernels per tile
# (expected, not yet measured: benchmarks/loss_kernels.py on a GPU settles it).
# Beyond it the matrix grows quadratically while the tiled path stays at O(T^2). SimCLR's largest
# batch (4096 pairs, 8192 rows) stays on the plain path. On a CPU the tiled path measured faster
# at every size tried (1024 to 8192 pairs), so pass tiled=True there.
AUTO_TILED_LOGITS = 8192 * 8192


def _use_tiled(tiled: bool | None, num_logits: int) -> bool:
    """``tiled`` when set, else whether ``num_logits`` (on this process) exceeds AUTO_TILED_LOGITS."""
    return num_logits > AUTO_TILED_LOGITS if tiled is None else tiled


@dataclass(frozen=True)
class _Pairs:
    """Which logits of the (A x C) matrix are dropped and which are positives: whole diagonals.

    Anchor a is column ``block_start + a`` (the anchors are a block of the columns); with
    ``exclude_self`` that logit is -inf. The positives of anchor a are the columns
    ``block_start + a + m`` for every m in ``positive_shifts`` with 0 <= a + m < A, which must leave
    ``positives_per_anchor`` of them: for InfoNCE the other views of its sample (m = ±N, ±2N, ...,
    V - 1 of them), for CLIP its partner (block_start = 0, m = 0, one).
    """

    block_start: int
    exclude_self: bool
    positive_shifts: tuple[int, ...]
    positives_per_anchor: int


class _TiledCrossEntropy(torch.autograd.Function):
    """Per-anchor cross-entropy LSE_a - mean_{p in P(a)} l_ap of the logits scale * anchors @ columns.T,
    by tiles; with ``both_directions`` (CLIP's layout: A = C, pair i positive for row and column i)
    also the per-column one, LSE_c - l_cc.

    The log-sum-exp is kept as a running max m and a rescaled sum s, and the loss formed as
    (m - positive) + log s, with the positives read from the same tiles: when the positive is the
    largest logit, m - positive is exactly 0 and a small loss keeps its precision, where
    log-sum-exp minus positive would cancel. The gradient likewise merges softmax and target
    (P - 1/|P| at the positives) before the matmuls, as cross-entropy does.
    """

    @staticmethod
    def forward(ctx, anchors: Tensor, columns: Tensor, scale: Tensor, pairs: _Pairs, tile_size: int,
                both_directions: bool) -> Tensor | tuple[Tensor, Tensor]:
        row_max = anchors.new_full((anchors.shape[0],), -math.inf)
        row_sum = torch.zeros_like(row_max)
        positive_sum = torch.zeros_like(row_max)
        column_max = anchors.new_full((columns.shape[0],), -math.inf) if both_directions else None
        column_sum = torch.zeros_like(column_max) if both_directions else None
        with full_precision(anchors):
            for r0, c0, logits in _logit_tiles(anchors, columns, scale, pairs, tile_size):
                rows = slice(r0, r0 + logits.shape[0])
                _merge_tile(row_max[rows], row_sum[rows], logits, dim=1)
                if both_directions:
                    cols = slice(c0, c0 + logits.shape[1])
                    _merge_tile(column_max[cols], column_sum[cols], logits, dim=0)
                for diagonal, entries, anchor_rows in _positive_diagonals(pairs, anchors.shape[0], r0, c0, logits):
                    positive_sum[anchor_rows] += logits.diagonal(diagonal)[entries]
        row_log_sum = row_sum.log_()
        row_loss = (row_max - positive_sum / pairs.positives_per_anchor) + row_log_sum
        column_log_sum = column_sum.log_() if both_directions else None
        ctx.save_for_backward(anchors, columns, scale, row_max, row_log_sum, column_max, column_log_sum)
        ctx.pairs, ctx.tile_size = pairs, tile_size
        if not both_directions:
            return row_loss
        return row_loss, (column_max - positive_sum) + column_log_sum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: Tensor, grad_columns_loss: Tensor | None = None):
        anchors, columns, scale, row_max, row_log_sum, column_max, column_log_sum = ctx.saved_tensors
        grad_anchors = torch.zeros_like(anchors)
        grad_columns = torch.zeros_like(columns)
        grad_scale = torch.zeros_like(scale)
        # d loss / d positive logit: -1/|P| per anchor, and -1 for CLIP's column whose positive it also is.
        target = grad_rows / ctx.pairs.positives_per_anchor
        if column_max is not None:
            target = target + grad_columns_loss
        with full_precision(anchors):
            for r0, c0, logits in _logit_tiles(anchors, columns, scale, ctx.pairs, ctx.tile_size):
                rows = slice(r0, r0 + logits.shape[0])
                cols = slice(c0, c0 + logits.shape[1])
                softmax = (logits - row_max[rows, None]).sub_(row_log_sum[rows, None]).exp_()
                weights = softmax.mul_(grad_rows[rows, None])
                if column_max is not None:
                    # logits is not needed after this: reuse its memory for the column softmax.
                    column_softmax = logits.sub_(column_max[None, cols]).sub_(column_log_sum[None, cols]).exp_()
                    weights += column_softmax.mul_(grad_columns_loss[None, cols])
                for diagonal, entries, anchor_rows in _positive_diagonals(ctx.pairs, anchors.shape[0], r0, c0,
                                                                          weights):
                    weights.diagonal(diagonal)[entries] -= target[anchor_rows]
                weighted_columns = weights @ columns[cols]
                grad_anchors[rows] += weighted_columns
                grad_columns[cols].addmm_(weights.T, anchors[rows])
                # d logit / d scale = q . c, and sum_c W_ac (q_a . c_c) = q_a . (W c)_a.
                grad_scale += (anchors[rows] * weighted_columns).sum()
            grad_anchors *= scale
            grad_columns *= scale
        return grad_anchors, grad_columns, grad_scale, None, None, None


def _merge_tile(running_max: Tensor, running_sum: Tensor, logits: Tensor, dim: int) -> None:
    """Fold a tile into the running max and the sum of exp(logit - max) along ``dim``, in place."""
    new_max = torch.maximum(running_max, logits.amax(dim=dim))
    # Shift by a finite number where everything so far is -inf (a dropped self-pair): no inf - inf.
    shift = new_max.clamp(min=torch.finfo(logits.dtype).min)
    running_sum.mul_((running_max - shift).exp_()).add_((logits - shift.unsqueeze(dim)).exp_().sum(dim=dim))
    running_max.copy_(new_max)


def _logit_tiles(anchors: Tensor, columns: Tensor, scale: Tensor, pairs: _Pairs, tile_size: int):
    """Yield (first row, first column, scale * anchor tile @ column tile.T with self-pairs at -inf)."""
    for r0 in range(0, anchors.shape[0], tile_size):
        anchor_tile = anchors[r0:r0 + tile_size]
        for c0 in range(0, columns.shape[0], tile_size):
            logits = (anchor_tile @ columns[c0:c0 + tile_size].T).mul_(scale)
            if pairs.exclude_self:
                # Tile entry (i, j) is logit (r0 + i, c0 + j); the self-pair has j - i = r0 + block_start - c0.
                logits.diagonal(r0 + pairs.block_start - c0).fill_(-math.inf)
            yield r0, c0, logits


def _positive_diagonals(pairs: _Pairs, num_anchors: int, r0: int, c0: int, tile: Tensor):
    """Yield (diagonal offset, slice of that diagonal, slice of the anchors) of the tile's positives.

    Plain integer arithmetic on the tile's position, so no host sync; most tiles yield nothing.
    """
    height, width = tile.shape
    for shift in pairs.positive_shifts:
        diagonal = r0 + pairs.block_start + shift - c0
        length = min(height, width - diagonal) if diagonal >= 0 else min(height + diagonal, width)
        first_anchor = r0 + max(0, -diagonal)  # the anchor of the diagonal's first entry
        # Keep the entries whose anchor a has its positive inside the block: 0 <= a + shift < A.
        start, stop = max(0, -shift - first_anchor), min(length, num_anchors - shift - first_anchor)
        if stop > start:
            yield diagonal, slice(start, stop), slice(first_anchor + start, first_anchor + stop)


def _check_tile_size(tile_size: int) -> None:
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ConfigError(f"tile_size must be a positive int, got {tile_size!r}; the default {DEFAULT_TILE_SIZE} "
                          "suits GPUs, smaller tiles trade speed for memory.")


def tiled_info_nce(z_a: Tensor, z_b: Tensor, *more_views: Tensor, temperature: float = 0.5,
                   similarity: str = "cosine", negatives: Tensor | None = None,
                   tile_size: int = DEFAULT_TILE_SIZE, validate: bool = True,
                   gather_across_processes: bool = False) -> Tensor:
    """:func:`~contrastkit.losses.info_nce.info_nce` computed by tiles, in O(M·D + tile_size²) memory.

    Same arguments, formula and result as ``info_nce`` (see its docstring, also for
    ``gather_across_processes``); ``info_nce(..., tiled=True)`` calls this with the default tile.

    Args:
        z_a, z_b, *more_views: floating-point embeddings (N, D) of the same N samples under
            different views; N >= 2 as for ``info_nce`` (or N >= 1 with extra negatives).
        temperature: softmax temperature t > 0.
        similarity: "cosine" (rows L2-normalised first) or "dot".
        negatives: optional extra negatives (K, D) in every anchor's denominator.
        tile_size: rows and columns per tile; any size works, M need not be a multiple of it.
        validate: check that the inputs are finite (one host sync per tensor).
        gather_across_processes: contrast with every process's views (see ``info_nce``).

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> tiled = tiled_info_nce(z_a, z_b, temperature=0.2, tile_size=5)
        >>> from contrastkit.losses import info_nce
        >>> torch.allclose(tiled, info_nce(z_a, z_b, temperature=0.2))
        True
    """
    views = (z_a, z_b, *more_views)
    _check_tile_size(tile_size)
    _check_inputs(views, temperature, similarity, negatives, validate, gather_across_processes, "tiled_info_nce")
    anchors, rows, self_offset = _contrast_rows(views, similarity, gather_across_processes)
    extra = _prepared_negatives(negatives, anchors.dtype, similarity)
    return _info_nce_from_rows(anchors, rows, extra, self_offset, len(views), temperature, tile_size)


def _info_nce_from_rows(anchors: Tensor, rows: Tensor, negatives: Tensor | None, self_offset: int,
                       num_views: int, temperature: float, tile_size: int) -> Tensor:
    """Tiled InfoNCE of prepared rows (see ``info_nce._contrast_rows``): the shared body of the tiled path."""
    columns = rows if negatives is None else torch.cat([rows, negatives])
    batch = anchors.shape[0] // num_views
    # The positives of an anchor are the other views of its sample: whole views away, either way.
    shifts = tuple(sign * view * batch for view in range(1, num_views) for sign in (1, -1))
    pairs = _Pairs(block_start=self_offset, exclude_self=True, positive_shifts=shifts,
                   positives_per_anchor=num_views - 1)
    scale = anchors.new_tensor(1 / temperature)
    return _TiledCrossEntropy.apply(anchors, columns, scale, pairs, tile_size, False).mean()


def tiled_clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, *,
                    tile_size: int = DEFAULT_TILE_SIZE, validate: bool = True) -> Tensor:
    """:func:`~contrastkit.losses.clip.clip_loss` computed by tiles, in O(N·D + tile_size²) memory.

    Both directions' log-sum-exps come from one pass over the tiles, and the gradient reaches
    ``logit_scale`` when it requires one. The scale is used as given: clamping it (CLIP caps
    exp(logit_scale) at 100) is the caller's job, as :class:`~contrastkit.losses.clip.CLIPLoss`
    does before calling the loss.

    Args:
        image_features: floating-point embeddings (N, D), N >= 2, of the first modality.
        text_features: embeddings (N, D) of the second modality; row i matches image row i.
        logit_scale: 0-dim tensor holding the LOG of the logit scale, at most log(1000) (a
            larger value is the scale itself passed by mistake; see ``clip_loss``).
        tile_size: rows and columns per tile; N need not be a multiple of it.
        validate: check that the inputs are finite and the log-scale at most log(1000) (one host
            sync per tensor).

    Returns:
        The scalar loss, in float32 (or float64 for float64 features).

    Example:
        >>> images, texts, scale = torch.randn(8, 16), torch.randn(8, 16), torch.tensor(2.6)
        >>> from contrastkit.losses import clip_loss
        >>> torch.allclose(tiled_clip_loss(images, texts, scale, tile_size=3), clip_loss(images, texts, scale))
        True
    """
    _check_tile_size(tile_size)
    _check_clip_inputs(image_features, text_features, logit_scale, validate, "tiled_clip_loss")
    dtype = loss_dtype(image_features)
    images = F.normalize(image_features.to(dtype), dim=1)
    texts = F.normalize(text_features.to(dtype), dim=1)
    return _clip_from_normalised(images, texts, logit_scale.to(dtype).exp(), tile_size)


def _clip_from_normalised(images: Tensor, texts: Tensor, scale: Tensor, tile_size: int) -> Tensor:
    """Tiled CLIP loss of L2-normalised features and the (exponentiated) scale: the tiled body."""
    pairs = _Pairs(block_start=0, exclude_self=False, positive_shifts=(0,), positives_per_anchor=1)
    image_to_text, text_to_image = _TiledCrossEntropy.apply(images, texts, scale, pairs, tile_size, True)
    return (image_to_text.mean() + text_to_image.mean()) / 2
