"""Negative cosine similarity with a stop-gradient on the target (SimSiam's D, BYOL's regression loss).

For predictions p_i and targets z_i of N samples,

    D(p, z) = -1/N  sum_i  <p_i, sg(z_i)> / (||p_i|| ||z_i||)

where sg is the stop-gradient: no gradient ever reaches the target. SimSiam symmetrises it as
D(p_1, z_2)/2 + D(p_2, z_1)/2. BYOL's loss ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z) is
2 + 2 D(p, z): the same gradient up to the factor 2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_paired_embeddings
from contrastkit.losses._precision import loss_dtype


def negative_cosine_similarity(prediction: Tensor, target: Tensor, *, validate: bool = True) -> Tensor:
    """Minus the mean cosine similarity of ``prediction`` to the detached ``target``.

    Args:
        prediction: floating-point predictor outputs (N, D); the gradient flows here.
        target: targets (N, D), e.g. the other view's projection or a momentum encoder's output;
            detached inside, so it never receives a gradient.
        validate: check that the inputs are finite (one host sync).

    Returns:
        The scalar loss in [-1, 1], in float32 (or float64 for float64 inputs).

    Example:
        >>> p, z = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16)
        >>> negative_cosine_similarity(p, z).shape
        torch.Size([])
    """
    check_paired_embeddings("negative_cosine_similarity", prediction, target, ("prediction", "target"),
                            validate=validate)
    dtype = loss_dtype(prediction)
    p = F.normalize(prediction.to(dtype), dim=1)
    z = F.normalize(target.detach().to(dtype), dim=1)
    return -(p * z).sum(dim=1).mean()


class NegativeCosineSimilarity(nn.Module):
    """Module form of :func:`negative_cosine_similarity`.

    Example:
        >>> loss_fn = NegativeCosineSimilarity()
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
    """

    def forward(self, prediction: Tensor, target: Tensor, validate: bool = True) -> Tensor:
        return negative_cosine_similarity(prediction, target, validate=validate)
