"""SimCLR (Chen et al., 2020): views through one encoder and projection head, NT-Xent between them."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from contrastkit.losses.info_nce import InfoNCELoss
from contrastkit.methods.base import Method
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import create_head


@register_method("simclr")
class SimCLR(Method):
    """SimCLR as a module a user can drive from their own loop.

    Views of one size go through the backbone as one batch (batch-norm statistics span every view,
    as in the paper's global BN).

    Example:
        >>> from contrastkit import create_backbone, create_head
        >>> backbone = create_backbone("small_cnn", in_channels=1)
        >>> model = SimCLR(backbone, create_head("mlp2", backbone.feature_dim, out_dim=64))
        >>> views = [torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)]
        >>> model.training_step(views)["loss"].backward()
    """

    modalities = ("image", "text", "series")
    sync_batchnorm = True
    recipes = {"small": dict(temperature=0.5, head="mlp2", projection_dim=128, lr_per_256=0.12, weight_decay=5e-4),
               "large": dict(temperature=0.1, head="mlp2", hidden_dim=2048, projection_dim=128, optimizer="lars",
                             lr_per_256=0.3, weight_decay=1e-6),
               # Augmented sentences (word deletion and swaps) in SimCLR's manner.
               "text": dict(temperature=0.05, head="identity", preset="eda", optimizer="adamw", lr=3e-5,
                            weight_decay=0.01),
               # Series: two views of crop, time warp, scaling and jitter, under TS2Vec's optimizer.
               "series": dict(temperature=0.2, head="mlp2", projection_dim=128, preset="simclr", optimizer="adamw",
                              lr=1e-3, weight_decay=0.01, batch_size=16, epochs=50, warmup_epochs=0.0)}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, temperature: float = 0.5,
                 similarity: str = "cosine") -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = projection_head
        self.criterion = InfoNCELoss(temperature=temperature, similarity=similarity, gather_across_processes=True)

    def project(self, batch: Any) -> Tensor:
        return self.projection_head(self.backbone(batch))

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        """NT-Xent over all views (image tensors or token dicts); labels are not used."""
        return {"loss": self.criterion(*self.encode_views(self.project, views), validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SimCLR":
        cls.options(config.method_options)
        head = create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim)
        return cls(backbone, head, temperature=config.temperature, similarity=config.similarity)
