"""DINO's self-distillation loss with a centred, sharpened teacher (Caron et al., 2021).

The student sees V crops, the teacher the first T of them (the global crops), each giving logits
(B, K). With c the centre (a running mean of the teacher logits), the teacher's targets are

    P_t^i = softmax((t^i - c) / tau_t)                   (no gradient)

and every student crop j predicts every teacher crop i other than its own:

    L = 1/(T (V-1))  sum_{i < T}  sum_{j != i}  -1/B  sum_b  sum_k  P_t^i[b,k] log softmax(s^j[b]/tau_s)_k

Centring (subtracting c) keeps one dimension from dominating; the low teacher temperature
sharpens the targets; together they avoid collapse. After each training step the centre moves
towards the batch mean of the teacher logits: c <- m c + (1 - m) mean_b t_b.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from contrastkit._checks import (check_batch_size, check_count, check_embeddings, check_finite, check_floating,
                                 check_positive)
from contrastkit._distributed import all_reduce_sum, world_size
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import loss_dtype


def _check_temperature(name: str, value: float, paper: str) -> None:
    check_positive(name, value, f"DINO uses {paper}.")


def _check_logits(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor]) -> None:
    if len(teacher_logits) < 1 or len(student_logits) < 2 or len(teacher_logits) > len(student_logits):
        raise InputError(f"dino_loss needs 1 <= teacher views <= student views and at least 2 student "
                         f"views, got {len(teacher_logits)} teacher and {len(student_logits)} student views; "
                         "the teacher sees the global crops, which are the student's first views.")
    named = [(f"student_logits[{i}]", t) for i, t in enumerate(student_logits)]
    named += [(f"teacher_logits[{i}]", t) for i, t in enumerate(teacher_logits)]
    for name, logits in named:
        check_embeddings(name, logits, "(batch, out_dim)")
        if logits.shape != student_logits[0].shape:
            raise InputError(f"all student and teacher logits must have the same shape (batch, out_dim); "
                             f"student_logits[0] is {tuple(student_logits[0].shape)} but {name} is "
                             f"{tuple(logits.shape)}.")
    # Each sample's cross-entropy stands alone, so one sample is enough; none gives a NaN mean.
    check_batch_size("dino_loss", student_logits[0].shape[0])
    if student_logits[0].shape[1] < 2:
        raise InputError(f"dino_loss needs at least 2 output dimensions, got logits of shape "
                         f"{tuple(student_logits[0].shape)}: a softmax over one dimension is always 1, so the "
                         "loss is 0; give the DINO head more outputs (DINO uses 65536).")


def dino_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], center: Tensor, *,
              student_temperature: float = 0.1, teacher_temperature: float = 0.04,
              validate: bool = True) -> Tensor:
    """DINO cross-entropy between centred, sharpened teacher targets and student predictions.

    Args:
        student_logits: floating-point student head outputs (B, K), K >= 2, for every crop, global
            crops first.
        teacher_logits: teacher head outputs (B, K) for the global crops; never differentiated.
        center: the running centre (1, K) or (K,) subtracted from the teacher logits.
        student_temperature: tau_s > 0 (paper: 0.1).
        teacher_temperature: tau_t > 0 (paper: 0.04, warmed up to 0.07 in longer runs).
        validate: check that the inputs are finite (one host sync per tensor).

    Returns:
        The scalar loss, in float32 (or float64 for float64 student logits).

    Example:
        >>> student = [torch.randn(8, 32) for _ in range(4)]
        >>> teacher = [torch.randn(8, 32) for _ in range(2)]
        >>> dino_loss(student, teacher, torch.zeros(1, 32)).shape
        torch.Size([])
    """
    _check_temperature("student_temperature", student_temperature, "0.1")
    _check_temperature("teacher_temperature", teacher_temperature, "0.04 to 0.07")
    _check_logits(student_logits, teacher_logits)
    out_dim = student_logits[0].shape[1]
    if not isinstance(center, Tensor) or center.shape not in ((out_dim,), (1, out_dim)):
        shape = tuple(center.shape) if isinstance(center, Tensor) else type(center).__name__
        raise InputError(f"center must have shape (1, {out_dim}) to match the logits, got {shape}.")
    check_floating("center", center)
    if validate:
        for index, logits in enumerate(student_logits):
            check_finite(f"student_logits[{index}]", logits)
        for index, logits in enumerate(teacher_logits):
            check_finite(f"teacher_logits[{index}]", logits)
        check_finite("center", center)
    dtype = loss_dtype(student_logits[0])
    with torch.no_grad():
        targets = [torch.softmax((t.to(dtype) - center.to(dtype)) / teacher_temperature, dim=1)
                   for t in teacher_logits]
    log_predictions = [torch.log_softmax(s.to(dtype) / student_temperature, dim=1) for s in student_logits]
    cross_entropies = [-(targets[i] * log_predictions[j]).sum(dim=1).mean()
                       for i in range(len(targets)) for j in range(len(log_predictions)) if j != i]
    return sum(cross_entropies) / len(cross_entropies)


class DINOLoss(nn.Module):
    """:func:`dino_loss` with the centre as a buffer, updated by every forward in training mode.

    The teacher temperature schedule (DINO warms tau_t up from 0.04 to 0.07) belongs to the
    caller: pass the current value as ``teacher_temperature`` to :meth:`forward`.

    Args:
        out_dim: K >= 2, the number of output dimensions of the DINO head.
        student_temperature: tau_s > 0 (paper: 0.1).
        teacher_temperature: tau_t > 0 used when forward gets none (paper: 0.04 to 0.07).
        center_momentum: m in [0, 1) of the centre's moving average (paper: 0.9).

    Example:
        >>> loss_fn = DINOLoss(out_dim=32)
        >>> student, teacher = [torch.randn(8, 32) for _ in range(4)], [torch.randn(8, 32) for _ in range(2)]
        >>> loss = loss_fn(student, teacher, teacher_temperature=0.05)
    """

    def __init__(self, out_dim: int, student_temperature: float = 0.1, teacher_temperature: float = 0.04,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        # A softmax over one output is always 1: the loss would be 0.
        check_count("out_dim", out_dim, 2, "it is the DINO head's output size (DINO uses 65536).")
        _check_temperature("student_temperature", student_temperature, "0.1")
        _check_temperature("teacher_temperature", teacher_temperature, "0.04 to 0.07")
        if not 0 <= center_momentum < 1:
            raise ConfigError(f"center_momentum must be in [0, 1), got {center_momentum}; DINO uses 0.9.")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                teacher_temperature: float | None = None, validate: bool = True) -> Tensor:
        """The loss with the current centre; then, in training mode, the centre update."""
        if teacher_temperature is None:
            teacher_temperature = self.teacher_temperature
        loss = dino_loss(student_logits, teacher_logits, self.center, student_temperature=self.student_temperature,
                         teacher_temperature=teacher_temperature, validate=validate)
        if self.training:
            self.update_center(teacher_logits)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: Sequence[Tensor]) -> None:
        """c <- m c + (1 - m) * mean of the teacher logits over every crop and process."""
        teacher = torch.cat(list(teacher_logits))
        dtype = loss_dtype(self.center)
        total = all_reduce_sum(teacher.to(dtype).sum(dim=0, keepdim=True))
        batch_mean = total / (teacher.shape[0] * world_size())
        momentum = self.center_momentum
        self.center.mul_(momentum).add_(batch_mean.to(self.center.dtype), alpha=1 - momentum)

    def extra_repr(self) -> str:
        return (f"out_dim={self.center.shape[1]}, student_temperature={self.student_temperature}, "
                f"teacher_temperature={self.teacher_temperature}, center_momentum={self.center_momentum}")
