"""SimCLR (Chen et al., 2020): two augmented views, a projection head and NT-Xent."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.losses.info_nce import InfoNCELoss
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import create_head


@register_method("simclr")
class SimCLR(nn.Module):
    """SimCLR as a module a user can drive from their own loop.

    All views go through the backbone as one batch (one forward pass; batch-norm statistics
    span every view, as in the paper's global BN).

    Example:
        >>> from contrastkit import create_backbone, create_head
        >>> backbone = create_backbone("small_cnn", in_channels=1)
        >>> model = SimCLR(backbone, create_head("mlp2", backbone.feature_dim, out_dim=64))
        >>> views = [torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)]
        >>> model.training_step(views)["loss"].backward()
    """

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, temperature: float = 0.5,
                 similarity: str = "cosine") -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = projection_head
        self.criterion = InfoNCELoss(temperature=temperature, similarity=similarity)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features (the representation used downstream)."""
        return self.backbone(images)

    def training_step(self, views: Sequence[Tensor], validate: bool = True) -> dict[str, Tensor]:
        """Loss of one batch given its augmented views (each (B, C, H, W))."""
        batch = views[0].shape[0]
        projections = self.projection_head(self.backbone(torch.cat(list(views))))
        return {"loss": self.criterion(*projections.split(batch), validate=validate)}


    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SimCLR":
        """Build from a config with ``head``, ``hidden_dim``, ``projection_dim``, ``temperature``
        and ``similarity`` attributes (e.g. :class:`contrastkit.config.Config`)."""
        head = create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim)
        return cls(backbone, head, temperature=config.temperature, similarity=config.similarity)
