"""Images: uint8 datasets (registered names, ImageFolder trees, packed-JPEG .npz, tar shards) held
on the device, in pinned host memory or streamed from their files; a backbone; a preset's
:class:`~contrastkit.augment.MultiView`; kNN and linear probes beside raw pixels.

Its recipes (below) hold what each dataset trains with by default, and the side that decides
between a method's CIFAR-size and ImageNet-size recipes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from contrastkit.augment import MultiView, list_presets, preset
from contrastkit.config import Config
from contrastkit.data import DatasetSplits, create_loader, list_datasets, load_dataset
from contrastkit.data.datasets import stored_image_side
from contrastkit.data.images import is_cifar_size
from contrastkit.data.device_loader import BatchLoader
from contrastkit.data.streaming import StreamedImages, StreamLoader
from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import FineTuneTask, extract_features
from contrastkit.methods import METHODS, Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, register_modality
from contrastkit.models import create_backbone, list_backbones
from contrastkit.models.series import list_series_backbones

class ImageModality(Modality):
    """Labelled or unlabelled images, trained on a preset's views of each batch."""

    name = "image"
    catch_all = True  # any other name or path is taken for images; loading it says what is wrong
    streams_from_files = True
    raw_name = "raw pixels"
    # ``image_side`` is the side the dataset is stored at (which recipe of a method applies);
    # ``methods`` holds a dataset's entries for single methods.
    # Barlow Twins estimates a projection_dim^2 cross-correlation from one batch: with the small
    # CNN's batches a 512-d projector beat the CIFAR recipe's 2048-d one on digits (kNN 0.86 vs 0.56).
    # The MNIST recipe is sized to pretrain and evaluate within five minutes on two CPU cores.
    recipes = {
        "mnist": dict(image_side=28, backbone="small_cnn", epochs=6, batch_size=256, knn_k=20,
                      methods={"simclr": dict(temperature=0.2),
                               "barlow_twins": dict(hidden_dim=512, projection_dim=512),
                               "clip": dict(preset="mnist"), "siglip": dict(preset="mnist")}),
        "digits": dict(image_side=8, backbone="small_cnn", epochs=10, batch_size=128, knn_k=20,
                       methods={"barlow_twins": dict(hidden_dim=512, projection_dim=512),
                                # Digits are not mirror-symmetric: their own crop and rotation, no flip.
                                "clip": dict(preset="digits"), "siglip": dict(preset="digits")}),
        "cifar10": dict(image_side=32, backbone="resnet18", epochs=200, batch_size=512, knn_k=200),
    }
    default_recipe = dict(backbone="resnet18", epochs=100, batch_size=256, knn_k=200)

    def claims(self, dataset: str) -> bool:
        return True

    def datasets(self) -> list[str]:
        return list_datasets()

    def list_entries(self) -> dict[str, list[str]]:
        return {"backbones": [name for name in list_backbones() if name not in list_series_backbones()],
                "presets": list_presets()}

    def recipe(self, dataset: str) -> dict[str, Any]:
        recipe = super().recipe(dataset)
        recipe.pop("image_side", None)  # a fact about the data, not a config key
        return recipe

    def image_side(self, config: Config) -> int | None:
        """The side of the run's images: ``image_size``, else the dataset recipe's, else as stored
        (read from one image of a dataset path); None where nothing tells (a missing path)."""
        side = config.image_size or self.recipes.get(config.dataset, {}).get("image_side")
        return side if side is not None else stored_image_side(config.dataset)

    def recipe_key(self, config: Config) -> str:
        return "small" if is_cifar_size(self.image_side(config)) else "large"

    def derived_defaults(self, config: Config) -> dict[str, Any]:
        # CIFAR-size images keep their resolution through a ResNet's 3x3 stride-1 stem, as in the
        # CIFAR recipes of SimCLR, lightly and solo-learn; larger images and other backbones take
        # their usual stem.
        return {"cifar_stem": is_cifar_size(self.image_side(config)) and config.backbone.startswith("resnet")}

    def build(self, config: Config, method_class: type[Method], splits: DatasetSplits | None,
              device: torch.device) -> Built:
        self.check_backbone(config)
        splits = splits or load_dataset(config.dataset, root=config.data_root, image_size=config.image_size,
                                        placement=config.data_placement)
        for split in (splits.train, splits.test):
            if isinstance(split.images, StreamedImages):
                split.images.decode_device = device  # evaluation decodes its batches there too
        if method_class.requires_labels and len(splits.classes) < 2:
            raise ContrastkitError(f"{config.method} is supervised and needs class labels, but {config.dataset} has "
                                   f"{len(splits.classes)} class; give an ImageFolder tree with one folder per "
                                   "class, or choose a self-supervised method such as simclr.")
        method = self.image_method(config, method_class, splits, device)
        views, preset_name = self.views(config, splits)
        # On the device: the normalisation constants would otherwise be copied there at every batch.
        return Built(splits, method, method.configure_views(views).to(device), preset_name)

    @staticmethod
    def check_backbone(config: Config) -> None:
        if config.backbone.startswith("hf:"):
            text_tower = " (an image-text method's text tower is method_options.text_encoder)" \
                if "image_text" in METHODS.get(config.method).modalities else ""
            raise ContrastkitError(f"backbone {config.backbone} is a text encoder, but {config.dataset} holds images; "
                                   f"choose an image backbone (contrastkit list) or a text dataset{text_tower}.")

    @staticmethod
    def image_method(config: Config, method_class: type[Method], splits: Any, device: torch.device) -> Method:
        torch.manual_seed(config.seed)
        backbone = create_backbone(config.backbone, in_channels=splits.channels, cifar_stem=bool(config.cifar_stem))
        return method_class.from_config(backbone, config).to(device)

    @staticmethod
    def views(config: Config, splits: Any) -> tuple[MultiView, str]:
        """The preset's views for the run (the dataset's own preset where the config names none)."""
        name = config.preset or splits.default_preset
        views = preset(name, size=config.image_size or splits.image_size, mean=splits.mean, std=splits.std,
                       **config.preset_options)
        views.backend = config.augment_backend
        views.channels_last = config.channels_last  # the views are made in the model's layout
        return views, name

    def inputs(self, data: Any) -> Tensor:
        return data.images

    def loader(self, run: BuiltRun) -> BatchLoader:
        train, config = run.splits.train, run.config
        return create_loader(train.images, train.labels, config.batch_size, device=run.device, seed=config.seed,
                             placement=config.data_placement)

    def features(self, run: BuiltRun, data: Any) -> tuple[Tensor, Tensor]:
        features = extract_features(run.method.backbone, data.images, run.augment.eval_view, device=run.device,
                                    channels_last=run.config.channels_last)
        return features, data.labels

    def fine_tune_task(self, run: BuiltRun) -> FineTuneTask | None:
        if isinstance(run.splits.train.images, StreamedImages):
            print("note: no fine-tuning of streamed images yet (it would decode the training set at every epoch); "
                  "hold them in memory (data_placement=host) to fine-tune.", flush=True)
            return None
        task = super().fine_tune_task(run)
        task.transform = run.augment.eval_view  # uint8 -> the normalised floats the encoder was trained on
        return task

    def raw_inputs(self, run: BuiltRun) -> tuple[Tensor, Tensor] | None:
        if isinstance(run.splits.train.images, StreamedImages):
            print("note: no raw-pixel baseline for streamed images (it would decode the whole dataset into memory).",
                  flush=True)
            return None
        return tuple(getattr(run.splits, split).images.flatten(1).float() / 255 for split in ("train", "test"))

    def after_training(self, loader: BatchLoader) -> dict[str, Any]:
        if not isinstance(loader, StreamLoader):
            return {}
        if loader.skipped:
            print(f"note: {loader.skipped} unreadable image(s) were skipped while streaming", flush=True)
        return {"skipped_images": loader.skipped}

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        return run.splits.test is not None


IMAGE = register_modality(ImageModality())
