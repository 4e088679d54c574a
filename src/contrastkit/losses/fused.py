"""InfoNCE in Triton kernels: the similarity matmul fused with an online log-sum-exp, exact, with
memory O(rows + columns).

The loss is :mod:`contrastkit.losses.tiled`'s (read its docstring for the notation): A anchor rows
q_a against C columns c_c, logits l_ac = s * q_a . c_c (s = 1/temperature), the anchor's own
column dropped, its positives the other views of its sample, CE_a = logsumexp_c l_ac - mean_p l_ap,
and the loss mean_a CE_a.

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

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastkit._triton import jit, tl, triton
from contrastkit.errors import ConfigError

FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK_ROWS = 64
_BLOCK_COLUMNS = 64


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device``: Triton installed and a CUDA device, or the
    CPU under Triton's interpreter."""
    if triton is None:
        return False
    import os

    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@jit
def _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch, num_anchors, IEEE: tl.constexpr):
    """The tile's logits with the anchors' own columns and out-of-range entries at -inf, and its
    positive mask."""
    if IEEE:
        dots = tl.dot(q.to(tl.float32), tl.trans(c.to(tl.float32)), input_precision="ieee")
    else:
        dots = tl.dot(q, tl.trans(c))
    logits = dots * scale
    relative = columns[None, :] - self_offset - rows[:, None]
    in_anchor_block = (columns[None, :] >= self_offset) & (columns[None, :] < self_offset + num_anchors)
    is_self = relative == 0
    positive = in_anchor_block & (relative % batch == 0) & (~is_self) & row_ok[:, None]
    valid = row_ok[:, None] & column_ok[None, :] & (~is_self)
    return tl.where(valid, logits, float("-inf")), positive, valid


@jit
def _load_tile(POINTER, index, index_ok, dims, dim_ok, stride):
    """Rows ``index`` of a (rows, dim) matrix, zeros where out of range."""
    return tl.load(POINTER + index[:, None] * stride + dims[None, :], mask=index_ok[:, None] & dim_ok[None, :],
                   other=0.0)


@jit
def _forward_kernel(Q, C, LSE, POSITIVE, num_anchors, num_columns, dim, stride_q, stride_c, scale, self_offset,
                    batch, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    IEEE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_anchors
    dim_ok = dims < dim
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    # A finite "minus infinity" to start from: exp(-1e30 - m) is 0, never NaN.
    running_max = tl.full([BLOCK_M], -1.0e30, tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    positive_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        column_ok = columns < num_columns
        c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
        logits, positive, valid = _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch,
                                               num_anchors, IEEE)
        positive_sum += tl.sum(tl.where(positive, logits, 0.0), 1)
        new_max = tl.maximum(running_max, tl.max(logits, 1))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), 1)
        running_max = new_max
    # Rows past the end hold no sum; 1 keeps their (unstored) log finite.
    tl.store(LSE + rows, running_max + tl.log(tl.where(row_ok, running_sum, 1.0)), mask=row_ok)
    tl.store(POSITIVE + rows, positive_sum, mask=row_ok)


@jit
def _weight_tile(Q, C, LSE, grad, rows, columns, dims, dim_ok, num_anchors, num_columns, stride_q, stride_c, scale,
                 self_offset, batch, positives_per_anchor, IEEE: tl.constexpr):
    """A tile's anchors and columns (as float32) and its weights W = g (softmax - target), 0 where
    the logit is dropped."""
    row_ok = rows < num_anchors
    column_ok = columns < num_columns
    q = _load_tile(Q, rows, row_ok, dims, dim_ok, stride_q)
    c = _load_tile(C, columns, column_ok, dims, dim_ok, stride_c)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    logits, positive, valid = _logits_tile(q, c, rows, columns, row_ok, column_ok, scale, self_offset, batch,
                                           num_anchors, IEEE)
    weights = grad * (tl.exp(logits - lse[:, None]) - tl.where(positive, 1.0 / positives_per_anchor, 0.0))
    return q.to(tl.float32), c.to(tl.float32), tl.where(valid, weights, 0.0)


