"""Image-caption datasets: images held as uint8 tensors (as for images alone) with captions.

Two sources:

* any labelled image dataset (``cifar10``, ``digits``, ``mnist``, an ImageFolder tree), captioned
  from its class names by prompt templates ("a photo of a {}."): each image's candidate captions
  are its class's prompts, one drawn per step. The same templates make the zero-shot classifier.
* a caption table, ``.csv`` or ``.tsv`` with a header naming an image column (``image``,
  ``image_path``, ``filepath``, ``file``, ``path`` or ``filename``; paths relative to the table's
  folder) and a caption column (``caption``, ``text``, ``title`` or ``sentence``), and optionally
  a ``split`` column (``train`` / ``test``) whose test rows are held out for retrieval scores.

Captions are stored once each (:attr:`ImageTextSplits.captions`), and every image holds the ids of
its candidate captions (-1 pads the rows of images with fewer). Equal captions share one id, which
is what lets the losses count them as positives of each other.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from contrastkit.data.datasets import load_dataset
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.data.images import DatasetSplits, ImageDataset, _channel_stats, decode_images, is_cifar_size
from contrastkit.errors import DatasetError

# Prompts for photos of objects; several per class, so an image tower does not learn one sentence.
PHOTO_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a small photo of the {}.",
                   "a close-up photo of a {}.", "a low-resolution photo of a {}.", "a cropped photo of the {}.",
                   "a bright photo of a {}.", "a dark photo of the {}.")
# Digit datasets (class names "0".."9") are prompted with the digit's name.
DIGIT_TEMPLATES = ("a handwritten digit {}.", "the number {}.", "a photo of the digit {}.",
                   "a scanned image of the number {}.")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_COLUMNS = ("image", "image_path", "filepath", "file", "path", "filename")
CAPTION_COLUMNS = ("caption", "text", "title", "sentence")


@dataclass
class ImageTextSplits(DatasetSplits):
    """An image dataset's splits with their captions.

    ``train_captions`` / ``test_captions`` are (N, K) int64 caption ids per image (-1 where an image
    has fewer than K candidates). ``templates`` and ``prompt_names`` (one per class) build the
    zero-shot classifier of class-captioned data; they are empty for a caption table.
    """

    captions: list[str] = field(default_factory=list)
    train_captions: Tensor = field(default_factory=lambda: torch.empty(0, 1, dtype=torch.long))
    test_captions: Tensor | None = None
    templates: tuple[str, ...] = ()
    prompt_names: list[str] = field(default_factory=list)

    @property
    def captions_per_class(self) -> bool:
        """Whether the captions come from class prompts (zero-shot applies) rather than a table."""
        return bool(self.templates)


def prompt_names(classes: Sequence[str]) -> list[str]:
    """Class names as a caption says them: digits by name, underscores as spaces."""
    if all(name in "0123456789" and len(name) == 1 for name in classes):
        return [DIGIT_NAMES[int(name)] for name in classes]
    return [name.replace("_", " ") for name in classes]


def default_templates(classes: Sequence[str]) -> tuple[str, ...]:
    digits = all(name in "0123456789" and len(name) == 1 for name in classes)
    return DIGIT_TEMPLATES if digits else PHOTO_TEMPLATES


def read_templates(path: str | os.PathLike) -> tuple[str, ...]:
    """Templates from a text file, one per line, each with one ``{}`` for the class name."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"caption template file {path} does not exist; give a .txt file with one template per "
                           "line, e.g. 'a photo of a {}.'.")
    templates = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    bad = [template for template in templates if template.count("{}") != 1]
    if not templates or bad:
        raise DatasetError(f"every caption template in {path} needs exactly one {{}} for the class name"
                           + (f", e.g. not {bad[0]!r}." if bad else "; the file holds none."))
    return templates


def captions_from_classes(splits: DatasetSplits, templates: Sequence[str] | None = None) -> ImageTextSplits:
    """Caption a labelled image dataset with every template for each class (see the module docstring).

    Example:
        >>> from contrastkit.data import load_dataset
        >>> captioned = captions_from_classes(load_dataset("digits"))
        >>> captioned.captions[0], captioned.train_captions.shape[1]
        ('a handwritten digit zero.', 4)
    """
    if len(splits.classes) < 2:
        raise DatasetError(f"{splits.name} has {len(splits.classes)} class, so class prompts cannot caption it; "
                           "give a labelled dataset (one folder per class) or a caption table (.csv/.tsv).")
    templates = tuple(templates or default_templates(splits.classes))
    names = prompt_names(splits.classes)
    captions = [template.format(name) for name in names for template in templates]
    class_captions = torch.arange(len(captions)).view(len(names), len(templates))
    return ImageTextSplits(splits.name, splits.train, splits.test, splits.classes, splits.mean, splits.std,
                           splits.default_preset, splits.skipped, captions=captions,
                           train_captions=class_captions[splits.train.labels],
                           test_captions=class_captions[splits.test.labels], templates=templates,
                           prompt_names=names)


