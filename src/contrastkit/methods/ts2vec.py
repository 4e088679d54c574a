"""TS2Vec (Yue et al., AAAI 2022): contextual consistency between overlapping crops of a series.

Each batch is cut into two crops that share an overlap but extend it differently
(:class:`contrastkit.augment.series.OverlappingCrops`, the ``ts2vec`` series preset), and the
encoder sees each crop with some timesteps hidden (timestamp masking, the crop's
``timestep_mask``). The representations of the overlapping timesteps in the two crops must agree,
against the other samples at the same timestep and the other timesteps of the same sample, at
every time scale (:func:`contrastkit.losses.ts2vec.hierarchical_contrastive_loss`).

There is no projection head: the encoder's per-timestep output is what the loss sees. The
representation evaluated downstream is the max-pooled output of the encoder's running average
over all training steps (equal weights, stochastic weight averaging; TS2Vec's implementation
encodes with such an average too): ``backbone`` is the average, ``encoder`` the network trained.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from contrastkit.augment.series import OverlappingCrops
from contrastkit.errors import ConfigError
from contrastkit.losses.ts2vec import HierarchicalContrastiveLoss
from contrastkit.methods.base import Method, Progress
from contrastkit.methods.registry import register_method
from contrastkit.models.momentum import ema_update, momentum_copy

VIEW_KEYS = ("values", "timestep_mask", "overlap_start", "overlap_length")


@register_method("ts2vec")
class TS2Vec(Method):
    """TS2Vec as a module a user can drive from their own loop.

    Args:
        backbone: the encoder to train (kept as ``encoder``; ``backbone`` becomes its running average),
            a series encoder with ``encode_timesteps(x, timestep_mask)`` (the ``ts2vec_cnn``,
            ``resnet1d``, ``series_transformer``, ``series_gru`` or ``series_lstm`` backbones).
        alpha: weight of the instance-wise term of the loss (the temporal term gets 1 - alpha).
        temporal_unit: number of the finest time scales without the temporal term.

    Example:
        >>> from contrastkit.augment.series import OverlappingCrops
        >>> from contrastkit.models.series import TS2VecEncoder
        >>> model = TS2Vec(TS2VecEncoder(in_channels=1, hidden_dim=8, output_dim=16, depth=2))
        >>> views = OverlappingCrops()(torch.randn(4, 1, 40), generator=torch.Generator().manual_seed(0))
        >>> model.training_step(views)["loss"].backward()
    """

    modalities = ("series",)
    default_options = {"alpha": 0.5, "temporal_unit": 0}
    # TS2Vec's settings: AdamW at a constant lr 1e-3 (torch's default weight decay 0.01; the
    # running average of the weights anneals) on batches of 8, 320-d representations. The paper
    # trains 200 iterations on the small UCR sets; 50 epochs give at least 200 steps on every set
    # with 36 or more training series. A cosine decay instead cost GunPoint 1.3 points (0.973 vs
    # 0.987, seed 0). The representation stays TS2Vec's one maximum over the series: a temporal
    # pyramid of maxima (series.pooling=pyramid) lifts ArrowHead's SVM from 0.810 to 0.836 over ten
    # seeds but drops OSULeaf's from 0.851 to 0.773 (seed 0), whose leaf outlines start anywhere
    # (benchmarks/RESULTS.md).
    recipes = {"series": dict(backbone="ts2vec_cnn", head="identity", preset="ts2vec", optimizer="adamw", lr=1e-3,
                              weight_decay=0.01, batch_size=8, epochs=50, warmup_epochs=0.0, lr_schedule="constant",
                              knn_k=5)}

    def __init__(self, backbone: nn.Module, alpha: float = 0.5, temporal_unit: int = 0) -> None:
        super().__init__()
        if not callable(getattr(backbone, "encode_timesteps", None)):
            raise ConfigError(f"ts2vec needs a series backbone with per-timestep outputs (encode_timesteps), got "
                              f"{type(backbone).__name__}; use ts2vec_cnn, resnet1d, series_transformer, series_gru "
                              "or series_lstm.")
        self.encoder = backbone
        self.backbone = momentum_copy(backbone)
        self.criterion = HierarchicalContrastiveLoss(alpha=alpha, temporal_unit=temporal_unit)

    def configure_views(self, views: Any) -> OverlappingCrops:
        """The preset's overlapping crops, their overlap long enough for ``temporal_unit``: the
        temporal term needs two timesteps at its finest scale, 2^(temporal_unit + 1) before pooling."""
        if not isinstance(views, OverlappingCrops):
            raise ConfigError(f"ts2vec trains on overlapping crops, not on {type(views).__name__}; use the series "
                              "preset 'ts2vec'.")
        needed = 2 ** (self.criterion.temporal_unit + 1)
        if views.min_overlap >= needed:
            return views
        return OverlappingCrops(max_length=max(views.max_length, needed), min_overlap=needed,
                                mask_ratio=views.mask_ratio)

    def _overlap(self, view: Mapping[str, Tensor]) -> Tensor:
        """Per-timestep representations (B, overlap, D) of the overlap, encoded in the crop's context."""
        timesteps = self.encoder.encode_timesteps(view["values"], view["timestep_mask"])
        start, length = int(view["overlap_start"]), int(view["overlap_length"])
        return timesteps[:, start:start + length]

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        """The hierarchical contrastive loss between the two crops' overlaps; labels are not used."""
        if len(views) != 2 or not all(isinstance(view, Mapping) and set(VIEW_KEYS) <= set(view) for view in views):
            raise ConfigError(f"ts2vec trains on two overlapping crops (dicts with keys {', '.join(VIEW_KEYS)}); use "
                              "the series preset 'ts2vec'.")
        first, second = (self._overlap(view) for view in views)
        return {"loss": self.criterion(first, second, validate=validate)}

    def on_step_end(self, progress: Progress) -> None:
        # After step s the average holds s + 1 sets of weights, each with weight 1 / (s + 1).
        ema_update(self.backbone, self.encoder, momentum=progress.step / (progress.step + 1))

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "TS2Vec":
        return cls(backbone, **cls.options(config.method_options))