@jit
def _anchor_grad_kernel(Q, C, LSE, GRAD, DQ, num_anchors, num_columns, dim, stride_q, stride_c, stride_dq, scale,
                        self_offset, batch, positives_per_anchor, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """dq_a = s * sum_c W_ac c_c for one block of anchors."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < dim
    grad = tl.load(GRAD)
    accumulated = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        columns = start + tl.arange(0, BLOCK_N)
        _, c, weights = _weight_tile(Q, C, LSE, grad, rows, columns, dims, dim_ok, num_anchors, num_columns,
                                     stride_q, stride_c, scale, self_offset, batch, positives_per_anchor, IEEE)
        accumulated += tl.dot(weights, c, input_precision="ieee")
    tl.store(DQ + rows[:, None] * stride_dq + dims[None, :], (accumulated * scale).to(DQ.dtype.element_ty),
             mask=(rows < num_anchors)[:, None] & dim_ok[None, :])


@jit
def _column_grad_kernel(Q, C, LSE, GRAD, DC, num_anchors, num_columns, dim, stride_q, stride_c, stride_dc, scale,
                        self_offset, batch, positives_per_anchor, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """dc_c = s * sum_a W_ac q_a for one block of columns."""
    columns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < dim
    grad = tl.load(GRAD)
    accumulated = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, num_anchors, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q, _, weights = _weight_tile(Q, C, LSE, grad, rows, columns, dims, dim_ok, num_anchors, num_columns,
                                     stride_q, stride_c, scale, self_offset, batch, positives_per_anchor, IEEE)
        accumulated += tl.dot(tl.trans(weights), q, input_precision="ieee")
    tl.store(DC + columns[:, None] * stride_dc + dims[None, :], (accumulated * scale).to(DC.dtype.element_ty),
             mask=(columns < num_columns)[:, None] & dim_ok[None, :])


def _ieee_products(rows: Tensor) -> bool:
    """float32 rows take IEEE float32 products (TF32 would miss the 1e-5 accuracy). bfloat16 rows
    take them under the interpreter too, whose bfloat16 tl.dot is wrong; bfloat16 products are exact
    in float32, so this computes what the GPU's bfloat16 dot with float32 accumulation does."""
    return rows.dtype == torch.float32 or (rows.dtype == torch.bfloat16 and rows.device.type == "cpu")


def _block_dim(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


class _FusedInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchors: Tensor, columns: Tensor, self_offset: int, num_views: int,
                temperature: float) -> Tensor:
        anchors, columns = anchors.contiguous(), columns.contiguous()
        num_anchors, dim = anchors.shape
        lse = torch.empty(num_anchors, dtype=torch.float32, device=anchors.device)
        positive = torch.empty_like(lse)
        ieee = _ieee_products(anchors)
        _forward_kernel[(triton.cdiv(num_anchors, _BLOCK_ROWS),)](
            anchors, columns, lse, positive, num_anchors, columns.shape[0], dim, anchors.stride(0), columns.stride(0),
            1.0 / temperature, self_offset, num_anchors // num_views, BLOCK_M=_BLOCK_ROWS, BLOCK_N=_BLOCK_COLUMNS,
            BLOCK_D=_block_dim(dim), IEEE=ieee)
        ctx.save_for_backward(anchors, columns, lse)
        ctx.settings = (self_offset, num_views, temperature)
        return (lse - positive / (num_views - 1)).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        anchors, columns, lse = ctx.saved_tensors
        self_offset, num_views, temperature = ctx.settings
        num_anchors, dim = anchors.shape
        # d loss / d CE_a, as a device tensor: reading it on the host would be a sync.
        grad = (grad_loss.float() / num_anchors).reshape(1).contiguous()
        d_anchors, d_columns = torch.empty_like(anchors), torch.empty_like(columns)
        common = dict(BLOCK_M=_BLOCK_ROWS, BLOCK_N=_BLOCK_COLUMNS, BLOCK_D=_block_dim(dim),
                      IEEE=_ieee_products(anchors))
        arguments = (anchors, columns, lse, grad)
        sizes = (num_anchors, columns.shape[0], dim, anchors.stride(0), columns.stride(0))
        settings = (1.0 / temperature, self_offset, num_anchors // num_views, float(num_views - 1))
        _anchor_grad_kernel[(triton.cdiv(num_anchors, _BLOCK_ROWS),)](
            *arguments, d_anchors, *sizes, d_anchors.stride(0), *settings, **common)
        _column_grad_kernel[(triton.cdiv(columns.shape[0], _BLOCK_COLUMNS),)](
            *arguments, d_columns, *sizes, d_columns.stride(0), *settings, **common)
        return d_anchors, d_columns, None, None, None


def fused_info_nce_from_rows(anchors: Tensor, rows: Tensor, extra: Tensor | None, self_offset: int,
                             num_views: int, temperature: float) -> Tensor:
    """InfoNCE of ``anchors`` (A = V*N rows, view-major) against ``rows`` (the anchors, or every
    process's anchors with this process's at ``self_offset``) and the optional ``extra`` negatives,
    in the fused kernels. Rows are used as given (normalise them first for cosine similarity).
    Returns the float32 mean loss."""
    if triton is None:
        raise ConfigError("the fused InfoNCE kernels need Triton: pip install triton (it comes with PyTorch's "
                          "CUDA wheels on Linux).")
    if anchors.dtype not in FUSED_DTYPES:
        raise ConfigError(f"the fused InfoNCE kernels take float32, bfloat16 or float16 rows, got {anchors.dtype}; "
                          "pass fused=False (the float64 path is the reference).")
    if not available(anchors.device):
        raise ConfigError(f"the fused InfoNCE kernels run on CUDA tensors (or on the CPU under "
                          f"TRITON_INTERPRET=1, for tests); got tensors on {anchors.device}. Pass fused=False.")
    columns = rows if extra is None else torch.cat([rows, extra.to(rows.dtype)])
    return _FusedInfoNCE.apply(anchors, columns, self_offset, num_views, temperature)
