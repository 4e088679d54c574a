"""AAM-softmax classification of the backbone's embeddings: the supervised baseline that speaker
encoders are trained with (ECAPA-TDNN in SpeechBrain and WeSpeaker), beside SupCon."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.losses.aam_softmax import AAMSoftmaxLoss
from contrastkit.methods.base import Method
from contrastkit.methods.registry import register_method


@register_method("aam_softmax")
class AAMSoftmax(Method):
    """The backbone's embeddings classified by AAM-softmax, every view of a clip under its label; the
    embeddings themselves are the representation (no projection head), as in speaker verification.

    ``classes`` (the number of labels) is a method option that the audio modality fills from the
    data; in a loop of one's own, pass it.

    Example:
        >>> from contrastkit.models.audio import mel_cnn
        >>> model = AAMSoftmax(mel_cnn(), classes=3)
        >>> views = [torch.randn(4, 1, 8000), torch.randn(4, 1, 8000)]
        >>> model.training_step(views, labels=torch.tensor([0, 1, 2, 0]))["loss"].backward()
    """

    requires_labels = True
    modalities = ("audio",)
    default_options = {"margin": 0.2, "scale": 30.0, "classes": 0}

    def __init__(self, backbone: nn.Module, classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.criterion = AAMSoftmaxLoss(backbone.feature_dim, classes, margin=margin, scale=scale)

    def training_step(self, views: Sequence[Tensor], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        if labels is None:
            raise ConfigError("AAM-softmax is supervised: training_step needs the batch's labels (speakers); for "
                              "unlabeled clips use simclr.")
        embeddings = torch.cat(self.encode_views(self.backbone, views))
        return {"loss": self.criterion(embeddings, labels.repeat(len(views)), validate=validate)}

    def configure_views(self, views: Any) -> Any:
        # One view is enough for a classifier; every view the preset makes is used.
        return views

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "AAMSoftmax":
        options = cls.options(config.method_options)
        if not options["classes"]:
            raise ConfigError("aam_softmax needs method option classes (the number of labels); the audio modality "
                              "sets it from the data.")
        return cls(backbone, **options)
