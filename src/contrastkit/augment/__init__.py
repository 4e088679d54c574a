"""Augmentations: batched, device-agnostic image ops and named multi-view presets; sentence
transforms and the tokenized views of text batches."""

from contrastkit.augment.frames import RandomCrop, RandomShift, center_crop
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
from contrastkit.augment.image_text import ImageTextViews, pick_captions
from contrastkit.augment.presets import MultiView, list_presets, multicrop, preset, register_preset
from contrastkit.augment.text import (Paraphrase, RandomMask, SynonymReplacement, TextCompose, TextTransform,
                                      WordDeletion, WordSwap)
from contrastkit.augment.text_views import TEXT_PRESETS, TextViews, text_preset

__all__ = [
    "TEXT_PRESETS",
    "BatchTransform",
    "ColorJitter",
    "Compose",
    "Cutout",
    "GaussianBlur",
    "ImageTextViews",
    "MultiView",
    "Normalize",
    "Paraphrase",
    "RandomCrop",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomMask",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShift",
    "RandomSolarize",
    "SynonymReplacement",
    "TextCompose",
    "TextTransform",
    "TextViews",
    "WordDeletion",
    "WordSwap",
    "center_crop",
    "list_presets",
    "multicrop",
    "params_to",
    "pick_captions",
    "preset",
    "register_preset",
    "text_preset",
    "to_float",
]
