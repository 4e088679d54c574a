"""Streaming image datasets from files: the same images and batches as the decoded path, bounded memory."""

import gc
import hashlib
import json
import re
import sys
import tarfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit import cli, runs
from contrastkit.config import Config, resolve
from contrastkit.data import DeviceLoader, create_loader, load_dataset
from contrastkit.data import datasets as datasets_module
from contrastkit.data.images import _channel_stats
from contrastkit.data.streaming import (FileSource, StreamedImages, StreamLoader, fit_to_size, load_shards,
                                        pack_shards)
from contrastkit.errors import ConfigError, DatasetError
from contrastkit.train import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
from loss_helpers import run_in_process_group  # noqa: E402

CLASSES = ("ant", "bee", "cow")


def photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients with noise: JPEG-compressible like a photograph, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * rng.uniform(0.5, 4), y * rng.uniform(0.5, 4), (x + y) * rng.uniform(0.5, 2)], axis=-1)
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def write_tree(root: Path, per_class: dict[str, int], *, seed: int = 0, side: int = 24) -> Path:
    """root/<split>/<class>/NNN.jpg of mixed shapes (and one PNG per split), JPEG quality 90."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                height, width = (side, side + 6) if index % 3 else (side + 4, side)
                image = Image.fromarray(photo_like(rng, height, width))
                if index == 1 and label == 0:
                    image.save(folder / f"{index:03d}.png")
                else:
                    image.save(folder / f"{index:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    # A few hundred files: 3 classes x (80 train + 20 test).
    return write_tree(tmp_path_factory.mktemp("tree"), {"train": 80, "test": 20})


def test_a_streamed_tree_holds_exactly_the_decoded_images(tree):
    decoded = load_dataset(str(tree), image_size=20, placement="host")
    streamed = load_dataset(str(tree), image_size=20, placement="stream")
    assert isinstance(streamed.train.images, StreamedImages)
    assert streamed.train.images.shape == decoded.train.images.shape == (240, 3, 20, 20)
    assert streamed.classes == decoded.classes == list(CLASSES)
    for split in ("train", "test"):
        assert torch.equal(getattr(streamed, split).images[:], getattr(decoded, split).images)
        assert torch.equal(getattr(streamed, split).labels, getattr(decoded, split).labels)
    picked = torch.tensor([7, 3, 200, 3])
    assert torch.equal(streamed.train.images[picked], decoded.train.images[picked])


def test_a_streamed_split_is_normalised_with_the_decoded_paths_statistics(tmp_path):
    # More than a thousand images, so a statistic taken over a sample of them would differ.
    root = write_tree(tmp_path, {"train": 370, "test": 1}, side=6)
    decoded = load_dataset(str(root), image_size=6, placement="host")
    streamed = load_dataset(str(root), image_size=6, placement="stream")
    assert (streamed.mean, streamed.std) == (decoded.mean, decoded.std)
    assert _channel_stats(decoded.train.images, chunk=7) == (decoded.mean, decoded.std)


def test_a_tree_without_a_test_folder_is_cut_as_the_decoded_path_cuts_it(tree):
    decoded = load_dataset(str(tree / "train"), image_size=16)
    streamed = load_dataset(str(tree / "train"), image_size=16, placement="stream")
    assert torch.equal(streamed.test.images[:], decoded.test.images)
    assert torch.equal(streamed.train.labels, decoded.train.labels)


def batches(loader, epochs=(0, 1)):
    return [(images.clone(), labels.clone()) for epoch in epochs for images, labels in loader.epoch(epoch)]


@pytest.mark.parametrize("rank", [None, 1])
def test_streamed_batches_are_the_resident_batches_for_the_same_seed(tree, rank):
    decoded = load_dataset(str(tree), image_size=20, placement="host")
    streamed = load_dataset(str(tree), image_size=20, placement="stream")
    share = {} if rank is None else {"rank": rank, "world_size": 2}
    resident = DeviceLoader(decoded.train.images, decoded.train.labels, 32, seed=5, **share)
    loader = StreamLoader(streamed.train.images, streamed.train.labels, 32, seed=5, prefetch=2, **share)
    expected, got = batches(resident), batches(loader)
    assert len(got) == len(expected) == 2 * (240 // 32)
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_the_streamed_order_is_reproducible_from_the_seed(tree):
    streamed = load_dataset(str(tree), image_size=12, placement="stream")
    first, again, other = (batches(StreamLoader(streamed.train.images, streamed.train.labels, 40, seed=seed))
                           for seed in (3, 3, 4))
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    epochs = [torch.cat([labels for _, labels in first[k * 6:(k + 1) * 6]]) for k in range(2)]
    assert not torch.equal(epochs[0], epochs[1])  # each epoch its own order


def digest(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]


def test_shards_hold_exactly_the_images_of_the_tree(tree, tmp_path):
    written = pack_shards(tree, tmp_path / "plain", shard_size=64, shuffle=False)
    assert [path.name for path in written["train"]] == [f"train-00000{k}.tar" for k in range(4)]
    decoded = load_dataset(str(tree), image_size=20, placement="host")
    streamed = load_dataset(str(tmp_path / "plain"), image_size=20)
    assert isinstance(streamed.train.images, StreamedImages) and streamed.classes == list(CLASSES)
    for split in ("train", "test"):
        assert torch.equal(getattr(streamed, split).images[:], getattr(decoded, split).images)
        assert torch.equal(getattr(streamed, split).labels, getattr(decoded, split).labels)
    # Shuffled before packing: the same images and labels, in another order.
    pack_shards(tree, tmp_path / "mixed", shard_size=50, seed=1)
    mixed = load_shards(tmp_path / "mixed", image_size=20)
    pairs = sorted(zip(digest(mixed.train.images[:]), mixed.train.labels.tolist()))
    assert pairs == sorted(zip(digest(decoded.train.images), decoded.train.labels.tolist()))
    assert mixed.train.labels.tolist() != decoded.train.labels.tolist()
    # Asked for in memory, shards are decoded whole.
    resident = load_dataset(str(tmp_path / "plain"), image_size=20, placement="host")
    assert isinstance(resident.train.images, torch.Tensor)
    assert torch.equal(resident.train.images, decoded.train.images)


def test_a_corrupt_image_in_a_shard_is_skipped_and_counted(tree, tmp_path):
    pack_shards(tree, tmp_path, shard_size=100, shuffle=False)
    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard) as archive:
        member = next(member for member in archive if member.name == "00000005.jpg")
    with open(shard, "r+b") as file:  # damage the member's bytes in place
        file.seek(member.offset_data)
        file.write(b"\0" * member.size)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*train-000000.tar \(member at byte"):
        streamed = load_shards(tmp_path, image_size=16)  # the channel statistics read every image here
        loader = StreamLoader(streamed.train.images, streamed.train.labels, 48, seed=0)
        seen = batches(loader)
    assert loader.skipped == 1 and streamed.train.images.skipped == {5}
    assert all(images.shape == (48, 3, 16, 16) for images, _ in seen)  # every batch keeps its size
    decoded = load_dataset(str(tree), image_size=16, placement="host")
    order = torch.cat([index for epoch in (0, 1) for index in loader.batch_indices(epoch)])
    for (images, _), index in zip(seen, order.split(48)):
        intact = index != 5
        assert torch.equal(images[intact], decoded.train.images[index[intact]])


def test_host_memory_stays_bounded_whatever_the_number_of_files(tmp_path):
    def peak_while_streaming(count: int) -> int:
        root = write_tree(tmp_path / str(count), {"train": count // 3, "test": 1}, side=8)
        streamed = load_dataset(str(root), image_size=8, placement="stream")
        loader = StreamLoader(streamed.train.images, streamed.train.labels, 16, prefetch=2)
        gc.collect()
        tracemalloc.start()
        try:
            for _ in loader.epoch(0):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            streamed.train.images.close()

    small, large = peak_while_streaming(150), peak_while_streaming(1500)
    # The large set's files hold ~1 MB and decode to 0.3 MB: a peak that grew with the files would show.
    assert large < 400_000, large
    assert large < 2 * small + 100_000, (small, large)


def test_placement_auto_streams_a_tree_too_large_for_host_memory(tree, monkeypatch):
    assert isinstance(load_dataset(str(tree), image_size=16).train.images, torch.Tensor)
    monkeypatch.setattr(datasets_module, "available_host_memory", lambda: 100_000)
    splits = load_dataset(str(tree), image_size=16)
    assert isinstance(splits.train.images, StreamedImages)
    loader = create_loader(splits.train.images, splits.train.labels, 32, device=torch.device("cpu"))
    assert isinstance(loader, StreamLoader)


def test_streaming_misuse_says_what_to_do(tree, tmp_path):
    with pytest.raises(ConfigError, match="data_placement=stream streams an ImageFolder tree"):
        load_dataset("digits", placement="stream")
    with pytest.raises(ConfigError, match="data_placement must be one of"):
        load_dataset(str(tree), placement="disk")
    with pytest.raises(ConfigError, match="data_placement=stream streams image datasets .* image-text data for clip"):
        resolve(Config(dataset=str(tree), method="clip", data_placement="stream"))
    with pytest.raises(DatasetError, match="not square .* set image_size=N"):
        load_dataset(str(tree), placement="stream")
    with pytest.raises(DatasetError, match="holds no .tar shards"):
        load_shards(tmp_path)
    decoded = load_dataset(str(tree), image_size=8, placement="host")
    with pytest.raises(ConfigError, match="data_placement=stream needs images streamed"):
        create_loader(decoded.train.images, decoded.train.labels, 8, device=torch.device("cpu"), placement="stream")
    (tmp_path / "train-000000.tar").write_bytes(b"junk" * 300)
    with pytest.raises(DatasetError, match="not a readable uncompressed tar shard"):
        load_shards(tmp_path)


def test_pack_shards_command(tree, tmp_path, capsys):
    assert cli.run(["pack-shards", str(tree), str(tmp_path / "shards"), "--shard-size", "100"]) == 0
    assert "train: 3 shard(s)" in capsys.readouterr().out
    assert (tmp_path / "shards" / "classes.txt").read_text().split() == list(CLASSES)
    with pytest.raises(ConfigError, match="already holds shards"):
        cli.run(["pack-shards", str(tree), str(tmp_path / "shards")])


def test_a_streamed_run_trains_evaluates_and_resumes_like_an_uninterrupted_one(tree, tmp_path):
    # On the CPU: there the stream decodes with the resident path's Pillow, and the arithmetic is
    # deterministic, so equal batches must give equal weights (nvJPEG's pixels differ by rounding,
    # see test_gpu_decoding_is_close_to_the_cpu_decoder).
    def config(name, placement="stream", evaluate=False):
        return Config(dataset=str(tree), image_size=16, backbone="small_cnn", data_placement=placement, epochs=2,
                      batch_size=48, log_every=1, progress=False, plot=False, evaluate=evaluate, device="cpu",
                      out=str(tmp_path / name))

    def weights(run_dir):
        return load_checkpoint(run_dir / "checkpoints" / "last.pt")["method"]

    def interrupt_after_first_epoch(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    full = runs.train(config("full", evaluate=True))
    with pytest.raises(KeyboardInterrupt):
        runs.train(config("resumed"), callbacks=[interrupt_after_first_epoch])
    resumed = runs.train(Config(out=str(tmp_path / "resumed"), progress=False, evaluate=False, plot=False),
                         resume=True)
    resident = runs.train(config("resident", placement="host"))
    for other in (resumed, resident):  # the same batches, so the same weights, bit for bit
        assert all(torch.equal(weights(full)[key], weights(other)[key]) for key in weights(full))
    summary = json.loads((full / "summary.json").read_text())
    assert summary["skipped_images"] == 0 and 0 <= summary["knn_top1"] <= 1 and "raw_knn_top1" not in summary


def _train_on_tree(rank, world, tree, out, placement):
    # Two steps of 120 in float32 on one thread, contiguous layout: see the distributed tests for
    # why longer float32 runs on one and two processes drift apart by rounding.
    runs.train(Config(dataset=str(tree), image_size=16, backbone="small_cnn", data_placement=placement, epochs=1,
                      batch_size=120, device="cpu", channels_last=False, progress=False, evaluate=False, plot=False,
                      out=str(out)))


def test_two_processes_streaming_their_slices_train_as_one_process_holding_the_data(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    groups = [tmp_path / "group1", tmp_path / "group2"]  # a rendezvous file for each launch
    for folder in groups:
        folder.mkdir()
    run_in_process_group(groups[0], _train_on_tree, tree, tmp_path / "one", "host", world=1)
    run_in_process_group(groups[1], _train_on_tree, tree, tmp_path / "two", "stream")
    single = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    streamed = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert streamed["trainer"]["step"] == single["trainer"]["step"] == 2
    for key, value in single["method"].items():
        torch.testing.assert_close(streamed["method"][key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_the_device_resize_follows_the_cpu_decoder():
    rng = np.random.default_rng(0)
    array = photo_like(rng, 30, 44)
    side = 30
    left = (44 - side) // 2
    expected = np.asarray(Image.fromarray(array).crop((left, 0, left + side, side)).resize((20, 20),
                                                                                            Image.Resampling.BICUBIC))
    [fitted] = fit_to_size([torch.from_numpy(array).permute(2, 0, 1)], 20)
    difference = np.abs(fitted.permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 8  # two bicubic filters, not one
    same = torch.from_numpy(array[:20, :20]).permute(2, 0, 1)
    assert fit_to_size([same], 20)[0] is same


def test_images_of_one_shape_are_resized_together_exactly_as_one_by_one():
    rng = np.random.default_rng(1)
    shapes = [(30, 44), (44, 30), (30, 44), (20, 20), (30, 44), (25, 25)]
    images = [torch.from_numpy(photo_like(rng, *shape)).permute(2, 0, 1) for shape in shapes]
    together = fit_to_size(images, 20)
    alone = [fit_to_size([image], 20)[0] for image in images]
    assert all(a.shape == (3, 20, 20) and torch.equal(a, b) for a, b in zip(together, alone))


def test_the_batched_device_decode_leaves_what_it_cannot_read_to_the_cpu(tree):
    # The code path CUDA runs, with torchvision's CPU decoder standing in for nvJPEG.
    streamed = load_dataset(str(tree), image_size=20, placement="stream")
    images = streamed.train.images
    encoded = images.read(list(range(6)))
    encoded[2] = b"\xff\xd8\xff" + b"\0" * 100  # a JPEG header, then nothing decodable
    slots = [None] * 6
    images._decode_jpegs_on_device(encoded, slots, torch.device("cpu"))
    assert slots[2] is None and slots[1] is None  # the damaged file, and the PNG (index 1 of the first class)
    cpu = images.decode([0, 3, 4, 5])
    for position, expected in zip((0, 3, 4, 5), cpu):
        difference = (slots[position].float() - expected.float()).abs()
        assert slots[position].shape == (3, 20, 20) and difference.mean() < 2.0
    assert images.device_decoding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG decoding needs a CUDA device")
def test_gpu_decoding_is_close_to_the_cpu_decoder(tree):
    streamed = load_dataset(str(tree), image_size=20, placement="stream")
    indices = list(range(64))
    on_gpu = streamed.train.images.decode(indices, "cuda").cpu()
    on_cpu = streamed.train.images.decode(indices, "cpu")
    assert on_gpu.shape == on_cpu.shape
    assert (on_gpu.float() - on_cpu.float()).abs().mean() < 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_stream_loader_on_cuda_named_with_or_without_its_index_gives_its_batches(tree, device):
    # `--device cuda` names the GPU without an index, while a batch decoded there reports cuda:0:
    # taken for a batch decoded on the CPU, it was pinned, which CUDA tensors cannot be.
    streamed = load_dataset(str(tree), image_size=20, placement="stream")
    loader = StreamLoader(streamed.train.images, streamed.train.labels, 64, device=device)
    for images, labels in loader.epoch(0):
        assert images.is_cuda and labels.is_cuda and images.shape == (64, 3, 20, 20)


def test_warnings_are_not_repeated_for_a_file_already_counted(tmp_path):
    root = write_tree(tmp_path / "broken", {"train": 4, "test": 1}, side=8)
    (root / "train" / "ant" / "000.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        streamed = load_dataset(str(root), image_size=8, placement="stream")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        streamed.train.images[:]
    assert streamed.train.images.skipped == {0}


def write_square_tree(root: Path, *, first_file: bytes | None = None) -> Path:
    """root/{train,test}/<class>/00N.png of 10x10 images, so a streamed split takes its size from the
    first image it can decode; ``first_file`` replaces the bytes of the first file of each split."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for index in range(3):
                Image.fromarray(photo_like(rng, 10, 10)).save(root / split / name / f"{index:03d}.png")
        if first_file is not None:
            (root / split / CLASSES[0] / "000.png").write_bytes(first_file)
    return root


