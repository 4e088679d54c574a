"""Sentence-embedding methods: SimCSE (Gao et al., 2021), unsupervised and supervised, and CoSENT
(Su, 2022) for scored pairs.

Each trains a text encoder (``hf:...``) on tokenized views (see
:mod:`contrastkit.augment.text_views`) through the same contract as the image methods. The
``grad_cache_chunk_size`` option encodes the views that many sentences at a time with GradCache
(:func:`contrastkit.models.cached_embeddings`): the loss and its gradients stay those of the whole
batch while activations are held for one chunk only, so a batch of 16k pairs fits on one GPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.losses.cosent import CoSENTLoss
from contrastkit.losses.pairs import PairInfoNCELoss
from contrastkit.methods.base import Method
from contrastkit.methods.registry import register_method
from contrastkit.models.grad_cache import cached_embeddings
from contrastkit.models.heads import create_head

# Sentence-transformers' fine-tuning defaults, shared by the text methods.
_TEXT_RECIPE = dict(head="identity", optimizer="adamw", lr=2e-5, weight_decay=0.01)


class _SentenceMethod(Method):
    """An encoder and an optional head; embeddings of every view in one forward pass, or in
    GradCache chunks."""

    modalities = ("text",)

    def __init__(self, backbone: nn.Module, projection_head: nn.Module | None = None, *,
                 grad_cache_chunk_size: int | None = None) -> None:
        super().__init__()
        if grad_cache_chunk_size is not None and (not isinstance(grad_cache_chunk_size, int)
                                                  or grad_cache_chunk_size < 1):
            raise ConfigError(f"grad_cache_chunk_size must be a positive integer (sentences per forward pass) or "
                              f"unset, got {grad_cache_chunk_size!r}.")
        self.backbone = backbone
        self.projection_head = projection_head or nn.Identity()
        self.grad_cache_chunk_size = grad_cache_chunk_size

    def _embed(self, views: Sequence[Any]) -> list[Tensor]:
        def encode(tokens: Any) -> Tensor:
            return self.projection_head(self.backbone(tokens))

        if self.grad_cache_chunk_size and torch.is_grad_enabled():
            return cached_embeddings(encode, list(views), chunk_size=self.grad_cache_chunk_size)
        return self.encode_views(encode, views)

    @classmethod
    def _head(cls, backbone: nn.Module, config: Any) -> nn.Module:
        return create_head(config.head, backbone.feature_dim, config.hidden_dim, config.projection_dim)


@register_method("simcse_unsup")
class SimCSEUnsup(_SentenceMethod):
    """Unsupervised SimCSE: a sentence's positive is the same sentence under another dropout mask,
    its negatives the other sentences of the batch (``text_preset("dropout")``: two unchanged views).

    Example::

        model = SimCSEUnsup(create_backbone("hf:all-MiniLM-L6-v2"))
        views = text_preset("dropout", model.backbone.tokenize)((["a cat sits", "a dog runs"],))
        model.training_step(views)["loss"].backward()
    """

    default_options = {"grad_cache_chunk_size": None}
    # The paper's unsupervised recipe: t=0.05, lr 3e-5, sentences cut to 32 tokens.
    recipes = {"text": dict(_TEXT_RECIPE, temperature=0.05, preset="dropout", lr=3e-5, max_length=32)}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module | None = None, *,
                 temperature: float = 0.05, grad_cache_chunk_size: int | None = None) -> None:
        super().__init__(backbone, projection_head, grad_cache_chunk_size=grad_cache_chunk_size)
        self.criterion = PairInfoNCELoss(temperature=temperature, gather_across_processes=True)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ConfigError(f"unsupervised SimCSE trains on two views of each sentence, got {len(views)}; use "
                              "the dropout text preset.")
        first, second = self._embed(views)
        return {"loss": self.criterion(first, second, validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SimCSEUnsup":
        return cls(backbone, cls._head(backbone, config), temperature=config.temperature,
                   **cls.options(config.method_options))


@register_method("simcse")
class SimCSE(_SentenceMethod):
    """Supervised SimCSE: anchors against their positives (and hard negatives, for triplet data)
    with the other positives of the batch as negatives: the pair InfoNCE that sentence-transformers
    calls MultipleNegativesRankingLoss. ``symmetric`` adds the positives-to-anchors direction.

    Trains on pair or triplet datasets (``text_preset("pairs")``: a view per column).
    """

    default_options = {"symmetric": False, "grad_cache_chunk_size": None}
    recipes = {"text": dict(_TEXT_RECIPE, temperature=0.05, preset="pairs")}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module | None = None, *,
                 temperature: float = 0.05, symmetric: bool = False, grad_cache_chunk_size: int | None = None) -> None:
        super().__init__(backbone, projection_head, grad_cache_chunk_size=grad_cache_chunk_size)
        self.criterion = PairInfoNCELoss(temperature=temperature, symmetric=symmetric, gather_across_processes=True)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        if len(views) not in (2, 3):
            raise ConfigError(f"supervised SimCSE trains on (anchor, positive) pairs or (anchor, positive, "
                              f"negative) triplets, got {len(views)} views; give a pair or triplet dataset.")
        anchors, positives, *negatives = self._embed(views)
        return {"loss": self.criterion(anchors, positives, negatives=negatives[0] if negatives else None,
                                       validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "SimCSE":
        return cls(backbone, cls._head(backbone, config), temperature=config.temperature,
                   **cls.options(config.method_options))


@register_method("cosent")
class CoSENT(_SentenceMethod):
    """CoSENT for pairs with similarity scores (STS-B): every pair whose gold score is higher must
    have the higher cosine similarity (``scale`` sharpens the ranking). The scores arrive as the
    batch's labels.
    """

    default_options = {"scale": 20.0, "grad_cache_chunk_size": None}
    # lr 5e-5: on STS-B (batch 16) 1 epoch reached Spearman 0.849 against 0.828 at 2e-5.
    recipes = {"text": dict(_TEXT_RECIPE, preset="pairs", lr=5e-5)}

    def __init__(self, backbone: nn.Module, projection_head: nn.Module | None = None, *,
                 scale: float = 20.0, grad_cache_chunk_size: int | None = None) -> None:
        super().__init__(backbone, projection_head, grad_cache_chunk_size=grad_cache_chunk_size)
        self.criterion = CoSENTLoss(scale=scale, gather_across_processes=True)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        if len(views) != 2 or labels is None:
            raise ConfigError("CoSENT trains on sentence pairs with similarity scores (e.g. stsb); got "
                              f"{len(views)} views{' and no scores' if labels is None else ''}.")
        first, second = self._embed(views)
        return {"loss": self.criterion(first, second, labels.float(), validate=validate)}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "CoSENT":
        return cls(backbone, cls._head(backbone, config), **cls.options(config.method_options))
