"""DINO (Caron et al., 2021): self-distillation; a student matches the centred, sharpened output of
a momentum teacher across multi-crop views, with no labels and no negatives."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.augment import MultiView
from contrastkit.losses.dino import DINOLoss
from contrastkit.methods.base import MomentumMethod, Progress, with_local_crops
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import DINOHead
from contrastkit.models.momentum import momentum_copy


@register_method("dino")
class DINO(MomentumMethod):
    """DINO: student and teacher share the architecture (backbone + DINO head); the teacher sees
    the two global crops, the student every crop.

    The teacher temperature rises linearly from ``warmup_teacher_temperature`` to
    ``teacher_temperature`` over ``warmup_teacher_temperature_epochs``; the head's last layer is
    frozen for the first ``freeze_last_layer_epochs``; the teacher's momentum follows a cosine
    schedule to ``ema_momentum_final``. ``head_batch_norm`` puts batch norm in the head's MLP, as
    DINO does for ResNets (without it a small CNN on digits collapsed to uniform outputs, loss
    log K); turn it off for ViTs.

    Example:
        >>> from contrastkit import create_backbone
        >>> model = DINO(create_backbone("small_cnn", in_channels=1), hidden_dim=64, out_dim=128,
        ...              bottleneck_dim=32)
        >>> model.on_step_start(Progress(step=0, total_steps=10, steps_per_epoch=5))
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"out_dim": 65536, "bottleneck_dim": 256, "student_temperature": 0.1,
                       "teacher_temperature": 0.04, "warmup_teacher_temperature": 0.04,
                       "warmup_teacher_temperature_epochs": 0.0, "center_momentum": 0.9,
                       "freeze_last_layer_epochs": 1.0, "ema_momentum": 0.996, "ema_momentum_final": 1.0,
                       "num_local_crops": 8, "local_crop_size": None, "head_batch_norm": True}
    recipes = {"small": dict(hidden_dim=2048, lr_per_256=0.12, weight_decay=5e-4,
                             method_options=dict(out_dim=2048, num_local_crops=0, ema_momentum=0.99)),
               "large": dict(hidden_dim=2048, optimizer="adamw", lr_per_256=5e-4, weight_decay=0.04,
                             method_options=dict(warmup_teacher_temperature_epochs=30.0, teacher_temperature=0.07))}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 2048, out_dim: int = 65536,
                 bottleneck_dim: int = 256, student_temperature: float = 0.1, teacher_temperature: float = 0.04,
                 warmup_teacher_temperature: float = 0.04, warmup_teacher_temperature_epochs: float = 0.0,
                 center_momentum: float = 0.9, freeze_last_layer_epochs: float = 1.0, ema_momentum: float = 0.996,
                 ema_momentum_final: float = 1.0, num_local_crops: int = 0, local_crop_size: int | None = None,
                 head_batch_norm: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DINOHead(backbone.feature_dim, out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                             batch_norm=head_batch_norm)
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.criterion = DINOLoss(out_dim, student_temperature=student_temperature,
                                  teacher_temperature=teacher_temperature, center_momentum=center_momentum)
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.warmup_teacher_temperature_epochs = warmup_teacher_temperature_epochs
        self.current_teacher_temperature = warmup_teacher_temperature if warmup_teacher_temperature_epochs \
            else teacher_temperature
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.num_local_crops = num_local_crops
        self.local_crop_size = local_crop_size
        self._set_momentum(ema_momentum, ema_momentum_final)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def configure_views(self, views: MultiView) -> MultiView:
        return with_local_crops(super().configure_views(views), self.num_local_crops, self.local_crop_size)

    def on_step_start(self, progress: Progress) -> None:
        warmup = self.warmup_teacher_temperature_epochs
        share = min(progress.epoch / warmup, 1.0) if warmup > 0 else 1.0
        self.current_teacher_temperature = (self.warmup_teacher_temperature
                                            + share * (self.teacher_temperature - self.warmup_teacher_temperature))

    def on_before_optimizer_step(self, progress: Progress) -> None:
        if progress.epoch < self.freeze_last_layer_epochs:
            for parameter in self.head.last_layer.parameters():
                parameter.grad = None  # the optimizer skips parameters without a gradient

    def embedding_module(self) -> nn.Module:
        """The head's MLP, whose bottleneck output is the embedding (the last layer's outputs are
        prototype scores, out_dim of them)."""
        return self.head.mlp

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        # The backbone takes the crops of each resolution as one batch and the head all the crops'
        # features as one, as the reference's MultiCropWrapper does (facebookresearch/dino, utils.py).
        student = self.encode_views(self.head, self.encode_views(self.backbone, views))
        with torch.no_grad():
            teacher = self.encode_views(self.teacher_head, self.encode_views(self.teacher_backbone, views[:2]))
        loss = self.criterion(student, teacher, teacher_temperature=self.current_teacher_temperature,
                              validate=validate)
        return {"loss": loss}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "DINO":
        return cls(backbone, hidden_dim=config.hidden_dim or backbone.feature_dim,
                   **cls.options(config.method_options))
