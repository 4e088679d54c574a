"""Datasets (uint8 tensors, decoded once) and the device-resident batch loader."""

from contrastkit.data.datasets import (DATASETS, DatasetSplits, ImageDataset, list_datasets,
                                       load_dataset, load_image_folder, register_dataset)
from contrastkit.data.device_loader import DeviceLoader

__all__ = ["DATASETS", "DatasetSplits", "DeviceLoader", "ImageDataset", "list_datasets",
           "load_dataset", "load_image_folder", "register_dataset"]
