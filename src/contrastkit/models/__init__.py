"""Backbones (image networks, Hugging Face text encoders, 1-D series encoders, audio encoders), heads,
and the building blocks of momentum / queue methods and of GradCache."""

from contrastkit.models.atari import AtariEncoder
from contrastkit.models.audio import MelCNN, WaveCNN
from contrastkit.models.backbones import SmallCNN, create_backbone, list_backbones, register_backbone
from contrastkit.models.grad_cache import cached_embeddings, grad_cache_step
from contrastkit.models.heads import HEADS, DINOHead, MLPHead, Prototypes, create_head
from contrastkit.models.memory import MemoryQueue
from contrastkit.models.momentum import cosine_momentum, ema_update, momentum_copy
from contrastkit.models.series import ResNet1d, SeriesEncoder, SeriesRNN, SeriesTransformer, TS2VecEncoder
from contrastkit.models.split_batch_norm import SplitBatchNorm, split_batch_norm
from contrastkit.models.text import TextEncoder, pool

__all__ = ["HEADS", "DINOHead", "MLPHead", "MelCNN", "MemoryQueue", "Prototypes", "ResNet1d", "SeriesEncoder",
           "SeriesRNN", "SeriesTransformer", "SmallCNN", "SplitBatchNorm", "TS2VecEncoder", "TextEncoder", "WaveCNN",
           "cached_embeddings", "cosine_momentum", "create_backbone", "create_head", "ema_update", "grad_cache_step",
           "list_backbones", "momentum_copy", "pool", "register_backbone", "split_batch_norm",
           "AtariEncoder"]
