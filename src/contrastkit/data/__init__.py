"""Datasets (images as uint8 tensors decoded once; sentences, pairs and scored pairs as text;
images with captions) and the batch loaders: device-resident or streamed from host memory for
images, sentence lists for text, images with their candidate caption ids for image-text."""

from contrastkit.data.datasets import (DATASETS, DatasetSplits, ImageDataset, list_datasets, load_dataset,
                                       load_image_folder, load_jpeg_archive, register_dataset)
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.host_loader import HostLoader, create_loader
from contrastkit.data.image_text import (CaptionedLoader, ImageTextSplits, captions_from_classes, load_caption_table,
                                         load_image_text_dataset)
from contrastkit.data.text import TextDataset, TextSplits, list_text_datasets, load_text_dataset
from contrastkit.data.text_loader import TextLoader

__all__ = ["DATASETS", "CaptionedLoader", "DatasetSplits", "DeviceLoader", "HostLoader", "ImageDataset",
           "ImageTextSplits", "TextDataset", "TextLoader", "TextSplits", "captions_from_classes", "create_loader",
           "list_datasets", "list_text_datasets", "load_caption_table", "load_dataset", "load_image_folder",
           "load_image_text_dataset", "load_jpeg_archive", "load_text_dataset", "register_dataset"]
