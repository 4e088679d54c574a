"""What the two ways of holding an image dataset share: its split types, the registry of named
datasets, the image decoder and the layout of an ImageFolder tree.

:mod:`contrastkit.data.datasets` decodes a dataset whole and :mod:`contrastkit.data.streaming` a batch
at a time from its files; both build on these pieces, and this module imports neither of them, so the
three stack one way (datasets on streaming, both on images).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import DatasetError
from contrastkit.registry import Registry

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# Pillow modes holding greyscale samples wider than 8 bits, which Image.convert clips to 255 instead of
# scaling. Colour images with 16-bit samples never reach these modes: Pillow decodes 16-bit RGB(A)
# PNGs and TIFFs to 8-bit RGB(A) by keeping each sample's high byte.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


# Images up to this side are CIFAR-size: they take a method's CIFAR-size recipe, SimCLR's CIFAR
# augmentation and a ResNet's CIFAR stem; larger ones the ImageNet-size ones.
SMALL_IMAGE_SIDE = 64


def is_cifar_size(side: int | None) -> bool:
    """Whether images of ``side`` pixels are CIFAR-size (side <= 64) rather than ImageNet-size; an
    unknown side counts as ImageNet-size.

    Example:
        >>> is_cifar_size(32), is_cifar_size(224), is_cifar_size(None)
        (True, False, False)
    """
    return side is not None and side <= SMALL_IMAGE_SIDE


def default_preset(side: int) -> str:
    """The augmentation preset of a dataset of ``side``-pixel images that names none of its own."""
    return "simclr_cifar" if is_cifar_size(side) else "simclr_imagenet"


@dataclass
class ImageDataset:
    """uint8 images (N, C, H, W) with int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class DatasetSplits:
    """A dataset's train and test splits with what the augmentations need to know about it."""

    name: str
    train: ImageDataset
    test: ImageDataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_preset: str
    skipped: int = 0  # unreadable files left out

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


# The named datasets, registered by contrastkit.data.datasets; kept here because the error for a
# missing ImageFolder folder lists them, wherever it is raised (loading a dataset or packing shards).
DATASETS: Registry[Callable[..., DatasetSplits]] = Registry("dataset")
register_dataset = DATASETS.register


