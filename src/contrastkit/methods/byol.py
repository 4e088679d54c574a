"""BYOL (Grill et al., 2020): an online network with a predictor regresses the projection of a
momentum target network; no negatives."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from contrastkit.losses.cosine import negative_cosine_similarity
from contrastkit.methods.base import MomentumMethod, require_two_views
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead
from contrastkit.models.momentum import momentum_copy


def _symmetric_negative_cosine(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor, validate: bool) -> Tensor:
    """Each view's prediction against the other view's (detached) target, averaged."""
    return (negative_cosine_similarity(p_a, z_b, validate=validate)
            + negative_cosine_similarity(p_b, z_a, validate=validate)) / 2


@register_method("byol")
class BYOL(MomentumMethod):
    """BYOL: projector and predictor are Linear-BN-ReLU-Linear MLPs; the target's momentum rises
    from ``ema_momentum`` to ``ema_momentum_final`` on a cosine schedule.

    The loss is the symmetrised negative cosine similarity (BYOL's 2 - 2cos, less the constant
    and halved), so it runs from -1 (aligned) to 1.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = BYOL(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=32)
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"predictor_hidden_dim": 4096, "ema_momentum": 0.99, "ema_momentum_final": 1.0}
    sync_batchnorm = True
    # One pass per view, online and target network (deepmind-research byol/byol_experiment.py).
    views_share_batch_norm = False
    recipes = {"small": dict(hidden_dim=4096, projection_dim=256, lr_per_256=0.12, weight_decay=5e-4),
               "large": dict(preset="byol_imagenet", hidden_dim=4096, projection_dim=256, optimizer="lars",
                             lr_per_256=0.2, weight_decay=1.5e-6, method_options=dict(ema_momentum=0.996))}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 4096, projection_dim: int = 256,
                 predictor_hidden_dim: int = 4096, ema_momentum: float = 0.99,
                 ema_momentum_final: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MLPHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.prediction_head = MLPHead(projection_dim, predictor_hidden_dim, projection_dim)
        self.target_backbone = momentum_copy(backbone)
        self.target_head = momentum_copy(self.projection_head)
        self._set_momentum(ema_momentum, ema_momentum_final)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_backbone, self.backbone), (self.target_head, self.projection_head)]

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, "BYOL")
        p_a, p_b = self.encode_views(lambda x: self.prediction_head(self.projection_head(self.backbone(x))), views)
        with torch.no_grad():
            z_a, z_b = self.encode_views(lambda x: self.target_head(self.target_backbone(x)), views)
        return {"loss": _symmetric_negative_cosine(p_a, p_b, z_a, z_b, validate)}

