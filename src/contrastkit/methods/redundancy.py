"""Barlow Twins (Zbontar et al., 2021) and VICReg (Bardes et al., 2022): two views through one
encoder and a wide projector ("expander"); the loss decorrelates the embedding's dimensions instead
of contrasting samples."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from contrastkit.losses.redundancy import BarlowTwinsLoss, VICRegLoss
from contrastkit.methods.base import Method, require_two_views
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead


class _Expander(Method):
    """Backbone plus a ``projector_layers``-deep BN-MLP projector, shared by Barlow Twins and VICReg."""

    # One pass per view, as both references do (facebookresearch/barlowtwins main.py,
    # facebookresearch/vicreg main_vicreg.py).
    views_share_batch_norm = False

    def __init__(self, backbone: nn.Module, *, hidden_dim: int, projection_dim: int, projector_layers: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MLPHead(backbone.feature_dim, hidden_dim, projection_dim, num_layers=projector_layers)

    def _embed(self, views: Sequence[Tensor], method: str) -> list[Tensor]:
        require_two_views(views, method)
        return self.encode_views(lambda x: self.projection_head(self.backbone(x)), views)


@register_method("barlow_twins")
class BarlowTwins(_Expander):
    """Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = BarlowTwins(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=64)
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"lambda_offdiag": 5e-3, "projector_layers": 3}
    sync_batchnorm = True
    # CIFAR-size: lightly's CIFAR-10 benchmark (docs/source/getting_started/benchmarks/
    # cifar10_benchmark.py): a 2-layer 512-2048-2048 projector; the paper's (ImageNet) is 3 layers
    # of 8192.
    recipes = {"small": dict(hidden_dim=2048, projection_dim=2048, lr_per_256=0.12, weight_decay=5e-4,
                             method_options=dict(projector_layers=2)),
               "large": dict(preset="byol_imagenet", hidden_dim=8192, projection_dim=8192, optimizer="lars",
                             lr_per_256=0.2, weight_decay=1.5e-6)}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 8192, projection_dim: int = 8192,
                 projector_layers: int = 3, lambda_offdiag: float = 5e-3) -> None:
        super().__init__(backbone, hidden_dim=hidden_dim, projection_dim=projection_dim,
                         projector_layers=projector_layers)
        self.criterion = BarlowTwinsLoss(lambda_offdiag=lambda_offdiag)

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        z_a, z_b = self._embed(views, "Barlow Twins")
        return {"loss": self.criterion(z_a, z_b, validate=validate)}


@register_method("vicreg")
class VICReg(_Expander):
    """VICReg: invariance (MSE) between the views, variance kept above 1 per dimension, covariance
    driven to zero.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = VICReg(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=64)
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0,
                       "projector_layers": 3}
    sync_batchnorm = True
    # LARS at both scales: with plain SGD the covariance term diverges within a few steps (see
    # contrastkit.losses.redundancy). CIFAR-size: lr 0.3 per 256 and weight decay 1e-4, as in
    # lightly's and solo-learn's VICReg benchmarks.
    recipes = {"small": dict(hidden_dim=2048, projection_dim=2048, optimizer="lars", lr_per_256=0.3,
                             weight_decay=1e-4),
               "large": dict(preset="byol_imagenet", hidden_dim=8192, projection_dim=8192, optimizer="lars",
                             lr_per_256=0.2, weight_decay=1e-6)}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 8192, projection_dim: int = 8192,
                 projector_layers: int = 3, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0) -> None:
        super().__init__(backbone, hidden_dim=hidden_dim, projection_dim=projection_dim,
                         projector_layers=projector_layers)
        self.criterion = VICRegLoss(invariance_weight=invariance_weight, variance_weight=variance_weight,
                                    covariance_weight=covariance_weight)

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        z_a, z_b = self._embed(views, "VICReg")
        return {"loss": self.criterion(z_a, z_b, validate=validate)}


