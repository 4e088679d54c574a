"""contrastkit: contrastive and self-supervised representation learning for PyTorch.

The building blocks (losses, augmentations, backbones, heads, methods) are plain functions and
nn.Modules for use in any training loop; ``contrastkit.train`` and the ``contrastkit`` command sit
on top of them.
"""

from contrastkit.augment import MultiView, preset
from contrastkit.config import Config
from contrastkit.data import DeviceLoader, load_dataset
from contrastkit.errors import ConfigError, ContrastkitError, DatasetError, InputError
from contrastkit.export import load_encoder
from contrastkit.losses import InfoNCELoss, NTXentLoss, info_nce
from contrastkit.methods import SimCLR
from contrastkit.models import create_backbone, create_head

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "ContrastkitError", "DatasetError", "DeviceLoader", "InfoNCELoss",
           "InputError", "MultiView", "NTXentLoss", "SimCLR", "create_backbone", "create_head", "info_nce",
           "load_dataset", "load_encoder", "preset"]
