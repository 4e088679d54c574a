"""Datasets (uint8 tensors, decoded once) and the batch loaders: device-resident, or streamed from
host memory when the dataset does not fit on the device."""

from contrastkit.data.datasets import (DATASETS, DatasetSplits, ImageDataset, list_datasets, load_dataset,
                                       load_image_folder, load_jpeg_archive, register_dataset)
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.host_loader import HostLoader, create_loader

__all__ = ["DATASETS", "DatasetSplits", "DeviceLoader", "HostLoader", "ImageDataset", "create_loader",
           "list_datasets", "load_dataset", "load_image_folder", "load_jpeg_archive", "register_dataset"]
