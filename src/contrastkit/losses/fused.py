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
attention does); it writes only the per-row log-sum-exp and positive sum. Backward recomputes the
logits tile by tile, with the weights W_ac = g (P_ac - [c in P(a)] / |P(a)|): one kernel
accumulates dq_a = s * sum_c W_ac c_c per block of anchors, another dc_c = s * sum_a W_ac q_a per
block of columns, so no process-wide atomics and no N x N matrix.

Inputs may be float32, bfloat16 or float16; products are accumulated in float32, float32 inputs
with IEEE float32 products (no TF32), and the backward weights stay float32. The kernels run on
CUDA, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1`` before Python starts), which
is how the tests check them against float64 references.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastkit._triton import jit, tl, triton
from contrastkit.errors import ConfigError

FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK_ROWS = 64
_BLOCK_COLUMNS = 64


# Relative difference between the first fused loss of a kind and the torch loss (value, and
# gradient norms) above which the kernels are not trusted: the tests measure 4e-7 in float32 and
# 4e-3 in bfloat16, where rounding the gradients to bfloat16 alone costs 1.7e-3.
_FIRST_CALL_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}
# (loss, device, dtype) -> whether the first fused call agreed with the torch path.
_checked: dict[tuple[str, str, torch.dtype], bool] = {}


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device``: Triton installed and a CUDA device, or the
    CPU under Triton's interpreter."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def use_fused(choice: bool | None, rows: Tensor) -> bool:
    """A loss's ``fused`` argument resolved: True and False as given; None (the default) picks the
    kernels for CUDA tensors of a dtype they take, when Triton is installed, except inside
    torch.compile (which fuses the torch loss itself, and would break its graph at the first
    call's check)."""
    if choice is not None:
        return choice
    return (rows.is_cuda and triton is not None and rows.dtype in FUSED_DTYPES
            and not torch.compiler.is_compiling())


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
        if not max(differences) <= _FIRST_CALL_TOLERANCE[rows.dtype]:
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
def _dots(q, c, IEEE: tl.constexpr):
    """q c^T in float32: IEEE float32 products, or the inputs' own (16-bit) ones."""
    if IEEE:
        return tl.dot(q.to(tl.float32), tl.trans(c.to(tl.float32)), input_precision="ieee")
    return tl.dot(q, tl.trans(c))


@jit
def _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch, num_anchors,
                 IEEE: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """The tile's logits, dropped entries at -inf, and its positive and kept masks.

    Views mode (InfoNCE): anchor a is column self_offset + a and is dropped; its positives are the
    columns of the anchor block whose index differs from a by a multiple of ``batch``. Paired mode
    (CLIP, MoCo): anchor a's one positive is column self_offset + a and nothing is dropped, or with
    DROP_OTHERS every other column of that block (MoCo v2: the other keys are not negatives)."""
    logits = _dots(q, c, IEEE) * scale
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
def _forward_kernel(Q, C, LSE, POSITIVE, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, self_offset,
                    batch, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    IEEE: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_anchors
    dim_ok = dims < dim
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    scale = tl.load(SCALE)
    # A finite "minus infinity" to start from: exp(-1e30 - m) is 0, never NaN.
    running_max = tl.full([BLOCK_M], -1.0e30, tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    positive_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
        logits, positive, valid = _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch,
                                               num_anchors, IEEE, PAIRED, DROP_OTHERS)
        positive_sum += tl.sum(tl.where(positive, logits, 0.0), 1)
        new_max = tl.maximum(running_max, tl.max(logits, 1))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), 1)
        running_max = new_max
    # Rows past the end hold no sum; 1 keeps their (unstored) log finite.
    tl.store(LSE + rows, running_max + tl.log(tl.where(row_ok, running_sum, 1.0)), mask=row_ok)
    tl.store(POSITIVE + rows, positive_sum, mask=row_ok)


@jit
def _weights(q, c, lse, grad, rows, columns, row_ok, column_ok, num_anchors, scale, self_offset, batch,
             positives_per_anchor, IEEE: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    """A tile's weights W = g (softmax - target), 0 where the logit is dropped."""
    logits, positive, valid = _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch,
                                           num_anchors, IEEE, PAIRED, DROP_OTHERS)
    weights = grad * (tl.exp(logits - lse[:, None]) - tl.where(positive, 1.0 / positives_per_anchor, 0.0))
    return tl.where(valid, weights, 0.0)


