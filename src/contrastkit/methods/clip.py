"""Image-text methods: CLIP (Radford et al., 2021) and SigLIP (Zhai et al., 2023), with either tower
lockable (LiT, Zhai et al., 2022: a pretrained, frozen tower teaches the other).

Two towers, an image encoder (any backbone) and a text encoder (``hf:NAME``), each followed by a
projection to a shared width; the image-caption pairs of a batch are contrasted with the CLIP
loss (softmax over the batch, a learnable temperature) or the SigLIP loss (a sigmoid per pair, a
learnable scale and bias), gathered across processes. Pairs that share a caption (a class's
prompts) count as positives of each other. The image backbone is the method's ``backbone``: the
representation that kNN and linear probes score.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from contrastkit.augment import MultiView
from contrastkit.errors import ConfigError
from contrastkit.losses.clip import CLIPLoss
from contrastkit.losses.pairwise import SigLIPLoss
from contrastkit.methods.base import Method
from contrastkit.methods.registry import register_method
from contrastkit.models.backbones import create_backbone
from contrastkit.models.heads import create_head
from contrastkit.models.text import DEFAULT_TEXT_ENCODER


class Tower(nn.Module):
    """An encoder followed by its projection; keeps a text encoder's ``tokenize``, so the tower can
    be handed to :func:`contrastkit.evaluate.extract_text_features`."""

    def __init__(self, encoder: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection

    def forward(self, inputs: Any) -> Tensor:
        return self.projection(self.encoder(inputs))

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return self.encoder.tokenize(texts)


class _TwoTower(Method):
    """Image and text towers and a pair loss; ``lock_image`` / ``lock_text`` freeze an encoder
    (its projection still learns) and keep it in eval mode, without dropout."""

    modalities = ("image_text",)
    default_options: dict[str, Any] = {"text_encoder": DEFAULT_TEXT_ENCODER, "lock_image": False,
                                       "lock_text": False}

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module, image_projection: nn.Module,
                 text_projection: nn.Module, criterion: nn.Module, *, lock_image: bool = False,
                 lock_text: bool = False) -> None:
        super().__init__()
        if lock_image and lock_text:
            raise ConfigError("lock_image and lock_text together leave only the projections to train; lock one "
                              "tower (LiT locks a pretrained one) or neither (CLIP).")
        self.image_tower = Tower(backbone, image_projection)
        self.text_tower = Tower(text_encoder, text_projection)
        self.criterion = criterion
        self.locked = [tower.encoder for tower, lock in ((self.image_tower, lock_image), (self.text_tower, lock_text))
                       if lock]
        for encoder in self.locked:
            encoder.requires_grad_(False)
            encoder.eval()
        # The locked text encoder's features of every caption, by caption id (cache_text_features);
        # rebuilt from the captions, so not saved with the weights.
        self.register_buffer("text_features", None, persistent=False)

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        """The image encoder: the representation that probes and ``embed`` use."""
        return self.image_tower.encoder

    def train(self, mode: bool = True) -> "_TwoTower":
        super().train(mode)
        for encoder in self.locked:
            encoder.eval()
        return self

    def _encode(self, tower: Tower, inputs: Any) -> Tensor:
        if tower.encoder in self.locked:
            with torch.no_grad():  # no activations kept for a frozen encoder
                features = tower.encoder(inputs)
            return tower.projection(features)
        return tower(inputs)

    def encode_image(self, images: Tensor) -> Tensor:
        return self._encode(self.image_tower, images)

    def encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        return self._encode(self.text_tower, tokens)

    @torch.no_grad()
    def cache_text_features(self, captions: Sequence[str], batch_size: int = 1024) -> None:
        """Encode every caption once with the locked text encoder, on the encoder's device.

        Training then looks a caption's features up by its id and sends them through the text
        projection, so the views need not tokenize and the encoder need not run at every step
        (:class:`ImageTextViews` with ``tokenize=None``). A locked encoder in eval mode gives a
        caption the same features at every step, so only the precision changes: the cache is in
        the encoder's own dtype (float32), where an autocast step would have run it in 16 bits.
        """
        if self.text_tower.encoder not in self.locked:
            raise ConfigError("only a locked text tower's features can be cached: a training text encoder changes "
                              "them at every step. Set method_options.lock_text=true, or keep the tokens.")
        device = next(self.text_tower.encoder.parameters()).device
        chunks = []
        for start in range(0, len(captions), batch_size):
            tokens = self.text_tower.tokenize(list(captions[start:start + batch_size]))
            chunks.append(self.text_tower.encoder({key: value.to(device) for key, value in tokens.items()}))
        self.text_features = torch.cat(chunks)

    def configure_views(self, views: MultiView) -> MultiView:
        """One image view per pair: the preset's first pipeline."""
        return MultiView(list(views.views)[:1], views.eval_transform, channels_last=views.channels_last,
                         backend=views.backend)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        """``views``: image view, caption tokens and caption ids (``ImageTextViews``); tokens None:
        the captions' features come from :meth:`cache_text_features`."""
        if len(views) != 3:
            raise ConfigError(f"{type(self).__name__} trains on [images, caption tokens, caption ids] views "
                              f"(ImageTextViews), got {len(views)} views.")
        images, tokens, caption_ids = views
        if tokens is not None:
            texts = self.encode_text(tokens)
        elif self.text_features is not None:
            texts = self.text_tower.projection(self.text_features[caption_ids])
        else:
            raise ConfigError("the views sent caption ids without tokens, but no text features are cached: call "
                              "cache_text_features(captions) first, or give ImageTextViews the tokenizer.")
        return {"loss": self.criterion(self.encode_image(images), texts, caption_ids, validate=validate)}

    @classmethod
    def _towers(cls, backbone: nn.Module, config: Any, options: dict[str, Any]) -> tuple[nn.Module, ...]:
        name = options["text_encoder"]
        if not isinstance(name, str) or not name.startswith("hf:"):
            raise ConfigError(f"method_options.text_encoder must be a Hugging Face encoder, hf:NAME (e.g. "
                              f"{DEFAULT_TEXT_ENCODER}), got {name!r}.")
        text_encoder = create_backbone(name, pooling=config.pooling, max_length=config.max_length)
        projections = [create_head(config.head, encoder.feature_dim, config.hidden_dim, config.projection_dim)
                       for encoder in (backbone, text_encoder)]
        return text_encoder, *projections


