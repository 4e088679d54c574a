"""Datasets (images as uint8 tensors decoded once, or streamed from their files; sentences, pairs and
scored pairs as text; images with captions) and the batch loaders: device-resident, from pinned host
memory or streamed from files for images, sentence lists for text, images with their candidate
caption ids for image-text."""

from contrastkit.data.atariari import (RAM_ANNOTATIONS, AtariARIEpisodes, annotated_games, collect_atariari_episodes,
                                       ram_labels)
from contrastkit.data.datasets import list_datasets, load_dataset, load_image_folder, load_jpeg_archive
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.host_loader import HostLoader, create_loader
from contrastkit.data.image_text import (CaptionedLoader, ImageTextSplits, captions_from_classes, load_caption_table,
                                         load_image_text_dataset)
from contrastkit.data.images import DATASETS, DatasetSplits, ImageDataset, register_dataset
from contrastkit.data.streaming import StreamedImages, StreamLoader, load_shards, pack_shards
from contrastkit.data.text import TextDataset, TextSplits, list_text_datasets, load_text_dataset
from contrastkit.data.text_loader import TextLoader

__all__ = ["DATASETS", "CaptionedLoader", "DatasetSplits", "DeviceLoader", "HostLoader", "ImageDataset",
           "ImageTextSplits", "StreamLoader", "StreamedImages", "TextDataset", "TextLoader", "TextSplits",
           "captions_from_classes", "create_loader", "list_datasets", "list_text_datasets", "load_caption_table",
           "load_dataset", "load_image_folder", "load_image_text_dataset", "load_jpeg_archive", "load_shards",
           "load_text_dataset", "pack_shards", "register_dataset",
           "RAM_ANNOTATIONS", "AtariARIEpisodes", "annotated_games", "collect_atariari_episodes", "ram_labels"]
