"""InfoNCE / NT-Xent: the contrastive loss of CPC, SimCLR and MoCo.

For views z^1..z^V of N samples, stack them into M = V*N rows. With s(a, b) the cosine (or dot)
similarity, every row i is an anchor whose positives P(i) are the other views of the same sample:

    L = 1/M  sum_i  -1/|P(i)|  sum_{p in P(i)}  log( exp(s(i,p)/t) / sum_{a != i} exp(s(i,a)/t) )

where the denominator runs over every other row and over the optional extra negatives (a memory
queue, as in MoCo). With V = 2 this is SimCLR's NT-Xent.

The plain path materialises the M x M logits; where that matrix gets too large,
contrastkit.losses.tiled computes the same loss by tiles (``tiled=None`` chooses by size).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit import _distributed
from contrastkit.losses import fused as fused_kernels
from contrastkit.losses import tiled as tiled_losses
from contrastkit.losses._contrastive import (_check_inputs, _check_options, _contrast_rows,
                                             _prepared_negatives)
from contrastkit.losses._precision import full_precision, loss_dtype

def info_nce(z_a: Tensor, z_b: Tensor, *more_views: Tensor, temperature: float = 0.5,
             similarity: str = "cosine", negatives: Tensor | None = None,
             validate: bool = True, tiled: bool | None = None,
             gather_across_processes: bool = False, fused: bool | None = None) -> Tensor:
    """InfoNCE / NT-Xent over two or more views of a batch (see the module docstring).

    Under torch.distributed, ``gather_across_processes=True`` contrasts this process's rows (its
    anchors) with every process's rows, gathered with gradients (``gather_with_grad``), and returns
    the mean over this process's anchors. With equal batches on every process, the mean of the
    per-process losses is the loss of one process holding the whole global batch, and the
    gradients that DDP averages across processes are exactly that single process's gradients (the
    gather's backward sums every process's gradient for each slice). So use the loss as returned:
    no scaling by the world size. Each process computes only its own A x M logits.

    Args:
        z_a, z_b, *more_views: floating-point embeddings (N, D) of the same N samples under
            different views. N >= 2 (in the global batch with ``gather_across_processes``), or
            N >= 1 with extra ``negatives``: an anchor needs a negative to contrast with.
        temperature: softmax temperature t > 0.
        similarity: "cosine" (rows L2-normalised first) or "dot".
        negatives: optional extra negatives (K, D), e.g. a memory queue; they join every
            anchor's denominator and are not differentiated through if they carry no grad. They
            are used as given, not gathered across processes.
        validate: check that the inputs (negatives included) are finite (one host sync per
            tensor); the trainer turns this off
            on its hot path and watches the loss instead.
        tiled: compute by tiles (:func:`~contrastkit.losses.tiled.tiled_info_nce`), never holding
            the A x (M + K) logits: True forces it, False forbids it, None (default) picks it when
            the logits on this process exceed ``tiled.AUTO_TILED_LOGITS`` (8192 x 8192).
        gather_across_processes: contrast with every process's views (see above); a no-op in a
            single process.
        fused: compute in the Triton kernels of :mod:`contrastkit.losses.fused`: exact, O(N)
            memory, rows kept in their float32, bfloat16 or float16 dtype (normalised in float32
            first). None (default): on CUDA with Triton, where they were measured faster than the
            plain loss or it would not fit in free memory (``fused.kernels_preferred``), the first
            call checked against the torch loss (``fused.checked_once``); elsewhere on CUDA the
            plain loss. True forces them (CUDA, or the CPU under ``TRITON_INTERPRET=1``); False
            keeps the torch paths, the reference.

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> info_nce(z_a, z_b, temperature=0.2).shape
        torch.Size([])
    """
    views = (z_a, z_b, *more_views)
    _check_inputs(views, temperature, similarity, negatives, validate, gather_across_processes, "info_nce")
    if tiled is True and fused is None:
        fused = False  # the tiled path was asked for
    num_anchors = len(views) * z_a.shape[0]
    world = _distributed.world_size() if gather_across_processes else 1
    num_logits = num_anchors * (num_anchors * world + (0 if negatives is None else negatives.shape[0]))
    if fused_kernels.use_fused(fused, views[0], num_logits):
        def in_kernels() -> Tensor:
            kernel_dtype = views[0].dtype
            anchors, rows, self_offset = _contrast_rows(views, similarity, gather_across_processes, dtype=kernel_dtype)
            extra = _prepared_negatives(negatives, loss_dtype(views[0]), similarity)
            extra = None if extra is None else extra.to(kernel_dtype)
            return fused_kernels.fused_info_nce_from_rows(anchors, rows, extra, self_offset, len(views), temperature)

        return fused_kernels.checked_once("info_nce", views[0], fused, in_kernels, lambda: info_nce(
            *views, temperature=temperature, similarity=similarity, negatives=negatives, validate=False, tiled=tiled,
            gather_across_processes=gather_across_processes, fused=False), inputs=(*views, negatives))
    if fused is None and tiled is None and fused_kernels.kernels_apply(views[0]):
        tiled = False  # the plain loss fits (else the kernels ran), and on a GPU it beats the tiled path
    anchors, rows, self_offset = _contrast_rows(views, similarity, gather_across_processes)
    extra = _prepared_negatives(negatives, anchors.dtype, similarity)
    num_columns = rows.shape[0] + (0 if extra is None else extra.shape[0])
    if tiled_losses._use_tiled(tiled, anchors.shape[0] * num_columns):
        return tiled_losses._info_nce_from_rows(anchors, rows, extra, self_offset, len(views), temperature,
                                               tiled_losses.DEFAULT_TILE_SIZE)
    num_views, batch = len(views), z_a.shape[0]
    with full_precision(anchors):
        logits = anchors @ rows.T / temperature
        # A row is never its own negative: -inf at its own column drops it from the log-sum-exp.
        logits.diagonal(self_offset).fill_(float("-inf"))
        if extra is not None:
            logits = torch.cat([logits, anchors @ extra.T / temperature], dim=1)
    log_norm = torch.logsumexp(logits, dim=1)
    # Positives of anchor i are rows self_offset + (i + j*N) % A for j = 1..V-1: gather their logits.
    anchor_index = torch.arange(num_views * batch, device=anchors.device)
    shifts = torch.arange(1, num_views, device=anchors.device) * batch
    positive_columns = self_offset + (anchor_index[:, None] + shifts[None, :]) % (num_views * batch)
    positive_logits = logits.gather(1, positive_columns)
    return (log_norm - positive_logits.mean(dim=1)).mean()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (also known as NT-Xent).

    Example:
        >>> loss_fn = InfoNCELoss(temperature=0.5)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, temperature: float = 0.5, similarity: str = "cosine", tiled: bool | None = None,
                 gather_across_processes: bool = False, fused: bool | None = None) -> None:
        super().__init__()
        _check_options(temperature, similarity)
        self.temperature = temperature
        self.similarity = similarity
        self.tiled = tiled
        self.gather_across_processes = gather_across_processes
        self.fused = fused

    def forward(self, z_a: Tensor, z_b: Tensor, *more_views: Tensor,
                negatives: Tensor | None = None, validate: bool = True) -> Tensor:
        return info_nce(z_a, z_b, *more_views, temperature=self.temperature, similarity=self.similarity,
                        negatives=negatives, validate=validate, tiled=self.tiled,
                        gather_across_processes=self.gather_across_processes, fused=self.fused)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, similarity={self.similarity!r}, tiled={self.tiled}, "
                f"gather_across_processes={self.gather_across_processes}, fused={self.fused}")


NTXentLoss = InfoNCELoss
