"""InfoNCE / NT-Xent: the contrastive loss of CPC, SimCLR and MoCo.

For views z^1..z^V of N samples, stack them into M = V*N rows. With s(a, b) the cosine (or dot)
similarity, every row i is an anchor whose positives P(i) are the other views of the same sample:

    L = 1/M  sum_i  -1/|P(i)|  sum_{p in P(i)}  log( exp(s(i,p)/t) / sum_{a != i} exp(s(i,a)/t) )

where the denominator runs over every other row and over the optional extra negatives (a memory
queue, as in MoCo). With V = 2 this is SimCLR's NT-Xent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_finite, check_ndim
from contrastkit.losses._precision import full_precision, loss_dtype
from contrastkit.errors import ConfigError, InputError

SIMILARITIES = ("cosine", "dot")


def _check_options(temperature: float, similarity: str) -> None:
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; contrastive losses use 0.05 to 0.5.")
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")


def _check_views(views: tuple[Tensor, ...], negatives: Tensor | None, loss: str = "info_nce") -> None:
    for index, view in enumerate(views):
        check_ndim(f"view {index}", view, 2, "(batch, dim)")
        if view.shape != views[0].shape:
            raise InputError(f"all views must have the same shape (batch, dim); view 0 is "
                             f"{tuple(views[0].shape)} but view {index} is {tuple(view.shape)}.")
    if views[0].shape[0] < 1:
        raise InputError(f"{loss} got an empty batch.")
    if negatives is not None:
        check_ndim("negatives", negatives, 2, "(num_negatives, dim)")
        if negatives.shape[1] != views[0].shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the views have dim "
                             f"{views[0].shape[1]}; both must come from the same projection head.")


def info_nce(z_a: Tensor, z_b: Tensor, *more_views: Tensor, temperature: float = 0.5,
             similarity: str = "cosine", negatives: Tensor | None = None,
             validate: bool = True) -> Tensor:
    """InfoNCE / NT-Xent over two or more views of a batch (see the module docstring).

    Args:
        z_a, z_b, *more_views: embeddings (N, D) of the same N samples under different views.
        temperature: softmax temperature t > 0.
        similarity: "cosine" (rows L2-normalised first) or "dot".
        negatives: optional extra negatives (K, D), e.g. a memory queue; they join every
            anchor's denominator and are not differentiated through if they carry no grad.
        validate: check that the inputs are finite (one host sync); the trainer turns this off
            on its hot path and watches the loss instead.

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).

    Example:
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> info_nce(z_a, z_b, temperature=0.2).shape
        torch.Size([])
    """
    views = (z_a, z_b, *more_views)
    _check_options(temperature, similarity)
    _check_views(views, negatives)
    if validate:
        for index, view in enumerate(views):
            check_finite(f"view {index}", view)
    dtype = loss_dtype(z_a)
    z = torch.cat(views).to(dtype)
    if similarity == "cosine":
        z = F.normalize(z, dim=1)
    num_views, batch = len(views), z_a.shape[0]
    with full_precision(z):
        logits = z @ z.T / temperature
        # A row is never its own negative: -inf on the diagonal drops it from the log-sum-exp.
        logits.fill_diagonal_(float("-inf"))
        if negatives is not None:
            k = negatives.to(dtype)
            if similarity == "cosine":
                k = F.normalize(k, dim=1)
            logits = torch.cat([logits, z @ k.T / temperature], dim=1)
    log_norm = torch.logsumexp(logits, dim=1)
    # Positives of row i are rows i + j*N (mod M) for j = 1..V-1: gather their logits.
    rows = torch.arange(num_views * batch, device=z.device)
    shifts = torch.arange(1, num_views, device=z.device) * batch
    positive_columns = (rows[:, None] + shifts[None, :]) % (num_views * batch)
    positive_logits = logits.gather(1, positive_columns)
    return (log_norm - positive_logits.mean(dim=1)).mean()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (also known as NT-Xent).

    Example:
        >>> loss_fn = InfoNCELoss(temperature=0.5)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def __init__(self, temperature: float = 0.5, similarity: str = "cosine") -> None:
        super().__init__()
        _check_options(temperature, similarity)
        self.temperature = temperature
        self.similarity = similarity

    def forward(self, z_a: Tensor, z_b: Tensor, *more_views: Tensor,
                negatives: Tensor | None = None, validate: bool = True) -> Tensor:
        return info_nce(z_a, z_b, *more_views, temperature=self.temperature,
                        similarity=self.similarity, negatives=negatives, validate=validate)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"


NTXentLoss = InfoNCELoss
