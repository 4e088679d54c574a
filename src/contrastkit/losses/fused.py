"""Contrastive losses in Triton kernels: the similarity matmul fused with an online log-sum-exp,
exact, with memory O(rows + columns). InfoNCE (2+ views, a queue), MoCo's query-key loss (v3, and
v2 with a queue), CLIP's two directions and SigLIP's sigmoid loss; ``info_nce``, ``moco_info_nce``,
``clip_loss`` and ``sigmoid_loss`` choose them on CUDA (``fused=``).

The cross-entropy losses are :mod:`contrastkit.losses.tiled`'s (read its docstring for the notation): A anchor rows
q_a against C columns c_c, logits l_ac = s * q_a . c_c (s = 1/temperature), the anchor's own
column dropped, its positives the other views of its sample, CE_a = logsumexp_c l_ac - mean_p l_ap,
and the loss mean_a CE_a. CLIP and MoCo use the paired mode: anchor a's one positive is column
self_offset + a, and nothing is dropped (MoCo v2 drops the other keys, whose queue follows them).
SigLIP sums softplus(-z_ac (s q_a . c_c + b)) with z = +1 on the pair's column and -1 elsewhere.

Forward: one program per block of anchor rows walks the columns block by block, keeping each
row's running max, rescaled sum of exponentials and sum of positive logits in registers (as flash
attention does, in base 2: the scale carries log2 e); it writes only the per-row log-sum-exp and
positive sum. Only the few tiles that hold a dropped, positive or missing column compute masks
(:func:`_tile_needs_mask`). Backward recomputes the logits tile by tile, with the weights
W_ac = g (P_ac - [c in P(a)] / |P(a)|): one kernel accumulates dq_a = s * sum_c W_ac c_c per block
of anchors, another dc_c = s * sum_a W_ac q_a per block of columns, so no process-wide atomics and
no N x N matrix. Where the columns are the anchors (InfoNCE on one process, no queue) the logits
are symmetric, and one kernel computes the whole gradient with two products per tile (the logits
and the weighted sum) where those two kernels take four (:func:`_symmetric_grad_kernel`). The
softmax part runs through the tiles; the targets, the positives' rows, are gathered and
subtracted once, in float32.

Inputs may be float32, bfloat16 or float16, and every product is accumulated in float32. 16-bit
inputs take 16-bit products on tensor cores, forward and backward (the backward's probabilities
rounded to the inputs' dtype, as FlashAttention does); float32 inputs take TF32 or IEEE float32
products as torch's own matmuls do (``torch.set_float32_matmul_precision``; IEEE by default). The
kernels run on CUDA, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1`` before Python
starts), which is how the tests check them against float64 references. ``fused=None`` takes them
where they were measured faster than the plain torch loss, or where it would not fit in the GPU's
free memory (:func:`kernels_preferred`).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastkit._triton import jit, tl, triton
from contrastkit.errors import ConfigError

FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# Relative difference between the first fused loss of a kind and the torch loss (value, and
# gradient norms) above which the kernels are not trusted: the tests measure 4e-7 in float32 with
# IEEE products and 4e-3 in bfloat16, where rounding the gradients to bfloat16 alone costs 1.7e-3;
# TF32 products keep 10 mantissa bits, between the two.
def _first_call_tolerance(rows: Tensor) -> float:
    return 1e-4 if rows.dtype == torch.float32 and _dot_mode(rows) == "ieee" else 2e-2
# (loss, device, dtype) -> whether the first fused call agreed with the torch path.
_checked: dict[tuple[str, str, torch.dtype], bool] = {}


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device``: Triton installed and a CUDA device, or the
    CPU under Triton's interpreter."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


# GPU memory the plain torch losses hold per logit through forward and backward, measured on an
# H200 (2026-12-04, benchmarks/RESULTS.md): InfoNCE took 20 GiB beyond its inputs at 16,384 pairs
# of bfloat16 rows, 32,768^2 logits, so 20 bytes a logit (float32 logits, softmax and gradients).
TORCH_BYTES_PER_LOGIT = 20
# The share of the free GPU memory the plain loss may fill before the kernels take over.
FREE_MEMORY_SHARE = 0.8
# From this many logits, with 16-bit rows, the kernels were faster than the plain loss at every
# size measured on an H200 (2026-12-04, bf16, d=128, forward + backward): at 16,384 pairs InfoNCE
# 6.5 ms against 43.9 ms (32,768^2 logits), CLIP 3.3 against 13.5 ms and SigLIP 2.5 against
# 14.8 ms (16,384^2 logits); at 65,536 pairs 6 to 9 times faster. Smaller sizes and float32 rows
# were not measured, so there memory alone decides.
KERNELS_MEASURED_FASTER_FROM = 16384 ** 2
# Below this many logits (7,327^2; at most 1 GiB at TORCH_BYTES_PER_LOGIT, and below
# KERNELS_MEASURED_FASTER_FROM) the plain loss is taken without asking the driver for its free
# memory. That query (cudaMemGetInfo) costs host time in the forward, up to ms a call on some
# stacks (sglang#25225: ~8 ms, torch 2.11+cu130), and a size-keyed cache still asks again at every
# new size: MoCo v2 while its queue fills, a last short batch. SSL losses stay below it: MoCo v3 at
# batch 512 has 512^2 logits (two losses a step), SimCLR 1024^2, MoCo v2 with 65,536 keys 512 x 66,048.
QUERY_FREE_MEMORY_FROM = 2**30 // TORCH_BYTES_PER_LOGIT


def kernels_apply(rows: Tensor) -> bool:
    """Whether ``fused=None`` weighs the kernels at all: CUDA tensors of a dtype they take, Triton
    installed, and not inside torch.compile (which fuses the torch loss itself, and would break
    its graph at the first call's check)."""
    return (rows.is_cuda and triton is not None and rows.dtype in FUSED_DTYPES
            and not torch.compiler.is_compiling())


def kernels_preferred(num_logits: int, free_bytes: int, sixteen_bit: bool) -> bool:
    """The automatic choice's rule: the kernels where they were measured faster than the plain
    torch loss (16-bit rows, at least KERNELS_MEASURED_FASTER_FROM logits), or where the plain loss
    of ``num_logits`` logits would not fit in FREE_MEMORY_SHARE of ``free_bytes``; else the plain
    loss, which fits.

    Example:
        >>> kernels_preferred(8192 ** 2, free_bytes=100 * 2**30, sixteen_bit=True)  # small: plain
        False
        >>> kernels_preferred(32768 ** 2, free_bytes=100 * 2**30, sixteen_bit=True)  # measured faster
        True
        >>> kernels_preferred(32768 ** 2, free_bytes=100 * 2**30, sixteen_bit=False)  # 20 GiB fits
        False
        >>> kernels_preferred(131072 ** 2, free_bytes=100 * 2**30, sixteen_bit=False)  # 320 GiB does not
        True
    """
    if sixteen_bit and num_logits >= KERNELS_MEASURED_FASTER_FROM:
        return True
    return TORCH_BYTES_PER_LOGIT * num_logits > FREE_MEMORY_SHARE * free_bytes


def free_gpu_bytes(device: torch.device) -> int:
    """Bytes the plain loss could take on ``device``: free in the driver, and cached by torch's
    allocator but unused (freed tensors it keeps for reuse)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


# (device, dtype, logits) -> the automatic choice, made at the first such call and kept: a run keeps
# its path (one that followed the free memory of the moment could change the run's rounding from
# step to step), and no step pays the driver's memory query.
_automatic_choices: dict[tuple[str, torch.dtype, int], bool] = {}


def use_fused(choice: bool | None, rows: Tensor, num_logits: int) -> bool:
    """A loss's ``fused`` argument resolved: True and False as given; None (the default) picks the
    kernels where they apply (:func:`kernels_apply`) and, for ``num_logits`` logits on this
    process, were measured faster than the plain loss or it would not fit in the GPU's free memory
    (:func:`kernels_preferred`), as judged at the first call of that size on that device; below
    QUERY_FREE_MEMORY_FROM logits the plain loss without asking the driver."""
    if choice is not None:
        return choice
    if not kernels_apply(rows) or num_logits < QUERY_FREE_MEMORY_FROM:
        return False  # small: the plain loss, with no driver query (so none for a new size either)
    key = (str(rows.device), rows.dtype, num_logits)
    if key not in _automatic_choices:
        _automatic_choices[key] = kernels_preferred(num_logits, free_gpu_bytes(rows.device),
                                                    sixteen_bit=rows.element_size() == 2)
    return _automatic_choices[key]


def _relative_difference(actual: Tensor, expected: Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm().clamp(min=1e-12)).item()


def checked_once(loss: str, rows: Tensor, choice: bool | None, fused: Callable[[], Tensor],
                 reference: Callable[[], Tensor], inputs: tuple[Tensor | None, ...] = ()) -> Tensor:
    """``fused()``, except where the kernels were chosen automatically (``choice`` None) and the
    first such call of this loss on this device and dtype failed, or gave a value or gradients (for
    those of ``inputs`` that require one) farther than float rounding from ``reference()``, the
    torch path run once beside it (host syncs, once): then ``reference()`` from then on, with a
    warning. So a kernel that does not compile, forward or backward, on this GPU and Triton costs a
    warning, not the run. A forced ``fused=True`` is not checked."""
    if choice is not None:
        return fused()
    key = (loss, str(rows.device), rows.dtype)
    if key in _checked:
        return fused() if _checked[key] else reference()
    problem = None
    leaves = [tensor for tensor in inputs if tensor is not None and tensor.requires_grad]
    try:
        value = fused()
        expected = reference()
        differences = [_relative_difference(value, expected)]
        if leaves and value.requires_grad:
            pairs = zip(torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True),
                        torch.autograd.grad(expected, leaves, allow_unused=True))
            differences += [_relative_difference(got, want) for got, want in pairs if want is not None]
        if not max(differences) <= _first_call_tolerance(rows):
            problem = f"it differs from the torch loss by {max(differences):.2g} (relative, value or gradients)"
    except Exception as error:  # a kernel that does not compile here must not stop training
        problem = f"it failed ({type(error).__name__}: {' '.join(str(error).split())[:300]})"
    _checked[key] = problem is None
    if problem is None:
        return value
    warnings.warn(f"the fused {loss} kernel was not used on {rows.device} ({rows.dtype}): {problem}; the torch "
                  "loss runs instead. Pass fused=False to silence this, or report it.", RuntimeWarning, stacklevel=3)
    return reference()


@jit
def _dots(q, c, DOT: tl.constexpr):
    """q c^T accumulated in float32, with the products of ``DOT`` (see :func:`_dot_mode`)."""
    if DOT == "ieee":
        return tl.dot(q.to(tl.float32), tl.trans(c.to(tl.float32)), input_precision="ieee")
    if DOT == "tf32":
        return tl.dot(q, tl.trans(c), input_precision="tf32")
    return tl.dot(q, tl.trans(c))


@jit
def _round_to_bfloat16(values):
    """float32 ``values`` rounded to the nearest bfloat16 (ties to even), kept in float32: what the
    GPU's conversion does. Written out in bits because Triton's interpreter truncates instead, which
    shrinks every weight the same way, a bias that the sums would accumulate."""
    bits = values.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@jit
def _weighted_sum(weights, x, DOT: tl.constexpr, ROUND_WEIGHTS: tl.constexpr):
    """weights @ x accumulated in float32. With ROUND_WEIGHTS (16-bit inputs) the float32 weights
    are rounded to x's dtype first, so that the product runs on tensor cores, as FlashAttention's
    backward does with its probabilities: the weights are probabilities in [0, 1], or sums of two
    (the targets are subtracted apart), so each loses at most 2^-9 of itself in bfloat16."""
    if ROUND_WEIGHTS and DOT == "ieee":
        weights = _round_to_bfloat16(weights)  # bfloat16 rows under the interpreter (see _dot_mode)
    elif ROUND_WEIGHTS:
        weights = weights.to(x.dtype)
    if DOT == "ieee":
        return tl.dot(weights.to(tl.float32), x.to(tl.float32), input_precision="ieee")
    if DOT == "tf32":
        return tl.dot(weights, x, input_precision="tf32")
    return tl.dot(weights, x)


@jit
def _base2(scale):
    """The logit scale times log2(e): the kernels exponentiate in base 2, as FlashAttention does,
    so that exp2 takes the scaled product as it is, with no multiply of its own."""
    return scale * 1.4426950408889634


@jit
def _tile_needs_mask(row_start, column_start, num_columns, self_offset, batch, num_anchors, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """Whether the tile of BLOCK_M anchors from ``row_start`` and BLOCK_N columns from
    ``column_start`` may hold a dropped, positive or out-of-range column (see :func:`_mask_tile`);
    a scalar, so the other tiles, all but a few per row of tiles, skip the masks' arithmetic.
    Anchors past the end need no mask: their rows are zero, never stored, and add nothing to the
    columns' gradients. It may answer True for a tile that needs none, never False for one that does."""
    past_end = column_start + BLOCK_N > num_columns
    overlaps_block = (column_start < self_offset + num_anchors) & (column_start + BLOCK_N > self_offset)
    # The tile's range of relative = column - self_offset - anchor.
    lowest = column_start - self_offset - (row_start + BLOCK_M - 1)
    highest = column_start + BLOCK_N - 1 - self_offset - row_start
    if PAIRED:
        on_diagonal = (lowest <= 0) & (highest >= 0)
        if DROP_OTHERS:
            return past_end | overlaps_block
        return past_end | on_diagonal
    # Views mode: a multiple of ``batch`` in [lowest, highest]. Shifted by a multiple of ``batch``
    # that makes both ends non-negative (|relative| < num_anchors + BLOCK_M + BLOCK_N where the tile
    # overlaps the block), so that integer division rounds as floor does.
    shift = batch * ((num_anchors + BLOCK_M + BLOCK_N) // batch + 1)
    holds_multiple = (highest + shift) // batch >= (lowest + shift + batch - 1) // batch
    return past_end | (overlaps_block & holds_multiple)


@jit
def _mask_tile(logits, rows, columns, row_ok, column_ok, self_offset, batch, num_anchors, PAIRED: tl.constexpr,
               DROP_OTHERS: tl.constexpr):
    """The tile's logits with dropped entries at -inf, and its positive and kept masks.

    Views mode (InfoNCE): anchor a is column self_offset + a and is dropped; its positives are the
    columns of the anchor block whose index differs from a by a multiple of ``batch``. Paired mode
    (CLIP, MoCo): anchor a's one positive is column self_offset + a and nothing is dropped, or with
    DROP_OTHERS every other column of that block (MoCo v2: the other keys are not negatives)."""
    relative = columns[None, :] - self_offset - rows[:, None]
    in_anchor_block = (columns[None, :] >= self_offset) & (columns[None, :] < self_offset + num_anchors)
    if PAIRED:
        positive = relative == 0
        if DROP_OTHERS:
            dropped = in_anchor_block & (relative != 0)
        else:
            dropped = tl.zeros_like(relative) == 1  # all False
    else:
        dropped = relative == 0
        positive = in_anchor_block & (relative % batch == 0) & (~dropped)
    valid = row_ok[:, None] & column_ok[None, :] & (~dropped)
    return tl.where(valid, logits, float("-inf")), positive & valid, valid


@jit
def _load_tile(POINTER, index, index_ok, dims, dim_ok, stride):
    """Rows ``index`` of a (rows, dim) matrix, zeros where out of range."""
    return tl.load(POINTER + index[:, None] * stride + dims[None, :], mask=index_ok[:, None] & dim_ok[None, :],
                   other=0.0)


@jit
def _forward_kernel(Q, C, LSE2, POSITIVE2, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, self_offset,
                    batch, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    DOT: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """Per anchor row, in base 2 (logits times log2 e, so that exp2 needs no multiply of its own,
    as FlashAttention does): log2 of the sum of 2^logit over the kept columns, and the sum of the
    positives' logits."""
    row_start = tl.program_id(0) * BLOCK_M
    rows = row_start + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_anchors
    dim_ok = dims < dim
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    scale2 = _base2(tl.load(SCALE))
    # A finite "minus infinity" to start from: exp2(-1e30 - m) is 0, never NaN.
    running_max = tl.full([BLOCK_M], -1.0e30, tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    positive_sum = tl.zeros([BLOCK_M], tl.float32)
    for column_start in range(0, num_columns, BLOCK_N):
        columns = column_start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
        logits = _dots(q, c, DOT) * scale2
        if _tile_needs_mask(row_start, column_start, num_columns, self_offset, batch, num_anchors, BLOCK_M, BLOCK_N,
                            PAIRED, DROP_OTHERS):
            logits, positive, _ = _mask_tile(logits, rows, columns, row_ok, column_ok, self_offset, batch,
                                             num_anchors, PAIRED, DROP_OTHERS)
            positive_sum += tl.sum(tl.where(positive, logits, 0.0), 1)
        new_max = tl.maximum(running_max, tl.max(logits, 1))
        running_sum = running_sum * tl.exp2(running_max - new_max) + tl.sum(tl.exp2(logits - new_max[:, None]), 1)
        running_max = new_max
    # Rows past the end hold no sum; 1 keeps their (unstored) log finite.
    tl.store(LSE2 + rows, running_max + tl.log2(tl.where(row_ok, running_sum, 1.0)), mask=row_ok)
    tl.store(POSITIVE2 + rows, positive_sum, mask=row_ok)


@jit
def _softmax_tile(q, c, lse2, rows, columns, row_ok, column_ok, row_start, column_start, num_anchors, num_columns,
                  scale2, self_offset, batch, DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """A tile's softmax P_ac, 0 where the logit is dropped. The weights are W = g (P - T); the
    targets T, whose rounding would cost the most (P - 1 near -1 on a positive), are subtracted
    apart and exactly (:func:`_anchor_targets`, :func:`_column_targets`), and g at the end."""
    probabilities = tl.exp2(_dots(q, c, DOT) * scale2 - lse2[:, None])
    if _tile_needs_mask(row_start, column_start, num_columns, self_offset, batch, num_anchors, BLOCK_M, BLOCK_N,
                        PAIRED, DROP_OTHERS):
        _, _, valid = _mask_tile(probabilities, rows, columns, row_ok, column_ok, self_offset, batch, num_anchors,
                                 PAIRED, DROP_OTHERS)
        probabilities = tl.where(valid, probabilities, 0.0)
    return probabilities


@jit
def _anchor_targets(C, rows, row_ok, dims, dim_ok, stride_c, num_anchors, self_offset, batch, num_positives,
                    PAIRED: tl.constexpr):
    """sum_c T_ac c_c for a block of anchors, in float32: the mean of their positives' rows (the
    paired column self_offset + a; or the other views of a's sample, a + j * batch modulo the
    anchor count, for j = 1 .. |P|)."""
    if PAIRED:
        return _load_tile(C, self_offset + rows, row_ok, dims, dim_ok, stride_c).to(tl.float32)
    total = tl.zeros([rows.shape[0], dims.shape[0]], tl.float32)
    for j in range(1, num_positives + 1):
        partners = self_offset + (rows + j * batch) % num_anchors
        total += _load_tile(C, partners, row_ok, dims, dim_ok, stride_c).to(tl.float32)
    return total / num_positives


@jit
def _column_targets(Q, columns, column_ok, dims, dim_ok, stride_q, num_anchors, self_offset, batch, num_positives,
                    PAIRED: tl.constexpr):
    """sum_a T_ac q_a for a block of columns, in float32: each column of the anchors' block is the
    positive of the anchor it pairs with, or of the other views of its sample (1 / |P| each)."""
    local = columns - self_offset
    in_block = column_ok & (local >= 0) & (local < num_anchors)
    local = tl.where(in_block, local, 0)
    if PAIRED:
        return _load_tile(Q, local, in_block, dims, dim_ok, stride_q).to(tl.float32)
    total = tl.zeros([columns.shape[0], dims.shape[0]], tl.float32)
    for j in range(1, num_positives + 1):
        total += _load_tile(Q, (local + j * batch) % num_anchors, in_block, dims, dim_ok, stride_q).to(tl.float32)
    return total / num_positives


@jit
def _anchor_grad_kernel(Q, C, LSE2, GRAD, DQ, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, stride_dq,
                        self_offset, batch, num_positives, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, DOT: tl.constexpr, ROUND_WEIGHTS: tl.constexpr,
                        PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """dq_a = s * sum_c W_ac c_c for one block of anchors (loaded once, the columns streamed)."""
    row_start = tl.program_id(0) * BLOCK_M
    rows = row_start + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_anchors
    dim_ok = dims < dim
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    lse2 = tl.load(LSE2 + rows, mask=row_ok, other=0.0)
    grad, scale = tl.load(GRAD), tl.load(SCALE)
    accumulated = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for column_start in range(0, num_columns, BLOCK_N):
        columns = column_start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
        weights = _softmax_tile(q, c, lse2, rows, columns, row_ok, column_ok, row_start, column_start, num_anchors,
                                num_columns, _base2(scale), self_offset, batch, DOT, BLOCK_M, BLOCK_N, PAIRED,
                                DROP_OTHERS)
        accumulated += _weighted_sum(weights, c, DOT, ROUND_WEIGHTS)
    accumulated -= _anchor_targets(C, rows, row_ok, dims, dim_ok, stride_c, num_anchors, self_offset, batch,
                                   num_positives, PAIRED)
    tl.store(DQ + rows[:, None] * stride_dq + dims[None, :], (accumulated * (grad * scale)).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])


@jit
def _column_grad_kernel(Q, C, LSE2, GRAD, DC, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, stride_dc,
                        self_offset, batch, num_positives, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, DOT: tl.constexpr, ROUND_WEIGHTS: tl.constexpr,
                        PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """dc_c = s * sum_a W_ac q_a for one block of columns (loaded once, the anchors streamed)."""
    column_start = tl.program_id(0) * BLOCK_N
    columns = column_start + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    column_ok = columns < num_columns
    dim_ok = dims < dim
    c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
    grad, scale = tl.load(GRAD), tl.load(SCALE)
    accumulated = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for row_start in range(0, num_anchors, BLOCK_M):
        rows = row_start + tl.arange(0, BLOCK_M)
        row_ok = rows < num_anchors
        q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
        lse2 = tl.load(LSE2 + rows, mask=row_ok, other=0.0)
        weights = _softmax_tile(q, c, lse2, rows, columns, row_ok, column_ok, row_start, column_start, num_anchors,
                                num_columns, _base2(scale), self_offset, batch, DOT, BLOCK_M, BLOCK_N, PAIRED,
                                DROP_OTHERS)
        accumulated += _weighted_sum(tl.trans(weights), q, DOT, ROUND_WEIGHTS)
    accumulated -= _column_targets(Q, columns, column_ok, dims, dim_ok, stride_q, num_anchors, self_offset, batch,
                                   num_positives, PAIRED)
    tl.store(DC + columns[:, None] * stride_dc + dims[None, :], (accumulated * (grad * scale)).to(DC.dtype.element_ty),
             mask=column_ok[:, None] & dim_ok[None, :])


@jit
def _symmetric_grad_kernel(Z, LSE2, GRAD, DZ, SCALE, num_rows, dim, stride_z, stride_dz, batch, num_positives,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr,
                           ROUND_WEIGHTS: tl.constexpr):
    """InfoNCE's whole gradient where the columns are the anchors themselves (one process, no extra
    negatives): the logits are symmetric, l_ij = l_ji, and so are the masks, so row i's gradient,
    the sum of its part as an anchor and as a column, is dz_i = s * sum_j (P_ij + P_ji - 2 T_ij) z_j
    with P_ji = 2^(l_ij - lse_j). One pass over the columns per block of rows: one logits product
    and one weighted sum per tile, where an anchor kernel and a column kernel take two each."""
    row_start = tl.program_id(0) * BLOCK_M
    rows = row_start + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_rows
    dim_ok = dims < dim
    z = _load_tile(Z, rows, row_ok, dims, dim_ok, stride_z)
    row_lse2 = tl.load(LSE2 + rows, mask=row_ok, other=0.0)
    grad, scale = tl.load(GRAD), tl.load(SCALE)
    scale2 = _base2(scale)
    accumulated = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for column_start in range(0, num_rows, BLOCK_N):
        columns = column_start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_rows
        c = _load_tile(Z, columns, column_ok, dims, dim_ok, stride_z)
        column_lse2 = tl.load(LSE2 + columns, mask=column_ok, other=0.0)
        logits = _dots(z, c, DOT) * scale2
        weights = tl.exp2(logits - row_lse2[:, None]) + tl.exp2(logits - column_lse2[None, :])
        if _tile_needs_mask(row_start, column_start, num_rows, 0, batch, num_rows, BLOCK_M, BLOCK_N, False, False):
            _, _, valid = _mask_tile(logits, rows, columns, row_ok, column_ok, 0, batch, num_rows, False, False)
            weights = tl.where(valid, weights, 0.0)
        accumulated += _weighted_sum(weights, c, DOT, ROUND_WEIGHTS)
    accumulated -= 2.0 * _anchor_targets(Z, rows, row_ok, dims, dim_ok, stride_z, num_rows, 0, batch, num_positives,
                                         False)
    tl.store(DZ + rows[:, None] * stride_dz + dims[None, :], (accumulated * (grad * scale)).to(DZ.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])


@jit
def _sigmoid_terms(x, y, scale, bias, rows, columns, row_ok, column_ok, self_offset, DOT: tl.constexpr):
    """A SigLIP tile's loss terms softplus(-z l), with l = s x.y + b and z = +1 on the pair's own
    column, -1 elsewhere; sigmoid(l); and [z = 1]; 0 outside the matrix. The gradients are
    dl = g (sigmoid(l) - [z = 1]): the target's term is subtracted apart and exactly (it is the pair's
    own row), and the loss's gradient g multiplies the sums once, at the end."""
    logits = _dots(x, y, DOT) * scale + bias
    positive = (columns[None, :] - self_offset - rows[:, None]) == 0
    valid = row_ok[:, None] & column_ok[None, :]
    signed = tl.where(positive, logits, -logits)
    # softplus(-signed), stable for either sign.
    terms = tl.maximum(-signed, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(signed)))
    return (tl.where(valid, terms, 0.0), tl.where(valid, tl.sigmoid(logits), 0.0),
            tl.where(valid & positive, 1.0, 0.0))


@jit
def _sigmoid_forward_kernel(X, Y, ROW_SUM, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y, self_offset,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            DOT: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_rows
    dim_ok = dims < dim
    x = _load_tile(X, rows, row_ok, dims, dim_ok, stride_x)
    scale, bias = tl.load(SCALE), tl.load(BIAS)
    total = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        y = _load_tile(Y, columns, column_ok, dims, dim_ok, stride_y)
        terms, _, _ = _sigmoid_terms(x, y, scale, bias, rows, columns, row_ok, column_ok, self_offset, DOT)
        total += tl.sum(terms, 1)
    tl.store(ROW_SUM + rows, total, mask=row_ok)


@jit
def _sigmoid_row_grad_kernel(X, Y, GRAD, DX, D_LOGIT_SUM, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y,
                             stride_dx, self_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, DOT: tl.constexpr, ROUND_WEIGHTS: tl.constexpr):
    """dx_i = s * sum_j dl_ij y_j, and each row's sum of dl (the bias's gradient, summed after)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_rows
    dim_ok = dims < dim
    x = _load_tile(X, rows, row_ok, dims, dim_ok, stride_x)
    grad, scale, bias = tl.load(GRAD), tl.load(SCALE), tl.load(BIAS)
    accumulated = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    d_logit_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        y = _load_tile(Y, columns, column_ok, dims, dim_ok, stride_y)
        _, probabilities, targets = _sigmoid_terms(x, y, scale, bias, rows, columns, row_ok, column_ok, self_offset,
                                                   DOT)
        accumulated += _weighted_sum(probabilities, y, DOT, ROUND_WEIGHTS)
        d_logit_sum += tl.sum(probabilities - targets, 1)
    pairs = self_offset + rows
    accumulated -= _load_tile(Y, pairs, row_ok & (pairs < num_columns), dims, dim_ok, stride_y).to(tl.float32)
    tl.store(DX + rows[:, None] * stride_dx + dims[None, :], (accumulated * (grad * scale)).to(DX.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(D_LOGIT_SUM + rows, d_logit_sum * grad, mask=row_ok)


@jit
def _sigmoid_column_grad_kernel(X, Y, GRAD, DY, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y,
                                stride_dy, self_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_D: tl.constexpr, DOT: tl.constexpr, ROUND_WEIGHTS: tl.constexpr):
    """dy_j = s * sum_i dl_ij x_i for one block of columns."""
    columns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    column_ok = columns < num_columns
    dim_ok = dims < dim
    y = _load_tile(Y, columns, column_ok, dims, dim_ok, stride_y)
    grad, scale, bias = tl.load(GRAD), tl.load(SCALE), tl.load(BIAS)
    accumulated = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, num_rows, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < num_rows
        x = _load_tile(X, rows, row_ok, dims, dim_ok, stride_x)
        _, probabilities, _ = _sigmoid_terms(x, y, scale, bias, rows, columns, row_ok, column_ok, self_offset, DOT)
        accumulated += _weighted_sum(tl.trans(probabilities), x, DOT, ROUND_WEIGHTS)
    pairs = columns - self_offset
    paired = column_ok & (pairs >= 0) & (pairs < num_rows)
    accumulated -= _load_tile(X, tl.where(paired, pairs, 0), paired, dims, dim_ok, stride_x).to(tl.float32)
    tl.store(DY + columns[:, None] * stride_dy + dims[None, :], (accumulated * (grad * scale)).to(DY.dtype.element_ty),
             mask=column_ok[:, None] & dim_ok[None, :])


def _dot_mode(rows: Tensor) -> str:
    """The products of the kernels' dots, all accumulated in float32:

    * "native" for 16-bit rows on a GPU: 16-bit products on tensor cores (exact in float32);
    * for float32 rows, what torch's own float32 matmuls take: "tf32" under
      ``torch.set_float32_matmul_precision("high")`` or ``"medium"``, else (torch's default,
      "highest") "ieee" float32 products, the explicit choice of the accuracy tests;
    * "ieee" for bfloat16 rows under the interpreter, whose bfloat16 tl.dot is wrong: bfloat16
      products are exact in float32, so this computes what the GPU's bfloat16 dot does.
    """
    if rows.dtype == torch.float32:
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    if rows.dtype == torch.bfloat16 and rows.device.type == "cpu":
        return "ieee"
    return "native"


def _block_dim(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


# Tiles (BLOCK_M anchor rows x BLOCK_N columns), warps and software-pipeline stages of each kernel
# (forward, row_grad, column_grad, symmetric_grad). For 16-bit rows of up to 128 dims, 64 x 64 with
# 4 warps and 3 stages was the fastest of six configurations for the first three on an H200, or
# within 1.3% of it (InfoNCE, 16,384 pairs, d=128; 128-row and 128-column tiles were 4% to 76%
# slower: benchmarks/RESULTS.md). symmetric_grad, which came after, takes row_grad's until measured
# (benchmarks/loss_kernel_tiles.py). float32 or wider rows take 2 stages, which fit any GPU's
# shared memory.
LAUNCH_16_BIT: dict[str, dict[str, int]] = {
    kernel: dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
    for kernel in ("forward", "row_grad", "column_grad", "symmetric_grad")
}
LAUNCH_WIDE: dict[str, int] = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)


def _launch(kernel: str, rows: Tensor) -> dict[str, int]:
    """The tile sizes, warps and stages of ``kernel`` (a key of LAUNCH_16_BIT) for ``rows``."""
    if rows.element_size() == 2 and rows.shape[1] <= 128:
        return LAUNCH_16_BIT[kernel]
    return LAUNCH_WIDE


class _FusedContrast(torch.autograd.Function):
    """mean_a CE_a of anchors against columns at logit scale ``scale`` (a 1-element float32 tensor,
    differentiable); see :func:`_mask_tile` for the two modes. ``symmetric``: the columns are the
    anchors themselves (InfoNCE on one process without extra negatives), whose whole gradient one
    kernel computes (:func:`_symmetric_grad_kernel`), returned as the anchors'."""

    @staticmethod
    def forward(ctx, anchors: Tensor, columns: Tensor, scale: Tensor, self_offset: int, batch: int,
                positives_per_anchor: int, paired: bool, drop_others: bool, symmetric: bool) -> Tensor:
        anchors = anchors.contiguous()
        columns = anchors if symmetric else columns.contiguous()
        scale = scale.detach().float().reshape(1).contiguous()
        num_anchors, dim = anchors.shape
        # Per anchor, in base 2 (see _forward_kernel): log2-sum-exp2 and the positives' logit sum.
        lse2 = torch.empty(num_anchors, dtype=torch.float32, device=anchors.device)
        positive2 = torch.empty_like(lse2)
        ctx.modes = dict(BLOCK_D=_block_dim(dim), DOT=_dot_mode(anchors), PAIRED=paired, DROP_OTHERS=drop_others)
        launch = _launch("forward", anchors)
        _forward_kernel[(triton.cdiv(num_anchors, launch["BLOCK_M"]),)](
            anchors, columns, lse2, positive2, scale, num_anchors, columns.shape[0], dim, anchors.stride(0),
            columns.stride(0), self_offset, batch, **launch, **ctx.modes)
        ctx.save_for_backward(anchors, columns, lse2, scale)
        ctx.settings = (self_offset, batch, positives_per_anchor)
        ctx.symmetric = symmetric
        return (lse2 - positive2 / positives_per_anchor).mean() * math.log(2.0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        anchors, columns, lse2, scale = ctx.saved_tensors
        num_anchors, dim = anchors.shape
        # d loss / d CE_a, as a device tensor: reading it on the host would be a sync.
        grad = (grad_loss.float() / num_anchors).reshape(1).contiguous()
        rounding = dict(ROUND_WEIGHTS=anchors.element_size() == 2)
        self_offset, batch, num_positives = ctx.settings
        d_columns = None
        if ctx.symmetric:
            d_anchors = torch.empty_like(anchors)
            launch = _launch("symmetric_grad", anchors)
            _symmetric_grad_kernel[(triton.cdiv(num_anchors, launch["BLOCK_M"]),)](
                anchors, lse2, grad, d_anchors, scale, num_anchors, dim, anchors.stride(0), d_anchors.stride(0), batch,
                num_positives, BLOCK_D=ctx.modes["BLOCK_D"], DOT=ctx.modes["DOT"], **launch, **rounding)
        else:
            d_anchors, d_columns = torch.empty_like(anchors), torch.empty_like(columns)
            arguments = (anchors, columns, lse2, grad)
            sizes = (num_anchors, columns.shape[0], dim, anchors.stride(0), columns.stride(0))
            launch = _launch("row_grad", anchors)
            _anchor_grad_kernel[(triton.cdiv(num_anchors, launch["BLOCK_M"]),)](
                *arguments, d_anchors, scale, *sizes, d_anchors.stride(0), *ctx.settings, **launch, **ctx.modes,
                **rounding)
            launch = _launch("column_grad", anchors)
            _column_grad_kernel[(triton.cdiv(columns.shape[0], launch["BLOCK_N"]),)](
                *arguments, d_columns, scale, *sizes, d_columns.stride(0), *ctx.settings, **launch, **ctx.modes,
                **rounding)
        d_scale = None
        if ctx.needs_input_grad[2]:
            # The logits are s * q.c, so dL/ds = sum W_ac q_a.c_c = sum_a q_a . dq_a / s, dq_a the
            # anchor's part alone; the symmetric gradient holds both parts, each that sum once.
            parts = 2.0 if ctx.symmetric else 1.0
            d_scale = ((d_anchors.float() * anchors.float()).sum() / (parts * scale[0])).reshape(1)
        return d_anchors, d_columns, d_scale, None, None, None, None, None, None


def _check_fused(rows: Tensor, loss: str) -> None:
    if triton is None:
        raise ConfigError(f"the fused {loss} kernels need Triton: pip install triton (it comes with PyTorch's "
                          "CUDA wheels on Linux).")
    if rows.dtype not in FUSED_DTYPES:
        raise ConfigError(f"the fused {loss} kernels take float32, bfloat16 or float16 rows, got {rows.dtype}; "
                          "pass fused=False (the float64 path is the reference).")
    if not available(rows.device):
        raise ConfigError(f"the fused {loss} kernels run on CUDA tensors (or on the CPU under "
                          f"TRITON_INTERPRET=1, for tests); got tensors on {rows.device}. Pass fused=False.")


def fused_info_nce_from_rows(anchors: Tensor, rows: Tensor, extra: Tensor | None, self_offset: int,
                             num_views: int, temperature: float) -> Tensor:
    """InfoNCE of ``anchors`` (A = V*N rows, view-major) against ``rows`` (the anchors, or every
    process's anchors with this process's at ``self_offset``) and the optional ``extra`` negatives,
    in the fused kernels. Rows are used as given (normalise them first for cosine similarity).
    Returns the float32 mean loss."""
    _check_fused(anchors, "InfoNCE")
    columns = rows if extra is None else torch.cat([rows, extra.to(rows.dtype)])
    scale = torch.full((1,), 1.0 / temperature, dtype=torch.float32, device=anchors.device)
    return _FusedContrast.apply(anchors, columns, scale, self_offset, anchors.shape[0] // num_views, num_views - 1,
                                False, False, columns is anchors)


def fused_paired_cross_entropy(anchors: Tensor, columns: Tensor, scale: Tensor, self_offset: int = 0, *,
                               drop_others: bool = False) -> Tensor:
    """mean_a of the cross-entropy of anchor a classifying column ``self_offset + a`` among all
    ``columns`` at logit scale ``scale`` (a tensor; its gradient is returned): one direction of
    CLIP, and MoCo's query-key loss. ``drop_others`` leaves the other columns of the anchors' block
    out (MoCo v2: the batch's other keys are not its negatives, the queue after them is)."""
    _check_fused(anchors, "cross-entropy")
    return _FusedContrast.apply(anchors, columns.to(anchors.dtype), scale.reshape(1), self_offset, 1, 1, True,
                                drop_others, False)


class _FusedSigmoid(torch.autograd.Function):
    """SigLIP's sum_ij softplus(-z_ij (s x_i.y_j + b)) / (rows), with s and b 1-element float32
    tensors (differentiable)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, self_offset: int) -> Tensor:
        x, y = x.contiguous(), y.contiguous()
        scale = scale.detach().float().reshape(1).contiguous()
        bias = bias.detach().float().reshape(1).contiguous()
        num_rows, dim = x.shape
        row_sum = torch.empty(num_rows, dtype=torch.float32, device=x.device)
        ctx.modes = dict(BLOCK_D=_block_dim(dim), DOT=_dot_mode(x))
        launch = _launch("forward", x)
        _sigmoid_forward_kernel[(triton.cdiv(num_rows, launch["BLOCK_M"]),)](
            x, y, row_sum, scale, bias, num_rows, y.shape[0], dim, x.stride(0), y.stride(0), self_offset, **launch,
            **ctx.modes)
        ctx.save_for_backward(x, y, scale, bias)
        ctx.self_offset = self_offset
        return row_sum.sum() / num_rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        x, y, scale, bias = ctx.saved_tensors
        num_rows, dim = x.shape
        grad = (grad_loss.float() / num_rows).reshape(1).contiguous()
        d_x, d_y = torch.empty_like(x), torch.empty_like(y)
        d_logit_sum = torch.empty(num_rows, dtype=torch.float32, device=x.device)
        sizes = (num_rows, y.shape[0], dim, x.stride(0), y.stride(0))
        modes = dict(ctx.modes, ROUND_WEIGHTS=x.element_size() == 2)
        launch = _launch("row_grad", x)
        _sigmoid_row_grad_kernel[(triton.cdiv(num_rows, launch["BLOCK_M"]),)](
            x, y, grad, d_x, d_logit_sum, scale, bias, *sizes, d_x.stride(0), ctx.self_offset, **launch, **modes)
        launch = _launch("column_grad", x)
        _sigmoid_column_grad_kernel[(triton.cdiv(y.shape[0], launch["BLOCK_N"]),)](
            x, y, grad, d_y, scale, bias, *sizes, d_y.stride(0), ctx.self_offset, **launch, **modes)
        # The logits are s x.y + b: dL/ds = sum_i x_i . dx_i / s and dL/db = sum of dl.
        d_scale = ((d_x.float() * x.float()).sum() / scale[0]).reshape(1)
        return d_x, d_y, d_scale, d_logit_sum.sum().reshape(1), None


def fused_sigmoid_loss(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, self_offset: int = 0) -> Tensor:
    """SigLIP's sigmoid loss of the rows ``x`` against the columns ``y`` (row i's pair is column
    ``self_offset + i``) at logit scale ``scale`` and bias ``bias`` (tensors; their gradients are
    returned), in the fused kernels. Rows are used as given (normalise them first)."""
    _check_fused(x, "SigLIP")
    return _FusedSigmoid.apply(x, y.to(x.dtype), scale.reshape(1), bias.reshape(1), self_offset)
