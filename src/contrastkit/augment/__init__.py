"""Batched, device-agnostic image augmentations and named multi-view presets."""

from contrastkit.augment.image import (
    BatchTransform,
    ColorJitter,
    Compose,
    Cutout,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomSolarize,
    params_to,
    to_float,
)
from contrastkit.augment.presets import MultiView, list_presets, multicrop, preset, register_preset

__all__ = [
    "BatchTransform",
    "ColorJitter",
    "Compose",
    "Cutout",
    "GaussianBlur",
    "MultiView",
    "Normalize",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSolarize",
    "list_presets",
    "multicrop",
    "params_to",
    "preset",
    "register_preset",
    "to_float",
]
