"""Images per second of the SimCLR training step on the current device, as JSON.

Two figures from one process: the bare step (forward, backward and optimizer step on views already
resident on the device, no augmentation) and the full pipeline (device-resident uint8 dataset,
shuffled index batches, the batched augmentation preset, then the same step). Both go through
contrastkit's own Trainer, so they measure what `contrastkit train` runs.

    python benchmarks/throughput.py --backbone resnet18 --cifar-stem --batch-size 512   # CIFAR-size
    python benchmarks/throughput.py --backbone small_cnn --channels 1 --image-size 28 --preset mnist --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import torch

from contrastkit.augment import preset
from contrastkit.config import Config
from contrastkit.data import DeviceLoader
from contrastkit.methods import SimCLR
from contrastkit.models import create_backbone, create_head
from contrastkit.runs import pick_device
from contrastkit.train import Trainer, create_optimizer


def measure(args: argparse.Namespace, augmented: bool) -> float:
    """Images (each with two views) per second over ``args.steps`` steps after a warm-up epoch."""
    device = pick_device(args.device)
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, in_channels=args.channels, cifar_stem=args.cifar_stem)
    config = Config(head="mlp2", hidden_dim=None, projection_dim=128, temperature=0.5)
    method = SimCLR.from_config(backbone, config).to(device)
    views = preset(args.preset, size=args.image_size)
    fixed_views = None
    if not augmented:
        sample = torch.randint(0, 256, (args.batch_size, args.channels, args.image_size, args.image_size),
                               dtype=torch.uint8, device=device)
        fixed_views = [view.contiguous() for view in views(sample)]
    augment = views if augmented else (lambda images, generator=None: fixed_views)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    channels_last = args.channels_last != "off"
    optimizer = create_optimizer("sgd", method.parameters(), lr=0.1, weight_decay=5e-4, device=device)
    seconds = []
    for steps in (args.warmup, args.steps):  # the first epoch warms up (cuDNN autotune, compile)
        images = torch.randint(0, 256, (steps * args.batch_size, args.channels, args.image_size, args.image_size),
                               dtype=torch.uint8)
        loader = DeviceLoader(images, torch.zeros(len(images), dtype=torch.long), args.batch_size, device=device)
        trainer = Trainer(method, augment, loader, optimizer, epochs=1, precision=precision,
                          channels_last=channels_last, compile=args.compile, log_every=10**9, progress=False)
        seconds.append(trainer.fit().train_seconds)
    return args.steps * args.batch_size / seconds[-1]


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
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    bare = measure(args, augmented=False)
    pipeline = measure(args, augmented=True)
    device = pick_device(args.device)
    print(json.dumps({
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "backbone": args.backbone, "cifar_stem": args.cifar_stem,
        "image_size": args.image_size, "batch_size": args.batch_size, "views": 2, "compile": args.compile,
        "bare_step_images_per_second": round(bare, 1),
        "pipeline_images_per_second": round(pipeline, 1),
        "pipeline_over_bare": round(pipeline / bare, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