class SlicedImages(Protocol):
    """uint8 images (N, C, H, W) that a slice returns as a tensor: a Tensor, or
    :class:`~contrastkit.data.streaming.StreamedImages`, which decodes the images sliced (a type this
    module cannot import, since streaming imports it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Tensor: ...


def _channel_stats(images: SlicedImages, max_images: int = 10_000,
                   chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] of the first ``max_images`` images,
    rounded to 4 digits. Summed a chunk at a time in float64, so a streamed split decodes (and
    holds) only ``chunk`` images at once."""
    count, total, squares = 0, 0.0, 0.0
    for start in range(0, min(len(images), max_images), chunk):
        block = images[start:min(start + chunk, max_images)].to(torch.float64) / 255
        count += block.numel() // block.shape[1]
        total = total + block.sum(dim=(0, 2, 3))
        squares = squares + block.square().sum(dim=(0, 2, 3))
    mean = total / count
    std = ((squares - count * mean.square()) / (count - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _to_8bit(image: Image.Image, path: str) -> Image.Image:
    """Scale a greyscale image with samples wider than 8 bits (a mode in _WIDE_MODES) to mode "L".

    16-bit and 32-bit integer samples in [0, 65535] keep their high byte (v >> 8: 65535 -> 255, and
    8-bit data stored as v * 257 comes back unchanged), the rule Pillow applies to 16-bit colour
    files, so that every 16-bit image of a folder is scaled alike. Float samples in [0, 1] become
    round(x * 255). Any other range (negative, beyond 16 bits, float above 1, NaN) raises DatasetError:
    its scale cannot be known from one file, and guessing per image would scale a folder inconsistently.
    """
    from PIL import Image

    array = np.asarray(image)
    low, high = array.min().item(), array.max().item()
    if image.mode == "F":
        if 0 <= low and high <= 1:
            return Image.fromarray(np.rint(array * 255).astype(np.uint8))
    elif 0 <= low and high <= 65535:
        return Image.fromarray((array >> 8).astype(np.uint8))
    raise DatasetError(f"{path} is a mode {image.mode} image with values in [{low:g}, {high:g}]; images "
                       "wider than 8 bits are scaled to 8 bits only when they hold 16-bit integers "
                       "(0 to 65535) or floats in [0, 1], and the scale of this one would be a guess. "
                       "Convert the data set's images to 8-bit (mode L or RGB) files first, with one "
                       "scale chosen for all of them.")


def decode_image(source: str | BinaryIO, image_size: int | None, name: str | None = None) -> np.ndarray | Exception:
    """Decode one image (a path or an open binary file) to (H, W, 3) uint8, centre-cropped and
    resized when image_size is set; unreadable data is returned as the exception.

    Images with samples wider than 8 bits are scaled to 8 bits first as :func:`_to_8bit` documents,
    or refused with DatasetError, which is raised rather than returned: such a file is readable, and
    skipping it as unreadable would hide the problem. ``name`` stands for the source in that message.
    """
    from PIL import Image

    try:
        with Image.open(source) as image:
            if image.mode in _WIDE_MODES:
                image = _to_8bit(image, name or str(source))
            image = image.convert("RGB")
            if image_size is not None and image.size != (image_size, image_size):
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize(
                    (image_size, image_size), Image.Resampling.BICUBIC)
            return np.array(image, dtype=np.uint8)  # writable, so torch can share it
    except DatasetError:
        raise
    except Exception as error:  # PIL raises several types (OSError, SyntaxError, ValueError...) for bad files
        return error


# What to do when no image of a folder (or batch) decodes: usually the files are not images at all.
UNREADABLE_IMAGES_ADVICE = ("check that they are image files (not, say, Git LFS pointers or truncated downloads) "
                            "and copy them again, or point --dataset at the folder that holds the images.")


def no_readable_images(count: int, where: str | os.PathLike, example: str, error: Exception) -> DatasetError:
    """The error for a folder (or list, or shard set) in which no image at all can be decoded."""
    if count == 1:
        return DatasetError(f"the only image in {where}, {example}, could not be decoded ({error}); "
                            + UNREADABLE_IMAGES_ADVICE)
    return DatasetError(f"none of the {count} images in {where} could be decoded, e.g. {example}: {error}; "
                        + UNREADABLE_IMAGES_ADVICE)


def decode_images(paths: Sequence[str], image_size: int | None, where: str | os.PathLike) -> tuple[Tensor, list[int]]:
    """Decode image files in threads to uint8 (N, 3, H, W); also returns the indices of the files
    that were read. Unreadable files are skipped with one warning; ``where`` names their folder or
    list in messages."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = list(pool.map(lambda path: decode_image(path, image_size), paths))
    kept = [index for index, result in enumerate(decoded) if not isinstance(result, Exception)]
    failures = [(path, result) for path, result in zip(paths, decoded) if isinstance(result, Exception)]
    if not kept:  # one error line; a warning that all were skipped would only say it twice
        path, error = failures[0]
        raise no_readable_images(len(paths), where, path, error)
    if failures:
        path, error = failures[0]
        warnings.warn(f"skipped {len(failures)} unreadable image(s) of {len(paths)} in {where}, "
                      f"e.g. {path}: {error}", stacklevel=4)
    sizes = {decoded[index].shape for index in kept}
    if len(sizes) > 1:
        raise DatasetError(f"images in {where} have different sizes ({sorted(sizes)[:3]}...); "
                           "set image_size=N to centre-crop and resize them all to N x N.")
    images = torch.from_numpy(np.stack([decoded[index] for index in kept])).permute(0, 3, 1, 2).contiguous()
    return images, kept


@dataclass
class FolderLayout:
    """An ImageFolder tree's class names and split folders ("train", and "test" when it has one)."""

    root: Path
    classes: list[str]
    splits: dict[str, Path]


def image_folder_layout(path: str | os.PathLike) -> FolderLayout:
    """Read the layout of an ImageFolder tree: ``path/<class>/*``, or ``path/train/<class>/*`` with
    ``path/test`` (or ``path/val``) as the test split."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass a registered dataset name "
                           f"({', '.join(DATASETS.names())}) or the path of an ImageFolder tree.")
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    train_dir = root / "train" if (root / "train").is_dir() and test_dir is not None else root
    classes = sorted(entry.name for entry in train_dir.iterdir() if entry.is_dir())
    if not classes:
        raise DatasetError(f"{train_dir} has no class folders; an ImageFolder tree holds "
                           f"{train_dir}/<class name>/<image>.jpg.")
    splits = {"train": train_dir} if train_dir is root else {"train": train_dir, "test": test_dir}
    return FolderLayout(root, classes, splits)


def image_folder_files(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) of every image file under ``folder/<class>/``, in a fixed (sorted) order."""
    files = [(str(path), index) for index, name in enumerate(classes)
             for path in sorted((folder / name).rglob("*")) if path.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DatasetError(f"no images found in {folder}; an ImageFolder tree holds "
                           f"{folder}/<class name>/<image>.jpg (extensions: {', '.join(IMAGE_EXTENSIONS)}).")
    return files


def fixed_split(count: int, test_fraction: float) -> tuple[Tensor, Tensor]:
    """The fixed split of a tree without a test folder: (test, train) positions."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    cut = max(1, int(count * test_fraction))
    return order[:cut], order[cut:]

