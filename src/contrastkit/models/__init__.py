"""Backbones, heads and the building blocks of momentum / queue methods."""

from contrastkit.models.backbones import SmallCNN, create_backbone, list_backbones, register_backbone
from contrastkit.models.heads import HEADS, DINOHead, MLPHead, Prototypes, create_head
from contrastkit.models.memory import MemoryQueue
from contrastkit.models.momentum import cosine_momentum, ema_update, momentum_copy

__all__ = ["HEADS", "DINOHead", "MLPHead", "MemoryQueue", "Prototypes", "SmallCNN", "cosine_momentum",
           "create_backbone", "create_head", "ema_update", "list_backbones", "momentum_copy",
           "register_backbone"]
