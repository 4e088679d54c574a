"""Images per second of SimCLR training streamed from JPEG files on disk, against the bare step, the
resident dataset and lightly reading the same files, as JSON.

Builds ``--images`` synthetic photo-like JPEGs (smooth colour fields with noise, 500x375, quality
90, about 93 KB each like an ImageNet photo) in an ImageFolder tree once (kept in ``--folder`` for the
next run), then measures through contrastkit's Trainer, each after a warm-up epoch:

* ``bare``: the forward, backward and optimizer step on fixed views (no data, no augmentation);
* ``resident``: the images decoded beforehand and held on the device, the batched augmentations;
* ``stream_gpu``: :class:`StreamLoader` reading the files in threads, nvJPEG decoding each batch on
  the GPU (CUDA only), resized to the storage size, then the same augmentations;
* ``stream_cpu``: the same with Pillow decoding in threads on the CPU;
* ``lightly`` (when lightly is installed): torchvision's ImageFolder with lightly's SimCLRTransform
  (decoding included) in ``--workers`` DataLoader workers, the same backbone and precision.

    python benchmarks/stream_throughput.py                                  # ResNet-50, 224 px, batch 256
    python benchmarks/stream_throughput.py --images 256 --backbone small_cnn --image-size 32 \\
        --batch-size 32 --steps 3 --warmup 1                                # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from throughput import count_host_syncs, lightly_images_per_second  # benchmarks/ is the script's folder

from contrastkit.augment import preset
from contrastkit.config import Config
from contrastkit.data import DeviceLoader, load_dataset
from contrastkit.data.streaming import FileSource, StreamedImages, StreamLoader
from contrastkit.methods import SimCLR
from contrastkit.models import create_backbone
from contrastkit.runs import pick_device
from contrastkit.train import Trainer, create_optimizer

CLASSES = 10


def photo_like(seed: int, width: int, height: int) -> Image.Image:
    """A smooth random colour field with sensor-like noise: at 500x375 and quality 90 it compresses to
    about 93 KB, the size of the issue's ImageNet-like photos (94 KB)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = field + rng.normal(0, 18, field.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def build_tree(folder: Path, count: int, width: int, height: int, quality: int) -> Path:
    """``folder/train/<class>/NNNNNNN.jpg`` (and a small test split), made once."""
    done = folder / f"ready-{count}-{width}x{height}-q{quality}"
    if done.exists():
        return folder

    def write(index: int) -> int:
        split = "test" if index % 50 == 0 else "train"
        path = folder / split / f"class{index % CLASSES}" / f"{index:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(index, width, height).save(path, quality=quality)
        return path.stat().st_size

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(write, range(count)))
    done.write_text(json.dumps({"mean_bytes": float(np.mean(sizes))}))
    return folder


def new_method(args: argparse.Namespace, device: torch.device) -> SimCLR:
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, in_channels=3)
    config = Config(head="mlp2", hidden_dim=None, projection_dim=128, temperature=0.5)
    return SimCLR.from_config(backbone, config).to(device)


def images_per_second(args: argparse.Namespace, loaders: tuple, augment) -> tuple[float, int | None]:
    """Train one epoch of each loader (warm-up, measured) and return the measured images per second
    and its host syncs."""
    device = pick_device(args.device)
    method = new_method(args, device)
    optimizer = create_optimizer("sgd", method.parameters(), lr=0.1, weight_decay=5e-4)
    precision = "bf16" if device.type == "cuda" else "fp32"
    trainers = [Trainer(method, augment, loader, optimizer, epochs=1, precision=precision, channels_last=True,
                        log_every=10**9, progress=False) for loader in loaders]
    trainers[0].fit()
    state, syncs = count_host_syncs(trainers[1].fit)
    return len(loaders[1]) * args.batch_size / state.train_seconds, syncs


def measure_lightly(args: argparse.Namespace, train_folder: Path) -> float | None:
    """lightly's pipeline on the same files: ImageFolder + SimCLRTransform (PIL decode and augment)
    in DataLoader workers, then the same backbone, projection and NT-Xent step. None when lightly
    is not installed."""
    try:
        from lightly.transforms import SimCLRTransform
    except ImportError:
        return None
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(train_folder), transform=SimCLRTransform(input_size=args.image_size))
    return lightly_images_per_second(dataset, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12_000, help="JPEGs to build (>= (warmup + steps) x batch)")
    parser.add_argument("--folder", type=Path, help="where the JPEG tree is built and kept (default: a temp folder)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224, help="storage size and crop size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="lightly's DataLoader workers")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.gettempdir()) / f"contrastkit-stream-{args.images}"
    start = time.perf_counter()
    build_tree(folder, args.images, args.width, args.height, args.quality)
    build_seconds = time.perf_counter() - start
    device = pick_device(args.device)

    streamed = load_dataset(str(folder), image_size=args.image_size, placement="stream")
    images, labels = streamed.train.images, streamed.train.labels
    needed = (args.warmup + args.steps) * args.batch_size
    if len(images) < needed:
        raise SystemExit(f"--images gives {len(images)} training images, fewer than (warmup + steps) x batch = "
                         f"{needed}; build more.")
    views = preset("simclr_imagenet", size=args.image_size, mean=streamed.mean, std=streamed.std).to(device)
    views.channels_last = True
    # The warm-up epoch reads the first images, the measured one the next: no file is read twice.
    parts = {"warmup": range(args.warmup * args.batch_size), "measured": range(args.warmup * args.batch_size, needed)}

    def stream_loaders(decode: str) -> tuple[StreamLoader, ...]:
        return tuple(StreamLoader(StreamedImages(FileSource([images.source.paths[k] for k in rows]),
                                                 args.image_size, where=str(folder)),
                                  labels[list(rows)], args.batch_size, device=device, decode=decode)
                     for rows in parts.values())

    resident_images = images[:needed]  # decoded before the clock starts
    resident = tuple(DeviceLoader(resident_images[list(rows)], labels[list(rows)], args.batch_size, device=device)
                     for rows in parts.values())
    fixed = views(resident_images[:args.batch_size].to(device))
    results = {}
    results["bare"] = images_per_second(args, resident, lambda batch, generator=None: fixed)
    results["resident"] = images_per_second(args, resident, views)
    if device.type == "cuda":
        results["stream_gpu"] = images_per_second(args, stream_loaders("auto"), views)
    results["stream_cpu"] = images_per_second(args, stream_loaders("cpu"), views)
    lightly = measure_lightly(args, folder / "train")
    bare = results["bare"][0]
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    report = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "cpu_cores": os.cpu_count(), "torch": torch.__version__, "backbone": args.backbone,
        "image_size": args.image_size, "batch_size": args.batch_size, "views": 2, "measured_steps": args.steps,
        "jpeg": {"count": args.images, "width": args.width, "height": args.height, "quality": args.quality,
                 **json.loads(next(folder.glob("ready-*")).read_text()), "build_seconds": round(build_seconds, 1)},
    }
    for name, (speed, syncs) in results.items():
        report[f"{name}_images_per_second"] = round(speed, 1)
        report[f"{name}_over_bare"] = round(speed / bare, 3)
        report[f"{name}_host_syncs"] = syncs
    report["lightly_images_per_second"] = None if lightly is None else round(lightly, 1)
    report["lightly_workers"] = None if lightly is None else args.workers
    best_stream = results.get("stream_gpu", results["stream_cpu"])[0]
    report["stream_over_lightly"] = None if lightly is None else round(best_stream / lightly, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
