"""SimSiam (Chen & He, 2021): BYOL without the momentum target; the stop-gradient alone prevents
collapse."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from contrastkit.methods.base import Method, require_two_views
from contrastkit.methods.byol import _symmetric_negative_cosine
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead


@register_method("simsiam")
class SimSiam(Method):
    """SimSiam: the projector ends in batch norm (its output is not scaled by an affine layer) and
    the predictor is a bottleneck MLP; the stop-gradient sits inside the loss.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = SimSiam(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=64,
        ...                 predictor_hidden_dim=16)
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"predictor_hidden_dim": 512, "projector_layers": 3}
    sync_batchnorm = True
    # One pass per view (facebookresearch/simsiam, simsiam/builder.py).
    views_share_batch_norm = False
    recipes = {"small": dict(hidden_dim=2048, projection_dim=2048, lr_per_256=0.05, weight_decay=5e-4,
                             method_options=dict(projector_layers=2)),
               "large": dict(hidden_dim=2048, projection_dim=2048, lr_per_256=0.05, weight_decay=1e-4)}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 2048, projection_dim: int = 2048,
                 predictor_hidden_dim: int = 512, projector_layers: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MLPHead(backbone.feature_dim, hidden_dim, projection_dim,
                                       num_layers=projector_layers, last_batch_norm=True)
        self.prediction_head = MLPHead(projection_dim, predictor_hidden_dim, projection_dim)

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, "SimSiam")
        z_a, z_b = self.encode_views(lambda x: self.projection_head(self.backbone(x)), views)
        p_a, p_b = self.encode_views(self.prediction_head, [z_a, z_b])
        return {"loss": _symmetric_negative_cosine(p_a, p_b, z_a, z_b, validate)}

