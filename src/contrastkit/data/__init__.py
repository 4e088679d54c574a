"""Datasets (images as uint8 tensors decoded once; sentences, pairs and scored pairs as text) and
the batch loaders: device-resident or streamed from host memory for images, sentence lists for text."""

from contrastkit.data.datasets import (DATASETS, DatasetSplits, ImageDataset, list_datasets, load_dataset,
                                       load_image_folder, load_jpeg_archive, register_dataset)
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.host_loader import HostLoader, create_loader
from contrastkit.data.text import TextDataset, TextSplits, list_text_datasets, load_text_dataset
from contrastkit.data.text_loader import TextLoader

__all__ = ["DATASETS", "DatasetSplits", "DeviceLoader", "HostLoader", "ImageDataset", "TextDataset", "TextLoader",
           "TextSplits", "create_loader", "list_datasets", "list_text_datasets", "load_dataset", "load_image_folder",
           "load_jpeg_archive", "load_text_dataset", "register_dataset"]
