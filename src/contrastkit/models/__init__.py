"""Backbones and heads."""

from contrastkit.models.backbones import SmallCNN, create_backbone, list_backbones, register_backbone
from contrastkit.models.heads import HEADS, MLPHead, create_head

__all__ = ["HEADS", "MLPHead", "SmallCNN", "create_backbone", "create_head", "list_backbones",
           "register_backbone"]