def test_an_unreadable_first_image_is_skipped_and_counted_when_streamed(tmp_path):
    root = write_square_tree(tmp_path / "tree", first_file=b"not a png")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*train/ant/000\.png"):
        streamed = load_dataset(str(root), placement="stream")  # no image_size: the size is probed
    assert streamed.image_size == 10 and streamed.train.images.skipped == {0}
    # In shards the test split is probed first, and its first member is the unreadable file.
    pack_shards(root, tmp_path / "shards", shuffle=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*train-000000\.tar \(member at byte"):
        shards = load_shards(tmp_path / "shards")
    assert shards.image_size == 10 and shards.train.images.skipped == {0}
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*test-000000\.tar \(member at byte"):
        shards.test.images[:]
    assert shards.test.images.skipped == {0}


def test_a_streamed_tree_without_one_readable_image_is_one_clear_error(tmp_path):
    root = write_square_tree(tmp_path / "tree")
    for path in root.rglob("*.png"):
        path.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    pack_shards(root, tmp_path / "shards")
    for source, options in ((root, {"placement": "stream"}), (root, {"placement": "stream", "image_size": 8}),
                            (tmp_path / "shards", {})):
        with pytest.raises(DatasetError, match=rf"none of the \d+ images (of a batch from|in) "
                                               rf"{re.escape(str(source))} \((train|test)\) could be decoded, "
                                               r"e\.g\. .*: .*check that they are image files"):
            load_dataset(str(source), **options)


def test_a_file_that_cannot_be_read_at_all_is_an_error_not_a_skip(tmp_path, monkeypatch):
    root = write_square_tree(tmp_path / "tree")

    def denied(self: FileSource, index: int) -> bytes:
        raise PermissionError(13, "Permission denied", self.paths[index])

    monkeypatch.setattr(FileSource, "read", denied)  # chmod 000 would not stop a test run as root
    with pytest.raises(DatasetError, match=r"cannot read .*/train/ant/000\.png \(Permission denied\); check that"):
        load_dataset(str(root), placement="stream")
