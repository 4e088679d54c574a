"""ATC, CURL and ST-DIM as methods: pretraining an observation encoder on collected frames alone (no
rewards), driven by the trainer.

The views are two observations of each sampled step (:mod:`contrastkit.modalities.frames`): for ATC
the frame stacks at t and t + k of one episode, for ST-DIM at t and t + 1, for CURL the stack at t
twice; each randomly shifted (``frames.shift=0``: as they are, as ST-DIM trains). ATC and CURL are
the auxiliary losses of :mod:`contrastkit.methods.rl_auxiliary`, whose momentum target follows the
encoder after every optimizer step (``on_step_end``); ST-DIM is :class:`contrastkit.losses.STDIMLoss`
on the encoder's global feature and local feature map.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.methods.base import Method, Progress, require_two_views
from contrastkit.methods.registry import register_method
from contrastkit.losses.stdim import STDIMLoss
from contrastkit.methods.rl_auxiliary import ATCAuxiliaryLoss, CURLAuxiliaryLoss

__all__ = ["ATC", "CURL", "STDIM"]


class _FrameContrast(Method):
    """The shared part: an auxiliary loss owning the backbone and its momentum copy."""

    modalities = ("frames",)
    # The encoder has no batch norm; the two views are different frames and go through one by one.
    views_share_batch_norm = False
    auxiliary: nn.Module
    # The gap between the two frames of a view pair, read by the frames modality.
    frame_gap: int | None = None

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, type(self).__name__)
        return {"loss": self.auxiliary(views[0], views[1], validate=validate)}

    def embedding_module(self) -> nn.Module:
        return self.backbone

    def on_step_end(self, progress: Progress) -> None:
        self.auxiliary.update_target()

    def configure_views(self, views: Any) -> Any:
        return views

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "_FrameContrast":
        return cls(backbone, **cls.options(config.method_options))


@register_method("atc")
class ATC(_FrameContrast):
    """Augmented Temporal Contrast (Stooke et al., 2021): the stack at t against the momentum
    target's code of the stack ``gap`` steps later (:class:`ATCAuxiliaryLoss`).

    Example:
        >>> from contrastkit.models.atari import AtariEncoder
        >>> model = ATC(AtariEncoder(in_channels=3, frame_size=(84, 84)), latent_dim=16, hidden_dim=32)
        >>> views = [torch.rand(4, 3, 84, 84), torch.rand(4, 3, 84, 84)]
        >>> model.training_step(views)["loss"].backward()
    """

    default_options = {"latent_dim": 128, "hidden_dim": 512, "momentum": 0.99, "gap": 3}

    def __init__(self, backbone: nn.Module, latent_dim: int = 128, hidden_dim: int = 512, momentum: float = 0.99,
                 gap: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.frame_gap = gap
        self.auxiliary = ATCAuxiliaryLoss(backbone, backbone.feature_dim, latent_dim, hidden_dim, momentum)


@register_method("curl")
class CURL(_FrameContrast):
    """CURL (Srinivas et al., 2020): two augmentations of the same stack, bilinear InfoNCE against
    the momentum key encoder (:class:`CURLAuxiliaryLoss`).

    Example:
        >>> from contrastkit.models.atari import AtariEncoder
        >>> model = CURL(AtariEncoder(in_channels=3, frame_size=(84, 84)))
        >>> model.training_step([torch.rand(4, 3, 84, 84), torch.rand(4, 3, 84, 84)])["loss"].backward()
    """

    default_options = {"momentum": 0.95}

    def __init__(self, backbone: nn.Module, momentum: float = 0.95) -> None:
        super().__init__()
        self.backbone = backbone
        self.frame_gap = 0
        self.auxiliary = CURLAuxiliaryLoss(backbone, backbone.feature_dim, momentum)


@register_method("stdim")
class STDIM(_FrameContrast):
    """Spatio-Temporal DeepInfoMax (Anand et al., 2019): the global feature and the local feature map
    of the frame at t against the local map of the frame at t + 1 (:class:`STDIMLoss`); the encoder
    must give its local map (``forward_maps``, as :class:`contrastkit.models.atari.AtariEncoder`).

    Example:
        >>> from contrastkit.models.atari import AtariEncoder
        >>> model = STDIM(AtariEncoder(in_channels=1))
        >>> model.training_step([torch.rand(4, 1, 210, 160), torch.rand(4, 1, 210, 160)])["loss"].backward()
    """

    default_options = {}

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        if not hasattr(backbone, "forward_maps"):
            raise ConfigError(f"ST-DIM contrasts local feature maps, which {type(backbone).__name__} does not give "
                              "(forward_maps); use the atari_cnn encoder.")
        self.backbone = backbone
        self.frame_gap = 1
        self.criterion = STDIMLoss(backbone.feature_dim, backbone.local_dim)

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, "STDIM")
        global_anchor, local_anchor = self.backbone.forward_maps(views[0])
        _, local_positive = self.backbone.forward_maps(views[1])
        return {"loss": self.criterion(global_anchor, local_anchor, local_positive, validate=validate)}

    def on_step_end(self, progress: Progress) -> None:
        """Nothing to update: ST-DIM has no momentum target."""
