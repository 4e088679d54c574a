"""Images per second of the SimCLR training step on the current device, as JSON.

Three figures from one process: the bare step (forward, backward and optimizer step on views already
resident on the device, no augmentation), the full pipeline (device-resident uint8 dataset,
shuffled index batches, the batched augmentation preset, then the same step), both through
contrastkit's own Trainer, so they measure what `contrastkit train` runs; and, when lightly is
installed, lightly's pipeline on the same backbone (PIL augmentations in DataLoader workers).
On CUDA it also counts the host syncs of the measured steps (torch's sync debug mode): a step that
waits for the GPU cannot queue the next one, so the expected count is 1 (the end-of-epoch loss).

    python benchmarks/throughput.py --backbone resnet18 --cifar-stem --batch-size 512   # CIFAR-size
    python benchmarks/throughput.py --backbone resnet18 --cifar-stem --batch-size 512 --augment-backend torch
    python benchmarks/throughput.py --backbone resnet18 --cifar-stem --batch-size 512 --compile --compile-mode reduce-overhead
    python benchmarks/throughput.py --backbone small_cnn --channels 1 --image-size 28 --preset mnist --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import date
from typing import Callable, TypeVar

import torch

from contrastkit.augment import preset
from contrastkit.config import Config
from contrastkit.data import DeviceLoader
from contrastkit.methods import SimCLR
from contrastkit.models import create_backbone
from contrastkit.runs import pick_device
from contrastkit.train import Trainer, create_optimizer


Result = TypeVar("Result")


def count_host_syncs(function: Callable[[], Result]) -> tuple[Result, int | None]:
    """``function()`` and how many synchronizing CUDA calls it made (None off CUDA)."""
    if not torch.cuda.is_available():
        return function(), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = function()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchroniz" in str(warning.message) for warning in caught)


def measure(args: argparse.Namespace, augmented: bool) -> tuple[float, int | None]:
    """Images (each with two views) per second over ``args.steps`` steps after a warm-up epoch, and
    the host syncs of those steps."""
    device = pick_device(args.device)
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, in_channels=args.channels, cifar_stem=args.cifar_stem)
    config = Config(head="mlp2", hidden_dim=None, projection_dim=128, temperature=0.5)
    method = SimCLR.from_config(backbone, config).to(device)
    channels_last = args.channels_last != "off"
    views = preset(args.preset, size=args.image_size).to(device)
    views.backend, views.channels_last = args.augment_backend, channels_last  # as `contrastkit train` sets them
    fixed_views = None
    if not augmented:
        sample = torch.randint(0, 256, (args.batch_size, args.channels, args.image_size, args.image_size),
                               dtype=torch.uint8, device=device)
        fixed_views = views(sample)
    augment = views if augmented else (lambda images, generator=None: fixed_views)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    optimizer = create_optimizer("sgd", method.parameters(), lr=0.1, weight_decay=5e-4)
    trainers = []
    for steps in (args.warmup, args.steps):  # the first epoch warms up (cuDNN autotune, compile)
        images = torch.randint(0, 256, (steps * args.batch_size, args.channels, args.image_size, args.image_size),
                               dtype=torch.uint8)
        loader = DeviceLoader(images, torch.zeros(len(images), dtype=torch.long), args.batch_size, device=device)
        trainers.append(Trainer(method, augment, loader, optimizer, epochs=1, precision=precision,
                                channels_last=channels_last, compile=args.compile, compile_mode=args.compile_mode,
                                log_every=10**9, progress=False))
    trainers[0].fit()
    state, syncs = count_host_syncs(trainers[1].fit)
    return args.steps * args.batch_size / state.train_seconds, syncs


def lightly_images_per_second(dataset, args: argparse.Namespace, *, cifar_stem: bool = False,
                               precision: str = "auto", channels_last: bool = True) -> float:
    """Images per second of lightly's SimCLR step fed by ``dataset`` (items ``((view_a, view_b),
    label)``, made in ``args.workers`` DataLoader workers): ``args.backbone``, lightly's projection
    head and NTXentLoss, over ``args.steps`` steps after ``args.warmup``."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from torch.utils.data import DataLoader

    device = pick_device(args.device)
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, in_channels=3, cifar_stem=cifar_stem).to(device)
    head = SimCLRProjectionHead(backbone.feature_dim, backbone.feature_dim, 128).to(device)
    criterion = NTXentLoss(temperature=0.5)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    backbone.to(memory_format=memory_format)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=5e-4)
    precision = precision if precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    start, measured = None, 0
    for step, ((view_a, view_b), _) in enumerate(loader):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if step == args.warmup + args.steps:
            break
        view_a = view_a.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        view_b = view_b.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(head(backbone(view_a)), head(backbone(view_b)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        measured += step >= args.warmup
    if device.type == "cuda":
        torch.cuda.synchronize()
    return measured * args.batch_size / (time.perf_counter() - start)


def measure_lightly(args: argparse.Namespace) -> float | None:
    """lightly's SimCLR pipeline on the same backbone: PIL augmentations (SimCLRTransform, jitter 0.5,
    no blur) in ``args.workers`` DataLoader workers, lightly's projection head and NTXentLoss, the same
    precision and memory format. None when lightly is not installed."""
    try:
        from lightly.transforms import SimCLRTransform
    except ImportError:
        return None
    from PIL import Image
    from torch.utils.data import Dataset

    class RandomImages(Dataset):
        """uint8 images decoded to PIL per item, as torchvision's CIFAR10 dataset does."""

        def __init__(self, count: int) -> None:
            self.images = torch.randint(0, 256, (count, args.image_size, args.image_size, 3), dtype=torch.uint8).numpy()
            self.transform = SimCLRTransform(input_size=args.image_size, cj_strength=0.5, gaussian_blur=0.0)

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, index: int):
            return self.transform(Image.fromarray(self.images[index])), 0

    return lightly_images_per_second(RandomImages((args.warmup + args.steps) * args.batch_size), args,
                                     cifar_stem=args.cifar_stem, precision=args.precision,
                                     channels_last=args.channels_last != "off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--cifar-stem", action="store_true")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--preset", default="simclr_cifar")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", default="on", choices=["on", "off"])
    parser.add_argument("--augment-backend", default="auto", choices=["auto", "torch", "triton"],
                        help="on CUDA: the fused Triton kernel (auto, triton) or the torch ops")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step and the augmentation")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers of lightly's pipeline (when lightly is installed)")
    args = parser.parse_args()
    # Each twice, alternating, keeping the faster: the first measurement of a process runs slower
    # (on two CPU cores by half) whichever it is.
    (bare, bare_syncs), (pipeline, pipeline_syncs) = (
        max(pair, key=lambda result: result[0])
        for pair in zip(*[(measure(args, augmented=False), measure(args, augmented=True)) for _ in range(2)]))
    lightly = measure_lightly(args)
    device = pick_device(args.device)
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(json.dumps({
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
        "torch": torch.__version__, "backbone": args.backbone, "cifar_stem": args.cifar_stem,
        "image_size": args.image_size, "batch_size": args.batch_size, "views": 2, "compile": args.compile,
        "compile_mode": args.compile_mode if args.compile else None, "augment_backend": args.augment_backend,
        "bare_step_images_per_second": round(bare, 1),
        "pipeline_images_per_second": round(pipeline, 1),
        "pipeline_over_bare": round(pipeline / bare, 3),
        "host_syncs_bare": bare_syncs, "host_syncs_pipeline": pipeline_syncs, "measured_steps": args.steps,
        "lightly_pipeline_images_per_second": None if lightly is None else round(lightly, 1),
        "pipeline_over_lightly": None if lightly is None else round(pipeline / lightly, 3),
        "lightly_workers": None if lightly is None else args.workers,
    }, indent=2))


if __name__ == "__main__":
    main()
