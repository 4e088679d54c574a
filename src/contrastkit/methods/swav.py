"""SwAV (Caron et al., 2020): predict one view's Sinkhorn cluster assignment (code) from another
view's prototype scores, over multi-crop views."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from contrastkit.augment import MultiView
from contrastkit.losses.swav import SwAVLoss
from contrastkit.methods.base import Method, Progress, with_local_crops
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead, Prototypes


@register_method("swav")
class SwAV(Method):
    """SwAV: projector, L2-normalised prototypes and the swapped-prediction loss.

    The prototypes are re-normalised before every step and stay frozen (no update) for the first
    ``freeze_prototypes_epochs``, as in the paper. With ``num_local_crops`` > 0 the dataset's preset
    becomes 2 global plus that many local crops; codes come from the two global crops.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = SwAV(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=32,
        ...              num_prototypes=16)
        >>> model.on_step_start(Progress(step=0, total_steps=10, steps_per_epoch=5))
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"num_prototypes": 3000, "sinkhorn_epsilon": 0.05, "sinkhorn_iterations": 3,
                       "freeze_prototypes_epochs": 1.0, "num_local_crops": 6, "local_crop_size": None}
    sync_batchnorm = True
    recipes = {"small": dict(temperature=0.1, hidden_dim=2048, projection_dim=128, lr_per_256=0.12,
                             weight_decay=5e-4, method_options=dict(num_prototypes=512, num_local_crops=0)),
               "large": dict(temperature=0.1, hidden_dim=2048, projection_dim=128, optimizer="lars", lr_per_256=0.3,
                             weight_decay=1e-6)}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 2048, projection_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, sinkhorn_epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, freeze_prototypes_epochs: float = 1.0, num_local_crops: int = 0,
                 local_crop_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MLPHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.prototypes = Prototypes(projection_dim, num_prototypes)
        self.criterion = SwAVLoss(temperature=temperature, epsilon=sinkhorn_epsilon,
                                  sinkhorn_iterations=sinkhorn_iterations, num_assignment_views=2)
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.num_local_crops = num_local_crops
        self.local_crop_size = local_crop_size

    def configure_views(self, views: MultiView) -> MultiView:
        return with_local_crops(super().configure_views(views), self.num_local_crops, self.local_crop_size)

    def on_step_start(self, progress: Progress) -> None:
        self.prototypes.normalize_()

    def on_before_optimizer_step(self, progress: Progress) -> None:
        if progress.epoch < self.freeze_prototypes_epochs:
            for parameter in self.prototypes.parameters():
                parameter.grad = None  # the optimizer skips parameters without a gradient

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        # The backbone takes the crops of each resolution as one batch and the head all the crops'
        # features as one, as the reference's multi-crop forward does (facebookresearch/swav,
        # src/resnet50.py): the head's batch norm normalises over every crop.
        features = self.encode_views(self.backbone, views)
        scores = self.encode_views(lambda x: self.prototypes(self.projection_head(x)), features)
        return {"loss": self.criterion(scores, validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SwAV":
        return cls(backbone, hidden_dim=config.hidden_dim or backbone.feature_dim,
                   projection_dim=config.projection_dim, temperature=config.temperature,
                   **cls.options(config.method_options))
