"""Images with samples wider than 8 bits (16-bit PNGs, 32-bit integer and float TIFFs) are scaled to
uint8, never clipped, and ranges the loader cannot scale without guessing are refused."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.data import load_dataset
from contrastkit.errors import DatasetError

# 16-bit test values: the ends, 8-bit data stored as v * 257, and values between two 8-bit levels.
WIDE = np.array([[0, 255, 257, 1000], [30000, 32896, 65280, 65535]], dtype=np.uint16)
WIDE_AS_8BIT = WIDE >> 8  # the documented rule: keep the high byte, as Pillow does for 16-bit colour


def _png_16bit_rgb(path: Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) uint16 array as a 16-bit RGB PNG: Pillow has no mode that can save one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits per sample, colour type RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _split_folder(root: Path) -> tuple[Path, Path]:
    """A train/test tree, so that images come back in file-name order rather than shuffled."""
    train, test = root / "train" / "a", root / "test" / "a"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    Image.new("RGB", WIDE.shape[::-1], (7, 8, 9)).save(test / "0.png")
    return train, test


def _greyscale(array: np.ndarray) -> torch.Tensor:
    """What the loader returns for a greyscale image: the same uint8 plane in all three channels."""
    return torch.from_numpy(np.asarray(array, dtype=np.uint8)).expand(3, *array.shape)


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16B", ".tif"), ("I", ".tif")])
def test_16bit_greyscale_images_are_scaled_not_clipped(tmp_path, mode, suffix):
    train, _ = _split_folder(tmp_path)
    array = WIDE.astype({"I;16": "<u2", "I;16B": ">u2", "I": np.int32}[mode])
    Image.fromarray(array).save(train / f"0{suffix}")
    with Image.open(train / f"0{suffix}") as written:
        assert written.mode == mode  # the file really has the mode under test
    splits = load_dataset(str(tmp_path))
    assert torch.equal(splits.train.images[0], _greyscale(WIDE_AS_8BIT))


def test_a_folder_mixing_8bit_and_16bit_images_loads_each_correctly(tmp_path):
    train, _ = _split_folder(tmp_path)
    rgb_8bit = np.arange(24, dtype=np.uint8).reshape(2, 4, 3) * 10
    rgb_16bit = np.stack([WIDE, WIDE[::-1], 65535 - WIDE], axis=-1)
    Image.fromarray(rgb_8bit).save(train / "0_rgb8.png")
    Image.fromarray(WIDE).save(train / "1_grey16.png")
    _png_16bit_rgb(train / "2_rgb16.png", rgb_16bit)
    Image.fromarray(WIDE_AS_8BIT.astype(np.uint8)).save(train / "3_grey8.png")
    splits = load_dataset(str(tmp_path))
    images = splits.train.images
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 2, 4) and splits.skipped == 0
    assert torch.equal(images[0], torch.from_numpy(rgb_8bit).permute(2, 0, 1))
    assert torch.equal(images[1], _greyscale(WIDE_AS_8BIT))
    assert torch.equal(images[2], torch.from_numpy((rgb_16bit >> 8).astype(np.uint8)).permute(2, 0, 1))
    assert torch.equal(images[3], images[1])  # a 16-bit image and its 8-bit version load alike
    # Cropping and resizing happen after the scaling, exactly as for the 8-bit version of the file.
    resized = load_dataset(str(tmp_path), image_size=2).train.images
    assert torch.equal(resized[1], resized[3])


def test_float_images_in_0_1_are_scaled_to_0_255(tmp_path):
    train, _ = _split_folder(tmp_path)
    values = np.array([[0.0, 0.001, 0.2, 0.25], [0.33, 0.61, 0.999, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(train / "0.tif")
    with Image.open(train / "0.tif") as written:
        assert written.mode == "F"
    splits = load_dataset(str(tmp_path))
    expected = np.array([[0, 0, 51, 64], [84, 156, 255, 255]])  # round(x * 255), no ties at .5
    assert torch.equal(splits.train.images[0], _greyscale(expected))


@pytest.mark.parametrize("array, shown_range", [
    (np.array([[0.0, 0.5], [2.0, 1000.0]], dtype=np.float32), "[0, 1000]"),
    (np.array([[-1.0, 0.5], [0.25, 1.0]], dtype=np.float32), "[-1, 1]"),
    (np.array([[0.0, np.nan], [0.25, 1.0]], dtype=np.float32), "nan"),
    (np.array([[0, 70_000], [5, 9]], dtype=np.int32), "[0, 70000]"),
    (np.array([[-3, 100], [5, 9]], dtype=np.int32), "[-3, 100]"),
])
def test_images_whose_range_would_need_a_guess_are_refused(tmp_path, array, shown_range):
    train, _ = _split_folder(tmp_path)
    Image.new("L", (2, 2)).save(train / "0.png")  # an ordinary image beside it does not hide the problem
    Image.fromarray(array).save(train / "1_wide.tif")
    with pytest.raises(DatasetError) as raised:
        load_dataset(str(tmp_path))
    message = str(raised.value)
    assert "1_wide.tif" in message and f"mode {Image.fromarray(array).mode}" in message
    assert shown_range in message and "8-bit" in message
