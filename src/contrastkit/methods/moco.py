"""MoCo v2 (Chen et al., 2020) and MoCo v3 (Chen et al., 2021): queries from the online encoder are
classified against keys from a momentum encoder; v2 draws its negatives from a queue of past keys,
v3 from the other keys of the batch and adds a predictor."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.losses.moco import MoCoLoss
from contrastkit.methods.base import MomentumMethod, Progress, forward_views, head_output_dim, require_two_views
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead, create_head
from contrastkit.models.memory import MemoryQueue
from contrastkit.models.momentum import momentum_copy


@register_method("moco_v2")
class MoCoV2(MomentumMethod):
    """MoCo v2: a projection head, a momentum key encoder and a FIFO queue of negatives.

    The loss is symmetrised over the two views (each view is once the query). The keys of the first
    view join the queue in :meth:`on_step_end`, after backward has used the queue as it was (a
    loop of your own calls it after the optimizer step, as for the momentum update).

    Example:
        >>> from contrastkit import create_backbone, create_head
        >>> from contrastkit.methods import Progress
        >>> backbone = create_backbone("small_cnn", in_channels=1)
        >>> model = MoCoV2(backbone, create_head("mlp2", backbone.feature_dim, out_dim=32), queue_size=64)
        >>> views = [torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)]
        >>> model.training_step(views)["loss"].backward()
        >>> model.on_step_end(Progress(step=0, total_steps=10, steps_per_epoch=5))  # momentum update, enqueue
    """

    default_options = {"queue_size": 4096, "ema_momentum": 0.99, "ema_momentum_final": 0.99}
    recipes = {"small": dict(temperature=0.1, head="mlp2", projection_dim=128, lr_per_256=0.12, weight_decay=5e-4),
               "large": dict(temperature=0.2, head="mlp2", hidden_dim=2048, projection_dim=128, lr_per_256=0.03,
                             weight_decay=1e-4, method_options=dict(queue_size=65536, ema_momentum=0.999,
                                                                    ema_momentum_final=0.999))}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, *, temperature: float = 0.2,
                 queue_size: int = 4096, ema_momentum: float = 0.99, ema_momentum_final: float = 0.99) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = projection_head
        self.key_backbone = momentum_copy(backbone)
        self.key_head = momentum_copy(projection_head)
        self.queue = MemoryQueue(queue_size, head_output_dim(projection_head))
        self.criterion = MoCoLoss(temperature=temperature, gather_across_processes=True)
        self._set_momentum(ema_momentum, ema_momentum_final)
        # Keys of the steps since the last on_step_end (one per training_step: several with
        # gradient accumulation), enqueued there.
        self._pending_keys: list[Tensor] = []

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.key_backbone, self.backbone), (self.key_head, self.projection_head)]

    def on_step_end(self, progress: Progress) -> None:
        super().on_step_end(progress)
        for keys in self._pending_keys:
            self.queue.enqueue(keys)
        self._pending_keys.clear()

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, "MoCo v2")
        q_a, q_b = forward_views(lambda x: self.projection_head(self.backbone(x)), views)
        with torch.no_grad():
            k_a, k_b = forward_views(lambda x: self.key_head(self.key_backbone(x)), views)
        queue, _ = self.queue.get()
        # The first step meets an empty queue: the batch's other keys stand in as negatives.
        negatives = queue if queue.shape[0] else None
        loss = (self.criterion(q_a, k_b, negatives=negatives, validate=validate)
                + self.criterion(q_b, k_a, negatives=negatives, validate=validate)) / 2
        self._pending_keys.append(k_a)
        return {"loss": loss}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "MoCoV2":
        options = cls.options(config.method_options)
        global_batch = config.batch_size  # over all processes
        if options["queue_size"] < global_batch:
            raise ConfigError(f"moco_v2's queue_size ({options['queue_size']}) must be at least the global batch "
                              f"size ({global_batch}); raise method_options.queue_size (MoCo uses 4096 to 65536).")
        head = create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim)
        return cls(backbone, head, temperature=config.temperature, **options)


@register_method("moco_v3")
class MoCoV3(MomentumMethod):
    """MoCo v3 for ResNets: BN-MLP projector and predictor, in-batch negatives, symmetric loss.

    The loss is the reference code's: ``2t * (ctr(q_a, k_b) + ctr(q_b, k_a))`` with ``ctr`` the
    cross-entropy of the logits ``q . k / t`` (the factor t offsets the 1/t the logits put into the
    gradient).

    Example:
        >>> from contrastkit import create_backbone
        >>> model = MoCoV3(create_backbone("small_cnn", in_channels=1), hidden_dim=64, projection_dim=32)
        >>> model.training_step([torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])["loss"].backward()
    """

    default_options = {"predictor_hidden_dim": 4096, "ema_momentum": 0.99, "ema_momentum_final": 1.0}
    sync_batchnorm = True
    recipes = {"small": dict(temperature=0.2, hidden_dim=4096, projection_dim=256, lr_per_256=0.12,
                             weight_decay=5e-4),
               "large": dict(temperature=1.0, hidden_dim=4096, projection_dim=256, optimizer="lars", lr_per_256=0.3,
                             weight_decay=1e-6)}

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 4096, projection_dim: int = 256,
                 predictor_hidden_dim: int = 4096, temperature: float = 0.2, ema_momentum: float = 0.99,
                 ema_momentum_final: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MLPHead(backbone.feature_dim, hidden_dim, projection_dim, last_batch_norm=True)
        self.prediction_head = MLPHead(projection_dim, predictor_hidden_dim, projection_dim)
        self.key_backbone = momentum_copy(backbone)
        self.key_head = momentum_copy(self.projection_head)
        self.temperature = temperature
        self.criterion = MoCoLoss(temperature=temperature, gather_across_processes=True)
        self._set_momentum(ema_momentum, ema_momentum_final)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.key_backbone, self.backbone), (self.key_head, self.projection_head)]

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        require_two_views(views, "MoCo v3")
        q_a, q_b = forward_views(lambda x: self.prediction_head(self.projection_head(self.backbone(x))), views)
        with torch.no_grad():
            k_a, k_b = forward_views(lambda x: self.key_head(self.key_backbone(x)), views)
        loss = self.criterion(q_a, k_b, validate=validate) + self.criterion(q_b, k_a, validate=validate)
        return {"loss": 2 * self.temperature * loss}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "MoCoV3":
        return cls(backbone, hidden_dim=config.hidden_dim or backbone.feature_dim,
                   projection_dim=config.projection_dim, temperature=config.temperature,
                   **cls.options(config.method_options))