@jit
def _anchor_grad_kernel(Q, C, LSE, GRAD, DQ, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, stride_dq,
                        self_offset, batch, positives_per_anchor, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, IEEE: tl.constexpr, PAIRED: tl.constexpr,
                        DROP_OTHERS: tl.constexpr):
    """dq_a = s * sum_c W_ac c_c for one block of anchors (loaded once, the columns streamed)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_anchors
    dim_ok = dims < dim
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    grad, scale = tl.load(GRAD), tl.load(SCALE)
    accumulated = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
        weights = _weights(q, c, lse, grad, rows, columns, row_ok, column_ok, num_anchors, scale, self_offset, batch,
                           positives_per_anchor, IEEE, PAIRED, DROP_OTHERS)
        accumulated += tl.dot(weights, c.to(tl.float32), input_precision="ieee")
    tl.store(DQ + rows[:, None] * stride_dq + dims[None, :], (accumulated * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])


@jit
def _column_grad_kernel(Q, C, LSE, GRAD, DC, SCALE, num_anchors, num_columns, dim, stride_q, stride_c, stride_dc,
                        self_offset, batch, positives_per_anchor, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, IEEE: tl.constexpr, PAIRED: tl.constexpr,
                        DROP_OTHERS: tl.constexpr):
    """dc_c = s * sum_a W_ac q_a for one block of columns (loaded once, the anchors streamed)."""
    columns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    column_ok = columns < num_columns
    dim_ok = dims < dim
    c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
    grad, scale = tl.load(GRAD), tl.load(SCALE)
    accumulated = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, num_anchors, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < num_anchors
        q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        weights = _weights(q, c, lse, grad, rows, columns, row_ok, column_ok, num_anchors, scale, self_offset, batch,
                           positives_per_anchor, IEEE, PAIRED, DROP_OTHERS)
        accumulated += tl.dot(tl.trans(weights), q.to(tl.float32), input_precision="ieee")
    tl.store(DC + columns[:, None] * stride_dc + dims[None, :], (accumulated * scale).to(DC.dtype.element_ty),
             mask=column_ok[:, None] & dim_ok[None, :])


@jit
def _sigmoid_terms(x, y, grad, scale, bias, rows, columns, row_ok, column_ok, self_offset, IEEE: tl.constexpr):
    """A SigLIP tile's loss terms softplus(-z l), with l = s x.y + b and z = +1 on the pair's own
    column, -1 elsewhere, and their gradients dl = g (sigmoid(l) - [z = 1]); 0 outside the matrix."""
    logits = _dots(x, y, IEEE) * scale + bias
    positive = (columns[None, :] - self_offset - rows[:, None]) == 0
    valid = row_ok[:, None] & column_ok[None, :]
    signed = tl.where(positive, logits, -logits)
    # softplus(-signed), stable for either sign.
    terms = tl.maximum(-signed, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(signed)))
    d_logits = grad * (tl.sigmoid(logits) - tl.where(positive, 1.0, 0.0))
    return tl.where(valid, terms, 0.0), tl.where(valid, d_logits, 0.0)


@jit
def _sigmoid_forward_kernel(X, Y, ROW_SUM, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y, self_offset,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            IEEE: tl.constexpr):
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
        terms, _ = _sigmoid_terms(x, y, 0.0, scale, bias, rows, columns, row_ok, column_ok, self_offset, IEEE)
        total += tl.sum(terms, 1)
    tl.store(ROW_SUM + rows, total, mask=row_ok)


@jit
def _sigmoid_row_grad_kernel(X, Y, GRAD, DX, D_LOGIT_SUM, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y,
                             stride_dx, self_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
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
        _, d_logits = _sigmoid_terms(x, y, grad, scale, bias, rows, columns, row_ok, column_ok, self_offset, IEEE)
        accumulated += tl.dot(d_logits, y.to(tl.float32), input_precision="ieee")
        d_logit_sum += tl.sum(d_logits, 1)
    tl.store(DX + rows[:, None] * stride_dx + dims[None, :], (accumulated * scale).to(DX.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(D_LOGIT_SUM + rows, d_logit_sum, mask=row_ok)


@jit
def _sigmoid_column_grad_kernel(X, Y, GRAD, DY, SCALE, BIAS, num_rows, num_columns, dim, stride_x, stride_y,
                                stride_dy, self_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
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
        _, d_logits = _sigmoid_terms(x, y, grad, scale, bias, rows, columns, row_ok, column_ok, self_offset, IEEE)
        accumulated += tl.dot(tl.trans(d_logits), x.to(tl.float32), input_precision="ieee")
    tl.store(DY + columns[:, None] * stride_dy + dims[None, :], (accumulated * scale).to(DY.dtype.element_ty),
             mask=column_ok[:, None] & dim_ok[None, :])


def _ieee_products(rows: Tensor) -> bool:
    """float32 rows take IEEE float32 products (TF32 would miss the 1e-5 accuracy). bfloat16 rows
    take them under the interpreter too, whose bfloat16 tl.dot is wrong; bfloat16 products are exact
    in float32, so this computes what the GPU's bfloat16 dot with float32 accumulation does."""
    return rows.dtype == torch.float32 or (rows.dtype == torch.bfloat16 and rows.device.type == "cpu")


