"""Image datasets streamed from their files: read and decoded a batch at a time, never held whole.

A dataset decoded once into memory (:mod:`contrastkit.data.datasets`) is fastest while it fits;
ImageNet at 256 px would need about 250 GB before the first step. Here a split stays encoded on
disk and only its index is kept: the file of every image of an ImageFolder tree, or the byte range
of every image in a set of WebDataset-style tar shards (``NNN.jpg`` + ``NNN.cls`` members), a few
dozen bytes per image. The epoch order is the in-memory loaders' rule (a permutation drawn from
(seed, epoch), each process taking its slice of every global batch), so a streamed run sees the
same batches as a resident one, and ``--resume`` restarts at an epoch boundary in the same order.

:class:`StreamedImages` stands where a uint8 image tensor stands in :class:`ImageDataset`
(``shape``, ``len``, indexing decodes the images asked for), so evaluation and embedding read it
unchanged. :class:`StreamLoader` reads the encoded bytes of the next batches in background threads
while the current one trains, and decodes each batch:

* on a CUDA device, JPEGs in one batched nvJPEG call (``torchvision.io.decode_jpeg(...,
  device="cuda")``), centre-cropped and resized to the storage size there; anything nvJPEG cannot
  read (PNG, CMYK, a damaged file) falls back to the CPU decoder;
* on the CPU, with the same Pillow decoder, crop and resize as the in-memory path, so the images
  are byte-identical to those :func:`load_image_folder` would hold.

Host memory is bounded by the batches in flight (``prefetch``), whatever the dataset's size. A file
that cannot be decoded at all is skipped and counted (``skipped``, one warning): its slot in the
batch takes another image of the same batch, so every batch keeps its size (what a compiled step
and the processes' equal shares need).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import tarfile
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.data.device_loader import BatchLoader
from contrastkit.data.images import (IMAGE_EXTENSIONS, UNREADABLE_IMAGES_ADVICE, DatasetSplits, ImageDataset,
                                     _channel_stats, decode_image, default_preset, fixed_split, image_folder_files,
                                     image_folder_layout, no_readable_images)
from contrastkit.errors import ConfigError, DatasetError

# Every JPEG starts with a start-of-image marker followed by another marker.
JPEG_MAGIC = b"\xff\xd8\xff"
SHARD_SUFFIX = ".tar"


class FileSource:
    """The encoded bytes of one image per file (an ImageFolder tree's files)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> bytes:
        with open(self.paths[index], "rb") as file:
            return file.read()

    def describe(self, index: int) -> str:
        return self.paths[index]


class ShardSource:
    """The encoded bytes of images stored as members of uncompressed tar shards, read by byte range
    (``os.pread``), so any image is one read wherever it sits."""

    def __init__(self, shards: Sequence[str], shard_index: Tensor, offsets: Tensor, sizes: Tensor) -> None:
        self.shards = list(shards)
        self.shard_index, self.offsets, self.sizes = shard_index, offsets, sizes

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, index: int) -> bytes:
        descriptor = os.open(self.shards[int(self.shard_index[index])], os.O_RDONLY)
        try:
            return os.pread(descriptor, int(self.sizes[index]), int(self.offsets[index]))
        finally:
            os.close(descriptor)

    def describe(self, index: int) -> str:
        return f"{self.shards[int(self.shard_index[index])]} (member at byte {int(self.offsets[index])})"


Source = FileSource | ShardSource