def is_caption_table(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a .csv/.tsv file whose header names an image column."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".tsv") or not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        header = next(csv.reader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
    return any(name.strip().lower() in IMAGE_COLUMNS for name in header)


def load_caption_table(path: str | os.PathLike, *, image_size: int | None = None) -> ImageTextSplits:
    """Images and captions listed in a .csv/.tsv table (see the module docstring)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's byte-order mark
        rows = list(csv.DictReader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    header = {name.strip().lower(): name for name in (rows[0].keys() if rows else [])}
    image_key = next((header[name] for name in IMAGE_COLUMNS if name in header), None)
    caption_key = next((header[name] for name in CAPTION_COLUMNS if name in header), None)
    if not rows or image_key is None or caption_key is None:
        raise DatasetError(f"{path} must have a header with an image column ({', '.join(IMAGE_COLUMNS)}) and a "
                           f"caption column ({', '.join(CAPTION_COLUMNS)}), and at least one row.")
    split_key = header.get("split")
    splits = [(row.get(split_key) or "train").strip().lower() if split_key else "train" for row in rows]
    unknown = sorted(set(splits) - {"train", "test"})
    if unknown:
        raise DatasetError(f"the split column of {path} holds {unknown[0]!r}; use train or test.")
    files = [str(path.parent / row[image_key].strip()) for row in rows]
    missing = [file for file in files if not Path(file).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {path} do not exist, e.g. {missing[0]}; image paths "
                           "are relative to the table's folder.")
    images, kept = decode_images(files, image_size, path)
    captions: dict[str, int] = {}
    ids = torch.tensor([captions.setdefault(rows[index][caption_key].strip(), len(captions)) for index in kept])
    is_test = torch.tensor([splits[index] == "test" for index in kept])
    if is_test.all():
        raise DatasetError(f"every row of {path} is in the test split; mark the training rows train.")
    labels = torch.zeros(len(kept), dtype=torch.long)  # a table has no classes

    def part(rows: Tensor) -> ImageDataset:
        return ImageDataset(images[rows], labels[rows])

    train, test = part(~is_test), part(is_test) if is_test.any() else None
    mean, std = _channel_stats(train.images)
    preset = "crop_flip" if is_cifar_size(images.shape[-1]) else "simclr_imagenet"
    return ImageTextSplits(path.stem, train, test, [], mean, std, preset,
                           len(files) - len(kept), captions=list(captions), train_captions=ids[~is_test, None],
                           test_captions=ids[is_test, None] if test is not None else None)


def load_image_text_dataset(name_or_path: str, *, root: str | os.PathLike | None = None,
                            image_size: int | None = None, templates: str | os.PathLike | None = None
                            ) -> ImageTextSplits:
    """A caption table by path, or any image dataset captioned from its classes (``templates``: a
    file of prompt templates; unset, the built-in ones)."""
    if is_caption_table(name_or_path):
        if templates:
            raise DatasetError(f"caption templates caption a labelled image dataset from its class names, but "
                               f"{name_or_path} is a caption table with captions of its own; unset "
                               "image_text.caption_templates.")
        return load_caption_table(name_or_path, image_size=image_size)
    splits = load_dataset(name_or_path, root=root, image_size=image_size)
    return captions_from_classes(splits, read_templates(templates) if templates else None)


class CaptionedLoader(DeviceLoader):
    """:class:`DeviceLoader` batches with each image's candidate caption ids:
    ``((images, caption_ids), labels)``, the ids (B, K) padded with -1 and kept on the CPU.

    Example:
        >>> loader = CaptionedLoader(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.arange(6)[:, None],
        ...                          torch.zeros(6, dtype=torch.long), batch_size=3)
        >>> [(images.shape[0], ids.shape) for (images, ids), _ in loader.epoch(0)]
        [(3, torch.Size([3, 1])), (3, torch.Size([3, 1]))]
    """

    def __init__(self, images: Tensor, caption_ids: Tensor, labels: Tensor, batch_size: int, *,
                 device: str | torch.device = "cpu", seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__(images, labels, batch_size, device=device, seed=seed, rank=rank, world_size=world_size)
        # On the CPU: captions are drawn and tokenized there (see ImageTextViews).
        self.caption_ids = caption_ids.cpu()

    def epoch(self, epoch: int) -> Iterator[tuple[tuple[Tensor, Tensor], Tensor]]:
        for index in self.batch_indices(epoch):
            on_device = index.to(self.device, non_blocking=True)
            yield ((self.images.index_select(0, on_device), self.caption_ids.index_select(0, index)),
                   self.labels.index_select(0, on_device))