# Shared by CLIP and SigLIP. From scratch on small images: AdamW with CLIP's weight decay 0.1 and
# one light view (crop and flip); LiT on CIFAR-10 is specified at 40 epochs.
_IMAGE_TEXT_RECIPE = dict(head="linear", projection_dim=256, optimizer="adamw", lr=1e-3, weight_decay=0.1,
                          warmup_epochs=1.0, epochs=40, preset="crop_flip", max_length=32)


@register_method("clip")
class CLIP(_TwoTower):
    """CLIP: image and text towers trained with the symmetric softmax loss (see the module docstring).

    Example::

        model = CLIP(create_backbone("resnet18"), create_backbone("hf:all-MiniLM-L6-v2"),
                     nn.Linear(512, 256), nn.Linear(384, 256), lock_text=True)   # LiT
        images, tokens, ids = ImageTextViews(preset("crop_flip", size=32), captions, model.text_tower.tokenize)(batch)
        model.training_step([images, tokens, ids])["loss"].backward()
    """

    recipes = {"image_text": dict(_IMAGE_TEXT_RECIPE, temperature=0.07)}

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module, image_projection: nn.Module,
                 text_projection: nn.Module, *, temperature: float = 0.07, lock_image: bool = False,
                 lock_text: bool = False) -> None:
        super().__init__(backbone, text_encoder, image_projection, text_projection,
                         CLIPLoss(init_temperature=temperature, gather_across_processes=True),
                         lock_image=lock_image, lock_text=lock_text)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "CLIP":
        options = cls.options(config.method_options)
        return cls(backbone, *cls._towers(backbone, config, options), temperature=config.temperature,
                   lock_image=options["lock_image"], lock_text=options["lock_text"])


@register_method("siglip")
class SigLIP(_TwoTower):
    """SigLIP: image and text towers trained with the pairwise sigmoid loss, a learnable scale
    (starting at 10) and bias (starting at -10)."""

    recipes = {"image_text": dict(_IMAGE_TEXT_RECIPE)}

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module, image_projection: nn.Module,
                 text_projection: nn.Module, *, lock_image: bool = False, lock_text: bool = False) -> None:
        super().__init__(backbone, text_encoder, image_projection, text_projection,
                         SigLIPLoss(gather_across_processes=True), lock_image=lock_image, lock_text=lock_text)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SigLIP":
        options = cls.options(config.method_options)
        return cls(backbone, *cls._towers(backbone, config, options), lock_image=options["lock_image"],
                   lock_text=options["lock_text"])
