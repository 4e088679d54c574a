"""MoCo v2 (Chen et al., 2020) and MoCo v3 (Chen et al., 2021): queries from the online encoder are
classified against keys from a momentum encoder; v2 draws its negatives from a queue of past keys,
v3 from the other keys of the batch and adds a predictor."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit._distributed import forward_shuffled, world_size
from contrastkit.errors import ConfigError
from contrastkit.losses.moco import MoCoLoss
from contrastkit.methods.base import MomentumMethod, Progress, head_output_dim, require_two_views
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import MLPHead, create_head
from contrastkit.models.memory import MemoryQueue
from contrastkit.models.momentum import momentum_copy
from contrastkit.models.split_batch_norm import split_batch_norm


@register_method("moco_v2")
class MoCoV2(MomentumMethod):
    """MoCo v2: a projection head, a momentum key encoder and a FIFO queue of negatives.

    The loss is symmetrised over the two views (each view is once the query). The keys of the first
    view join the queue in :meth:`on_step_end`, after backward has used the queue as it was (a
    loop of your own calls it after the optimizer step, as for the momentum update).

    Shuffling BN, as the reference has it (facebookresearch/moco, builder.py): each view goes
    through on its own, and the keys' batch is shuffled before the key encoder and put back in
    order after, across processes where there are several, each with its own batch norm. On one
    process, ``batch_norm_splits`` groups of the batch (8 by default, as the authors' one-GPU
    CIFAR-10 demo and lightly's CIFAR-10 benchmark split theirs) stand for the GPUs
    (:class:`contrastkit.models.SplitBatchNorm`).

    Example:
        >>> from contrastkit import create_backbone, create_head
        >>> from contrastkit.methods import Progress
        >>> backbone = create_backbone("small_cnn", in_channels=1)
        >>> model = MoCoV2(backbone, create_head("mlp2", backbone.feature_dim, out_dim=32), queue_size=64)
        >>> views = [torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28)]  # 8 batch-norm groups of 2
        >>> model.training_step(views)["loss"].backward()
        >>> model.on_step_end(Progress(step=0, total_steps=10, steps_per_epoch=5))  # momentum update, enqueue
    """

    default_options = {"queue_size": 4096, "ema_momentum": 0.99, "ema_momentum_final": 0.99,
                       "batch_norm_splits": None}
    views_share_batch_norm = False  # one pass per view (see above)
    recipes = {"small": dict(temperature=0.1, head="mlp2", projection_dim=128, lr_per_256=0.12, weight_decay=5e-4),
               "large": dict(temperature=0.2, head="mlp2", hidden_dim=2048, projection_dim=128, lr_per_256=0.03,
                             weight_decay=1e-4, method_options=dict(queue_size=65536, ema_momentum=0.999,
                                                                    ema_momentum_final=0.999))}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, *, temperature: float = 0.2,
                 queue_size: int = 4096, ema_momentum: float = 0.99, ema_momentum_final: float = 0.99,
                 batch_norm_splits: int | None = None) -> None:
        super().__init__()
        self.batch_norm_splits = default_batch_norm_splits() if batch_norm_splits is None else batch_norm_splits
        self.backbone = split_batch_norm(backbone, self.batch_norm_splits)
        self.projection_head = split_batch_norm(projection_head, self.batch_norm_splits)
        self.key_backbone = momentum_copy(self.backbone)
        self.key_head = momentum_copy(self.projection_head)
        self.queue = MemoryQueue(queue_size, head_output_dim(projection_head))
        # The keys' shuffles so far: each step's is drawn from it, so a resumed run replays them.
        self.register_buffer("shuffles", torch.zeros((), dtype=torch.int64))
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
        q_a, q_b = self.encode_views(lambda x: self.projection_head(self.backbone(x)), views)
        with torch.no_grad():
            self.shuffles.add_(1)
            k_a, k_b = self.encode_views(
                lambda x: forward_shuffled(lambda rows: self.key_head(self.key_backbone(rows)), x, self.shuffles),
                views)
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
        splits = default_batch_norm_splits() if options["batch_norm_splits"] is None else options["batch_norm_splits"]
        per_process = global_batch // world_size()
        if per_process % splits:
            raise ConfigError(f"moco_v2 splits batch norm into {splits} groups (method_options.batch_norm_splits), "
                              f"which a batch of {per_process} per process does not divide into; use a batch size "
                              f"divisible by {splits}, or set batch_norm_splits.")
        # Without batch norm: the reference's head is Linear-ReLU-Linear (facebookresearch/moco,
        # builder.py), as is lightly's MoCoProjectionHead.
        head = create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim,
                           batch_norm=False)
        return cls(backbone, head, temperature=config.temperature, **options)


def default_batch_norm_splits() -> int:
    """MoCo v2's batch-norm groups where unset: 8 on one process, standing for the reference's 8
    GPUs; 1 on several, each process being one of them."""
    return 8 if world_size() == 1 else 1


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
    # One pass per view, online and momentum encoder (facebookresearch/moco-v3, moco/builder.py).
    views_share_batch_norm = False
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
        q_a, q_b = self.encode_views(lambda x: self.prediction_head(self.projection_head(self.backbone(x))), views)
        with torch.no_grad():
            k_a, k_b = self.encode_views(lambda x: self.key_head(self.key_backbone(x)), views)
        loss = self.criterion(q_a, k_b, validate=validate) + self.criterion(q_b, k_a, validate=validate)
        return {"loss": 2 * self.temperature * loss}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "MoCoV3":
        return cls(backbone, hidden_dim=config.hidden_dim or backbone.feature_dim,
                   projection_dim=config.projection_dim, temperature=config.temperature,
                   **cls.options(config.method_options))
