"""Supervised contrastive learning (Khosla et al., 2020): SimCLR whose positives are every view of
every sample of the same class."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.losses.supcon import SupConLoss
from contrastkit.methods.base import Method
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import create_head


@register_method("supcon")
class SupCon(Method):
    """SupCon: needs the batch's class labels.

    Example:
        >>> from contrastkit import create_backbone, create_head
        >>> backbone = create_backbone("small_cnn", in_channels=1)
        >>> model = SupCon(backbone, create_head("mlp2", backbone.feature_dim, out_dim=64))
        >>> views = [torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)]
        >>> model.training_step(views, labels=torch.arange(8) % 3)["loss"].backward()
    """

    requires_labels = True
    recipes = {"small": dict(temperature=0.1, head="mlp2", projection_dim=128, lr_per_256=0.12, weight_decay=5e-4),
               "large": dict(temperature=0.1, head="mlp2", hidden_dim=2048, projection_dim=128, optimizer="lars",
                             lr_per_256=0.3, weight_decay=1e-6)}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, temperature: float = 0.1,
                 similarity: str = "cosine") -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = projection_head
        self.criterion = SupConLoss(temperature=temperature, similarity=similarity, gather_across_processes=True)

    def project(self, images: Tensor) -> Tensor:
        return self.projection_head(self.backbone(images))

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        if labels is None:
            raise ConfigError("SupCon is supervised: training_step needs the batch's labels. For unlabeled "
                              "data use a self-supervised method such as simclr.")
        return {"loss": self.criterion(*self.encode_views(self.project, views), labels=labels, validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SupCon":
        cls.options(config.method_options)
        head = create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim)
        return cls(backbone, head, temperature=config.temperature, similarity=config.similarity)