def _block_dim(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


class _FusedContrast(torch.autograd.Function):
    """mean_a CE_a of anchors against columns at logit scale ``scale`` (a 1-element float32 tensor,
    differentiable); see :func:`_logits_tile` for the two modes."""

    @staticmethod
    def forward(ctx, anchors: Tensor, columns: Tensor, scale: Tensor, self_offset: int, batch: int,
                positives_per_anchor: int, paired: bool, drop_others: bool) -> Tensor:
        anchors, columns = anchors.contiguous(), columns.contiguous()
        scale = scale.detach().float().reshape(1).contiguous()
        num_anchors, dim = anchors.shape
        lse = torch.empty(num_anchors, dtype=torch.float32, device=anchors.device)
        positive = torch.empty_like(lse)
        ctx.modes = dict(BLOCK_M=_BLOCK_ROWS, BLOCK_N=_BLOCK_COLUMNS, BLOCK_D=_block_dim(dim),
                         IEEE=_ieee_products(anchors), PAIRED=paired, DROP_OTHERS=drop_others)
        _forward_kernel[(triton.cdiv(num_anchors, _BLOCK_ROWS),)](
            anchors, columns, lse, positive, scale, num_anchors, columns.shape[0], dim, anchors.stride(0),
            columns.stride(0), self_offset, batch, **ctx.modes)
        ctx.save_for_backward(anchors, columns, lse, scale)
        ctx.settings = (self_offset, batch, float(positives_per_anchor))
        return (lse - positive / positives_per_anchor).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        anchors, columns, lse, scale = ctx.saved_tensors
        num_anchors, dim = anchors.shape
        # d loss / d CE_a, as a device tensor: reading it on the host would be a sync.
        grad = (grad_loss.float() / num_anchors).reshape(1).contiguous()
        d_anchors, d_columns = torch.empty_like(anchors), torch.empty_like(columns)
        arguments = (anchors, columns, lse, grad)
        sizes = (num_anchors, columns.shape[0], dim, anchors.stride(0), columns.stride(0))
        _anchor_grad_kernel[(triton.cdiv(num_anchors, _BLOCK_ROWS),)](
            *arguments, d_anchors, scale, *sizes, d_anchors.stride(0), *ctx.settings, **ctx.modes)
        _column_grad_kernel[(triton.cdiv(columns.shape[0], _BLOCK_COLUMNS),)](
            *arguments, d_columns, scale, *sizes, d_columns.stride(0), *ctx.settings, **ctx.modes)
        d_scale = None
        if ctx.needs_input_grad[2]:
            # The logits are s * q.c, so dL/ds = sum W_ac q_a.c_c = sum_a q_a . dq_a / s.
            d_scale = ((d_anchors.float() * anchors.float()).sum() / scale[0]).reshape(1)
        return d_anchors, d_columns, d_scale, None, None, None, None, None


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
                                False, False)


def fused_paired_cross_entropy(anchors: Tensor, columns: Tensor, scale: Tensor, self_offset: int = 0, *,
                               drop_others: bool = False) -> Tensor:
    """mean_a of the cross-entropy of anchor a classifying column ``self_offset + a`` among all
    ``columns`` at logit scale ``scale`` (a tensor; its gradient is returned): one direction of
    CLIP, and MoCo's query-key loss. ``drop_others`` leaves the other columns of the anchors' block
    out (MoCo v2: the batch's other keys are not its negatives, the queue after them is)."""
    _check_fused(anchors, "cross-entropy")
    return _FusedContrast.apply(anchors, columns.to(anchors.dtype), scale.reshape(1), self_offset, 1, 1, True,
                                drop_others)


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
        ctx.modes = dict(BLOCK_M=_BLOCK_ROWS, BLOCK_N=_BLOCK_COLUMNS, BLOCK_D=_block_dim(dim), IEEE=_ieee_products(x))
        _sigmoid_forward_kernel[(triton.cdiv(num_rows, _BLOCK_ROWS),)](
            x, y, row_sum, scale, bias, num_rows, y.shape[0], dim, x.stride(0), y.stride(0), self_offset, **ctx.modes)
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
        _sigmoid_row_grad_kernel[(triton.cdiv(num_rows, _BLOCK_ROWS),)](
            x, y, grad, d_x, d_logit_sum, scale, bias, *sizes, d_x.stride(0), ctx.self_offset, **ctx.modes)
        _sigmoid_column_grad_kernel[(triton.cdiv(y.shape[0], _BLOCK_COLUMNS),)](
            x, y, grad, d_y, scale, bias, *sizes, d_y.stride(0), ctx.self_offset, **ctx.modes)
        # The logits are s x.y + b: dL/ds = sum_i x_i . dx_i / s and dL/db = sum of dl.
        d_scale = ((d_x.float() * x.float()).sum() / scale[0]).reshape(1)
        return d_x, d_y, d_scale, d_logit_sum.sum().reshape(1), None


def fused_sigmoid_loss(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, self_offset: int = 0) -> Tensor:
    """SigLIP's sigmoid loss of the rows ``x`` against the columns ``y`` (row i's pair is column
    ``self_offset + i``) at logit scale ``scale`` and bias ``bias`` (tensors; their gradients are
    returned), in the fused kernels. Rows are used as given (normalise them first)."""
    _check_fused(x, "SigLIP")
    return _FusedSigmoid.apply(x, y.to(x.dtype), scale.reshape(1), bias.reshape(1), self_offset)