class _NamedBytes(io.BytesIO):
    """Encoded bytes that name their file in a decoder's error message (Pillow prints the repr)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self._name = name

    def __repr__(self) -> str:
        return f"<{self._name}>"


def fit_to_size(images: Sequence[Tensor], size: int) -> list[Tensor]:
    """(3, H, W) uint8 images to (3, size, size): the centre square, bicubic-resized (antialiased),
    as the CPU decoder crops and resizes; images already size x size are kept as they are.

    Images of one shape are resized together, in one call (photo collections come in few shapes:
    500x375 and 375x500 are most of ImageNet), so a batch costs a few kernel launches, not a few per
    image.
    """
    fitted: list[Tensor | None] = [None] * len(images)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(images):
        shapes.setdefault(tuple(image.shape), []).append(position)
    for (_, height, width), positions in shapes.items():
        if (height, width) == (size, size):
            for position in positions:
                fitted[position] = images[position]
            continue
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        squares = torch.stack([images[position] for position in positions])[:, :, top:top + side, left:left + side]
        resized = F.interpolate(squares.float(), size=(size, size), mode="bicubic", antialias=True,
                                align_corners=False)
        for position, image in zip(positions, resized.round_().clamp_(0, 255).to(torch.uint8)):
            fitted[position] = image
    return fitted  # type: ignore[return-value]


class StreamedImages:
    """uint8 images (N, 3, size, size) kept encoded in their files and decoded when indexed.

    Indexing with an int, a slice, a list or a 1-D tensor decodes those images (on
    ``decode_device``) and returns them stacked; ``decode(indices, device)`` does the same for a
    loader. Images are centre-cropped and resized to ``size`` as the in-memory path does.

    Example:
        >>> images = load_dataset("imagenet/", image_size=64, placement="stream").train.images  # doctest: +SKIP
        >>> images.shape, images[:8].shape  # doctest: +SKIP
        (torch.Size([1281167, 3, 64, 64]), torch.Size([8, 3, 64, 64]))
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, source: Source, size: int, *, where: str, workers: int | None = None) -> None:
        if len(source) == 0:
            raise DatasetError(f"no images found in {where}.")
        if size < 1:
            raise ConfigError(f"the streamed images' size must be >= 1, got {size}.")
        self.source = source
        self.size = size
        self.where = where
        self.shape = torch.Size((len(source), 3, size, size))
        self.decode_device = torch.device("cpu")
        self.skipped: set[int] = set()
        self.device_decoding = True  # set to False when a CUDA device cannot decode JPEGs at all
        self._workers = workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """The bytes the split would take decoded in memory."""
        return self.shape.numel()

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Tensor:
        if isinstance(index, int):
            return self.decode([index], self.decode_device)[0]
        if isinstance(index, slice):
            indices = list(range(*index.indices(len(self))))
        else:
            indices = torch.as_tensor(index).reshape(-1).tolist()
        return self.decode(indices, self.decode_device)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="contrastkit-read")
        return self._pool

    def read(self, indices: Sequence[int]) -> list[bytes]:
        """The encoded bytes of the images at ``indices``, read in threads."""
        return list(self._executor().map(self.source.read, indices))

    def decode(self, indices: Sequence[int], device: str | torch.device = "cpu") -> Tensor:
        """The images at ``indices`` as uint8 (B, 3, size, size) on ``device`` (decoded there when
        it is a CUDA device: JPEGs by nvJPEG, anything else on the CPU)."""
        if len(indices) == 0:
            raise ConfigError("decode needs at least one index.")
        device = torch.device(device)
        encoded = self.read(indices)
        images: list[Tensor | None] = [None] * len(encoded)
        if device.type == "cuda":
            self._decode_jpegs_on_device(encoded, images, device)
        on_cpu = [position for position, image in enumerate(images) if image is None]
        decoded = self._executor().map(
            lambda position: decode_image(_NamedBytes(encoded[position], self.source.describe(indices[position])),
                                          self.size, self.source.describe(indices[position])), on_cpu)
        failed = []
        for position, array in zip(on_cpu, decoded):
            if isinstance(array, Exception):
                failed.append((position, array))
            else:
                images[position] = torch.from_numpy(array).permute(2, 0, 1).to(device, non_blocking=True)
        if failed:
            self._fill_unreadable(indices, images, failed)
        return torch.stack(images)  # type: ignore[arg-type]

    def _decode_jpegs_on_device(self, encoded: list[bytes], images: list[Tensor | None], device: torch.device) -> None:
        from torchvision.io import ImageReadMode, decode_jpeg

        jpegs = [position for position, data in enumerate(encoded) if data.startswith(JPEG_MAGIC)]
        if not jpegs or not self.device_decoding:
            return
        buffers = [torch.frombuffer(bytearray(encoded[position]), dtype=torch.uint8) for position in jpegs]
        # nvJPEG's hardware decoder writes its outputs without waiting for the work queued on this
        # stream, and the caching allocator hands it blocks that queued kernels may still read (freed
        # here, e.g. the previous batch's resize buffers): pytorch/vision#9606. Drain the stream first;
        # in the loader's background thread this waits on its own decode work only.
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        try:
            decoded = decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as error:
            # One file nvJPEG cannot read fails the whole batched call: decode one by one, and leave
            # those it refuses to the CPU decoder.
            decoded = []
            for buffer in buffers:
                try:
                    decoded.append(decode_jpeg(buffer, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
            if all(image is None for image in decoded) and len(decoded) > 1:
                self.device_decoding = False
                warnings.warn(f"decoding JPEGs on {device} failed for a whole batch ({error}); decoding on the CPU "
                              "from now on.", stacklevel=5)
        readable = [(position, image) for position, image in zip(jpegs, decoded) if image is not None]
        fitted = fit_to_size([image for _, image in readable], self.size)
        for (position, _), image in zip(readable, fitted):
            images[position] = image

    def _fill_unreadable(self, indices: Sequence[int], images: list[Tensor | None],
                         failed: list[tuple[int, Exception]]) -> None:
        readable = [image for image in images if image is not None]
        if not readable:
            position, error = failed[0]
            raise DatasetError(f"none of the {len(indices)} images of a batch from {self.where} could be decoded, "
                               f"e.g. {self.source.describe(indices[position])}: {error}; {UNREADABLE_IMAGES_ADVICE}")
        new = [(position, error) for position, error in failed if indices[position] not in self.skipped]
        if new:
            position, error = new[0]
            warnings.warn(f"skipped {len(new)} unreadable image(s) of {self.where}, e.g. "
                          f"{self.source.describe(indices[position])}: {error}; each slot takes another image of "
                          "its batch (counted in skipped).", stacklevel=4)
        for position, _ in failed:
            self.skipped.add(indices[position])
            images[position] = readable[position % len(readable)]

    def close(self) -> None:
        """Stop the reading threads (they start again when needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class StreamLoader(BatchLoader):
    """Shuffled (images, labels) batches of :class:`StreamedImages`, read and decoded ahead.

    The batches are those of :class:`DeviceLoader` for the same seed (the same indices, each
    process its slice), decoded on ``device`` when it is a CUDA device and ``decode="auto"``, on
    the CPU with ``decode="cpu"``. ``prefetch`` batches are read and decoded ahead by a background
    thread while the current one trains; on CUDA the decode runs on its own stream.

    Example:
        >>> splits = load_dataset("imagenet/", image_size=224, placement="stream")  # doctest: +SKIP
        >>> loader = StreamLoader(splits.train.images, splits.train.labels, 256, device="cuda")  # doctest: +SKIP
        >>> for images, labels in loader.epoch(0): ...  # doctest: +SKIP
    """

    def __init__(self, images: StreamedImages, labels: Tensor, batch_size: int, *,
                 device: str | torch.device = "cpu", seed: int = 0, drop_last: bool = True, prefetch: int = 4,
                 decode: str = "auto", rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(len(images), batch_size, device=device, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        if len(labels) != len(images):
            raise DatasetError(f"{len(labels)} labels for {len(images)} streamed images; they must pair up.")
        if prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1, got {prefetch}.")
        if decode not in ("auto", "cpu"):
            raise ConfigError(f"decode must be auto (on the training device) or cpu, got {decode!r}.")
        self.images, self.labels = images, labels.cpu()
        self.prefetch = prefetch
        self.decode_device = self.device if decode == "auto" else torch.device("cpu")

    @property
    def skipped(self) -> int:
        """Unreadable images met so far (each counted once)."""
        return len(self.images.skipped)

    def _load(self, index: Tensor, stream: "torch.cuda.Stream | None") -> tuple[Tensor, Tensor, object]:
        context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with context:
            images = self.images.decode(index.tolist(), self.decode_device)
            # Decoded on the CPU for a CUDA device: copy from pinned memory. (Compared by type:
            # "cuda" and the "cuda:0" a decoded batch reports are the same device.)
            if images.device.type != self.device.type:
                images = images.pin_memory().to(self.device, non_blocking=True)
            labels = self.labels.index_select(0, index).to(self.device, non_blocking=True)
            ready = stream.record_event() if stream is not None else None
        return images, labels, ready

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self.batch_indices(epoch)
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="contrastkit-stream") as pool:
            pending: deque[Future] = deque(pool.submit(self._load, index, side) for index in batches[:self.prefetch])
            queued = len(pending)
            while pending:
                images, labels, ready = pending.popleft().result()
                if queued < len(batches):
                    pending.append(pool.submit(self._load, batches[queued], side))
                    queued += 1
                if ready is not None:
                    compute = torch.cuda.current_stream(self.device)
                    compute.wait_event(ready)
                    images.record_stream(compute)
                    labels.record_stream(compute)
                yield images, labels


# ----------------------------------------------------------------------------- opening a split


def probe_size(source: Source, where: str) -> tuple[int, int]:
    """(width, height) of the first decodable image of a non-empty ``source``, from its header.

    Files that are not decodable images are passed over silently: the decoder meets them again and
    skips, counts and warns about them as it does anywhere in the split, so one warning names them.
    Only when none is decodable is it an error (DatasetError naming ``where``). A file that cannot
    be read at all (no permission, gone) is not a damaged image but a problem with the folder, so
    it raises DatasetError naming the file rather than being skipped.
    """
    from PIL import Image

    first_error: Exception | None = None
    for index in range(len(source)):
        try:
            data = source.read(index)
        except OSError as error:
            raise DatasetError(f"cannot read {source.describe(index)} ({error.strerror or error}); check that "
                               f"{where} and the files in it can be read by this user.") from None
        try:
            with Image.open(_NamedBytes(data, source.describe(index))) as image:
                return image.size
        except Exception as error:  # Pillow raises several types (OSError, SyntaxError, ...) for bad data
            first_error = first_error or error
    raise no_readable_images(len(source), where, source.describe(0), first_error)


def _shard_split(path: Path) -> str | None:
    name = path.name.lower()
    return next((split for split, prefixes in (("train", ("train",)), ("test", ("test", "val")))
                 if name.startswith(prefixes)), None)


def list_shards(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The tar shards of a folder by split: ``train*.tar`` for training, ``test*.tar`` or
    ``val*.tar`` for testing; shards with neither prefix form one pool under "all"."""
    shards: dict[str, list[str]] = {}
    for path in sorted(Path(folder).glob(f"*{SHARD_SUFFIX}")):
        shards.setdefault(_shard_split(path) or "all", []).append(str(path))
    return shards


def index_shards(shards: Sequence[str]) -> tuple[ShardSource, Tensor, int]:
    """Index the images of tar shards: the byte range of each image member and its label (the
    non-negative integer text of the ``.cls`` member with the same key; -1 without one). Returns
    the source, the labels and the number of image members without a readable label."""
    shard_index, offsets, sizes, labels, unlabeled = [], [], [], [], 0
    for number, shard in enumerate(shards):
        images: dict[str, tuple[int, int]] = {}
        classes: dict[str, int] = {}
        try:
            with tarfile.open(shard, mode="r:") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    key, _, extension = member.name.rpartition(".")
                    if "." + extension.lower() in IMAGE_EXTENSIONS:
                        images[key] = (member.offset_data, member.size)
                    elif extension == "cls":
                        text = archive.extractfile(member).read().decode("utf-8", "replace").strip()
                        if re.fullmatch(r"\d+", text):  # a class index; anything else is no label
                            classes[key] = int(text)
        except tarfile.TarError as error:
            raise DatasetError(f"{shard} is not a readable uncompressed tar shard ({error}); pack an ImageFolder "
                               "tree with `contrastkit pack-shards SRC DST`.") from None
        for key, (offset, size) in images.items():
            shard_index.append(number)
            offsets.append(offset)
            sizes.append(size)
            labels.append(classes.get(key, -1))
            unlabeled += key not in classes
    source = ShardSource(shards, torch.tensor(shard_index, dtype=torch.int32),
                         torch.tensor(offsets, dtype=torch.int64), torch.tensor(sizes, dtype=torch.int64))
    return source, torch.tensor(labels, dtype=torch.int64), unlabeled


def write_shards(samples: Sequence[tuple[str, int]], destination: str | os.PathLike, prefix: str, *,
                 shard_size: int = 1000) -> list[Path]:
    """Write (image file, label) samples in order into ``prefix-000000.tar``... of ``shard_size``
    samples each: ``NNNNNNNN.<ext>`` holds the file's bytes, ``NNNNNNNN.cls`` its label. Each shard
    is written to a temporary name and renamed, so a shard that exists is complete."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}.")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for number, start in enumerate(range(0, len(samples), shard_size)):
        path = destination / f"{prefix}-{number:06d}{SHARD_SUFFIX}"
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, mode="w:", format=tarfile.USTAR_FORMAT) as archive:
            for key, (file, label) in enumerate(samples[start:start + shard_size], start=start):
                extension = Path(file).suffix.lower().replace(".jpeg", ".jpg")
                archive.add(file, arcname=f"{key:08d}{extension}")
                _add_bytes(archive, f"{key:08d}.cls", str(label).encode())
        os.replace(partial, path)
        written.append(path)
    return written


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def pack_shards(source: str | os.PathLike, destination: str | os.PathLike, *, shard_size: int = 1000,
                shuffle: bool = True, seed: int = 0, test_fraction: float = 0.1) -> dict[str, list[Path]]:
    """Pack an ImageFolder tree into tar shards a streamed run reads (``contrastkit pack-shards``).

    ``source/train/<class>/*`` with ``source/test`` (or ``val``) become ``train-*.tar`` and
    ``test-*.tar``; a tree of class folders alone is split as :func:`load_image_folder` splits it
    (``test_fraction`` of it, drawn with a fixed seed, for testing). The class names go to
    ``classes.txt`` (line k names label k). With ``shuffle``, each split's samples are shuffled
    (from ``seed``) before packing, so a reader going shard by shard also sees mixed classes.

    Example:
        >>> pack_shards("imagenet/", "imagenet-shards/", shard_size=5000)  # doctest: +SKIP
        {'train': [PosixPath('imagenet-shards/train-000000.tar'), ...], 'test': [...]}
    """
    layout = image_folder_layout(source)
    tree, target = Path(source).resolve(), Path(destination).resolve()
    if target == tree or tree in target.parents:
        # The shards would be read back as images of the tree (and its classes) on the next pack or load.
        raise ConfigError(f"the destination {destination} lies inside the source tree {source}; pack into a folder "
                          "outside it.")
    if Path(destination).is_dir() and any(Path(destination).glob(f"*{SHARD_SUFFIX}")):
        raise ConfigError(f"{destination} already holds shards; pack into an empty folder, so that no old shard "
                          "joins the new set.")
    files = {split: image_folder_files(folder, layout.classes) for split, folder in layout.splits.items()}
    if "test" not in files:
        # The fixed cut that load_image_folder makes of such a tree.
        test_rows, train_rows = fixed_split(len(files["train"]), test_fraction)
        files = {"train": [files["train"][row] for row in train_rows],
                 "test": [files["train"][row] for row in test_rows]}
    written: dict[str, list[Path]] = {}
    for split, samples in files.items():
        if shuffle:
            random.Random(seed).shuffle(samples)
        written[split] = write_shards(samples, destination, split, shard_size=shard_size)
    (Path(destination) / "classes.txt").write_text("".join(name + "\n" for name in layout.classes))
    return written


def stream_size(source: Source, size: int | None, where: str) -> int:
    """The side images are stored at when streamed: ``size``, or the side of the first readable
    image when it is square; a first image that is not square needs ``size`` (the images differ in
    shape)."""
    if size is not None:
        return size
    width, height = probe_size(source, where)
    if width != height:
        raise DatasetError(f"the images of {where} are not square ({width}x{height} for the first), and streamed "
                           "images are stored at one size; set image_size=N (e.g. 256) to centre-crop and resize "
                           "them to N x N.")
    return width


def _shard_labels(labels: Tensor, unlabeled: int, where: str) -> Tensor:
    if unlabeled == 0:
        return labels
    if unlabeled == len(labels):
        return torch.zeros_like(labels)  # unlabeled data: one class, which the probes skip
    raise DatasetError(f"{unlabeled} of the {len(labels)} images in {where} have no .cls member with an integer "
                       "label; give every image one (or none, for unlabeled data).")


def streamed_splits(name: str, train: ImageDataset, test: ImageDataset, classes: list[str]) -> DatasetSplits:
    """DatasetSplits of streamed images, with the channel statistics the decoded path computes
    (so a streamed run normalises, and trains, exactly as a resident one)."""
    mean, std = _channel_stats(train.images)
    return DatasetSplits(name, train, test, classes, mean, std, default_preset(train.images.shape[-1]))


def load_shards(folder: str | os.PathLike, *, image_size: int | None = None,
                test_fraction: float = 0.1) -> DatasetSplits:
    """A folder of WebDataset-style tar shards, streamed: ``train*.tar`` and ``test*.tar`` (or
    ``val*.tar``) as the splits, or shards with neither prefix split into train and test with a
    fixed seed. Labels come from each image's ``.cls`` member, class names from ``classes.txt``
    (line k names label k) when the folder has one.

    Example:
        >>> splits = load_shards("imagenet-shards/", image_size=224)  # doctest: +SKIP
    """
    root = Path(folder)
    shards = list_shards(root)
    if not shards:
        raise DatasetError(f"{root} holds no {SHARD_SUFFIX} shards; pack an ImageFolder tree into shards with "
                           "`contrastkit pack-shards SRC DST`.")
    if "all" in shards and ("train" in shards or "test" in shards):
        raise DatasetError(f"{root} mixes shards named train*/test*/val* with others ({Path(shards['all'][0]).name}); "
                           "name every shard by its split, or none of them.")
    if "train" not in shards and "all" not in shards:
        raise DatasetError(f"{root} has test shards but no train*.tar shards to train on.")
    indexed = {split: index_shards(paths) for split, paths in shards.items()}
    size = None
    datasets = {}
    for split, (source, labels, unlabeled) in indexed.items():
        if len(source) == 0:
            raise DatasetError(f"the {split} shards of {root} hold no images (extensions: .jpg, .png, ...).")
        size = size or stream_size(source, image_size, f"{root} ({split})")
        datasets[split] = (source, _shard_labels(labels, unlabeled, f"{root} ({split})"))
    if "all" in datasets:
        source, labels = datasets.pop("all")
        test_rows, train_rows = fixed_split(len(source), test_fraction)
        for split, rows in (("train", train_rows), ("test", test_rows)):
            datasets[split] = (ShardSource(source.shards, source.shard_index[rows], source.offsets[rows],
                                           source.sizes[rows]), labels[rows])
    if "test" not in datasets:
        raise DatasetError(f"{root} has train shards but no test*.tar or val*.tar shards to evaluate on.")
    classes_file = root / "classes.txt"
    count = int(max(labels.max() for _, labels in datasets.values())) + 1
    classes = classes_file.read_text().splitlines() if classes_file.is_file() else [str(k) for k in range(count)]
    if len(classes) < count:
        raise DatasetError(f"{classes_file} names {len(classes)} classes, but the shards hold label {count - 1}; "
                           "write one class name per label.")
    streamed = {split: ImageDataset(StreamedImages(source, size, where=f"{root} ({split})"), labels)
                for split, (source, labels) in datasets.items()}
    return streamed_splits(root.name, streamed["train"], streamed["test"], classes)
