"""contrastkit beside lightly: each method trained by both libraries, each with its own recipe and its
own code, on the same backbone, data, epochs and batch size, then scored by the same kNN; as JSON.

The contrastkit side is ``contrastkit train --method NAME`` (its CIFAR-size recipe). The lightly side
follows lightly's CIFAR-10 benchmark (docs/source/getting_started/benchmarks/cifar10_benchmark.py in
lightly-ai/lightly): its heads, losses, momentum updates, memory bank, PIL transforms in DataLoader
workers, optimizer and per-epoch cosine schedule, in a plain torch loop. VICReg, not in that
benchmark, follows lightly's Imagenette benchmark (ResNet-18 too); MoCo v3, in neither, is built
from lightly's parts in the CIFAR-10 benchmark's setting (see MoCoV3 below).

Both sides start from the same backbone weights (one seed) and train in the same precision (bf16
autocast on CUDA unless ``--precision fp32``, which lightly's benchmark used) and memory format.
Both are scored by contrastkit's weighted kNN (k=200, t=0.1) on the backbone features of the
un-augmented train and test images, each normalised as its side trained (CIFAR-10's statistics,
ImageNet's for lightly). Training seconds exclude evaluation.

lightly is not a dependency of contrastkit; install it beside the checkout:

    pip install --no-deps --target /tmp/lt lightly lightly_utils lightning_utilities
    # the table (GPU): ResNet-18 with the CIFAR stem, every method
    PYTHONPATH=src:/tmp/lt python3 benchmarks/side_by_side.py --epochs 200 --batch-size 512
    # a smoke run on a CPU: small CNN, 1,000 training images
    PYTHONPATH=src:/tmp/lt python3 benchmarks/side_by_side.py --methods simclr byol --epochs 1 \\
        --train-subset 1000 --batch-size 128 --knn-k 20 --backbone small_cnn --num-workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from contrastkit import runs
from contrastkit.config import Config, resolve
from contrastkit.data import DatasetSplits, load_dataset
from contrastkit.evaluate import classification_metrics, extract_features, knn_predict
from contrastkit.models import create_backbone, split_batch_norm

try:
    import lightly
    from lightly import loss as lightly_loss
    from lightly import transforms as lightly_transforms
    from lightly.models import utils as lightly_utils
    from lightly.models.modules import heads
    from lightly.transforms.utils import IMAGENET_NORMALIZE
    from lightly.utils.lars import LARS
    from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
except ImportError as error:
    LIGHTLY_MISSING: str | None = f"lightly is not importable ({error})"
else:
    LIGHTLY_MISSING = None

INSTALL_LIGHTLY = ("pip install --no-deps --target /tmp/lt lightly lightly_utils lightning_utilities, then run with "
                   "PYTHONPATH=src:/tmp/lt (or pass --contrastkit-only)")
KNN_TEMPERATURE = 0.1


@dataclass
class Step:
    """Where a training step stands: momentum and temperature schedules read it."""

    index: int
    total: int
    epoch: int


class LightlyModel(nn.Module):
    """One method as lightly's CIFAR-10 benchmark trains it, around a given backbone: its heads and
    loss (:meth:`training_loss`), its views (:meth:`transform`), its optimizer and its learning-rate
    schedule (:meth:`optimizer`, :meth:`schedule`).

    Args:
        backbone: maps images to (B, feature_dim) features; ``feature_dim`` sizes the heads' input
            (512 for a ResNet-18, as in the benchmark).
    """

    source = "cifar10_benchmark"  # where in lightly the recipe comes from

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def embed(self, images: Tensor) -> Tensor:
        return self.backbone(images).flatten(start_dim=1)

    @staticmethod
    def transform() -> Callable[[Any], list[Tensor]]:
        # The benchmark's SimCLR views: colour jitter at half strength, no blur on 32x32 images.
        return lightly_transforms.SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        raise NotImplementedError

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        # The benchmark's default: SGD at 6e-2 scaled linearly from batch 128, on every trainable
        # parameter (the momentum copies are frozen), weight decay on all of them.
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return torch.optim.SGD(trainable, lr=6e-2 * batch_size / 128, momentum=0.9, weight_decay=5e-4)

    def schedule(self, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
        # Stepped once an epoch, as Lightning steps the benchmark's schedulers.
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)


def _byol_views() -> Callable[[Any], list[Tensor]]:
    """The benchmark's BYOL views (asymmetric solarisation), without blur."""
    return lightly_transforms.BYOLTransform(
        view_1_transform=lightly_transforms.BYOLView1Transform(input_size=32, gaussian_blur=0.0),
        view_2_transform=lightly_transforms.BYOLView2Transform(input_size=32, gaussian_blur=0.0))


def _frozen_copy(module: nn.Module) -> nn.Module:
    copied = copy.deepcopy(module)
    lightly_utils.deactivate_requires_grad(copied)
    return copied


class SimCLR(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.SimCLRProjectionHead(backbone.feature_dim, 512, 128)
        self.criterion = lightly_loss.NTXentLoss()  # temperature 0.5

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        return self.criterion(*(self.projection_head(self.embed(view)) for view in views))


class MoCoV2(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        # The benchmark builds its MoCo ResNet with batch norm split in 8 groups (lightly's
        # ResNetGenerator(num_splits=8)), MoCo's shuffling BN on one GPU; the same split here.
        super().__init__(split_batch_norm(backbone, 8))
        self.projection_head = heads.MoCoProjectionHead(backbone.feature_dim, 512, 128)
        self.backbone_momentum = _frozen_copy(backbone)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        # lightly 1.6 takes the bank's feature width with its size (the benchmark passed 4096).
        self.criterion = lightly_loss.NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))

    def keys(self, images: Tensor) -> Tensor:
        # The momentum encoder sees a shuffled batch (MoCo's shuffling batch norm), then is unshuffled.
        shuffled, order = lightly_utils.batch_shuffle(images)
        keys = self.projection_head_momentum(self.backbone_momentum(shuffled).flatten(start_dim=1))
        return lightly_utils.batch_unshuffle(keys, order)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        lightly_utils.update_momentum(self.backbone, self.backbone_momentum, 0.99)
        lightly_utils.update_momentum(self.projection_head, self.projection_head_momentum, 0.99)
        first, second = views
        # Symmetric, as the benchmark: each view is the query once; both calls fill the bank.
        loss_first = self.criterion(self.projection_head(self.embed(first)), self.keys(second))
        loss_second = self.criterion(self.projection_head(self.embed(second)), self.keys(first))
        return 0.5 * (loss_first + loss_second)


class MoCoV3(LightlyModel):
    """Not in the benchmark: lightly's MoCo projection head with the v3 settings its docstring names
    (3 layers, 4096 hidden, 256 out, batch norm throughout), BYOL's prediction head (v3's predictor:
    2 layers, no batch norm on the output), NTXentLoss at temperature 0.2 without a memory bank, a
    cosine momentum 0.99 -> 1 (lightly's cosine_schedule), BYOL's views; the benchmark's optimizer."""

    source = "lightly parts, CIFAR-10 benchmark setting"

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.MoCoProjectionHead(backbone.feature_dim, 4096, 256, num_layers=3,
                                                        batch_norm=True)
        self.prediction_head = heads.BYOLPredictionHead(256, 4096, 256)
        self.backbone_momentum = _frozen_copy(backbone)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        self.criterion = lightly_loss.NTXentLoss(temperature=0.2)

    transform = staticmethod(_byol_views)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        momentum = cosine_schedule(step.index, step.total, 0.99, 1.0)
        lightly_utils.update_momentum(self.backbone, self.backbone_momentum, momentum)
        lightly_utils.update_momentum(self.projection_head, self.projection_head_momentum, momentum)
        queries = [self.prediction_head(self.projection_head(self.embed(view))) for view in views]
        keys = [self.projection_head_momentum(self.backbone_momentum(view).flatten(start_dim=1)) for view in views]
        return 0.5 * (self.criterion(queries[0], keys[1]) + self.criterion(queries[1], keys[0]))


class BYOL(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.BYOLProjectionHead(backbone.feature_dim, 1024, 256)
        self.prediction_head = heads.BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = _frozen_copy(backbone)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        self.criterion = lightly_loss.NegativeCosineSimilarity()

    transform = staticmethod(_byol_views)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        # The benchmark keeps the momentum at 0.99 throughout (no cosine schedule).
        lightly_utils.update_momentum(self.backbone, self.backbone_momentum, 0.99)
        lightly_utils.update_momentum(self.projection_head, self.projection_head_momentum, 0.99)
        predictions = [self.prediction_head(self.projection_head(self.embed(view))) for view in views]
        targets = [self.projection_head_momentum(self.backbone_momentum(view).flatten(start_dim=1)).detach()
                   for view in views]
        return 0.5 * (self.criterion(predictions[0], targets[1]) + self.criterion(predictions[1], targets[0]))


class SimSiam(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        # The benchmark's 2-layer projector for CIFAR-10 (the SimSiam paper's).
        self.projection_head = heads.ProjectionHead([
            (backbone.feature_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
            (2048, 2048, nn.BatchNorm1d(2048), None)])
        self.prediction_head = heads.SimSiamPredictionHead(2048, 512, 2048)
        self.criterion = lightly_loss.NegativeCosineSimilarity()

    @staticmethod
    def transform() -> Callable[[Any], list[Tensor]]:
        return lightly_transforms.SimSiamTransform(input_size=32, gaussian_blur=0.0)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        projections = [self.projection_head(self.embed(view)) for view in views]
        predictions = [self.prediction_head(projection) for projection in projections]
        first, second = (projection.detach() for projection in projections)
        return 0.5 * (self.criterion(first, predictions[1]) + self.criterion(second, predictions[0]))

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        # The benchmark does not scale SimSiam's learning rate with the batch (for stability).
        return torch.optim.SGD(self.parameters(), lr=6e-2, momentum=0.9, weight_decay=5e-4)


class SwaV(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.SwaVProjectionHead(backbone.feature_dim, 512, 128)
        self.prototypes = heads.SwaVPrototypes(128, 512)
        self.criterion = lightly_loss.SwaVLoss()

    @staticmethod
    def transform() -> Callable[[Any], list[Tensor]]:
        # Two 32-pixel crops, no local crops, no blur. lightly 1.6 asks for the crops' largest scale
        # too; earlier releases took the first of its default pair, 1.0.
        return lightly_transforms.SwaVTransform(crop_sizes=[32], crop_counts=[2], crop_min_scales=[0.14],
                                                crop_max_scales=[1.0], cj_strength=0.5, gaussian_blur=0)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        self.prototypes.normalize()  # on the unit sphere before every step
        scores = [self.prototypes(nn.functional.normalize(self.projection_head(self.embed(view)), dim=1))
                  for view in views]
        return self.criterion(scores[:2], scores[2:])

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        # The benchmark trains SwaV with Adam.
        return torch.optim.Adam(self.parameters(), lr=1e-3 * batch_size / 128, weight_decay=1e-6)


class BarlowTwins(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.ProjectionHead([
            (backbone.feature_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
            (2048, 2048, None, None)])
        self.criterion = lightly_loss.BarlowTwinsLoss()

    transform = staticmethod(_byol_views)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        return self.criterion(*(self.projection_head(self.embed(view)) for view in views))


class VICReg(LightlyModel):
    """From lightly's Imagenette benchmark (the CIFAR-10 one has none): Barlow Twins' 3-layer
    2048-wide projection head, VICRegLoss (25, 25, 1), LARS with a linear warm-up then cosine;
    VICRegTransform at 32 pixels without blur (the CIFAR-10 benchmark's rule)."""

    source = "imagenette_benchmark"

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = heads.BarlowTwinsProjectionHead(backbone.feature_dim, 2048, 2048)
        self.criterion = lightly_loss.VICRegLoss()

    @staticmethod
    def transform() -> Callable[[Any], list[Tensor]]:
        return lightly_transforms.VICRegTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        return self.criterion(*(self.projection_head(self.embed(view)) for view in views))

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        # "Training diverges without LARS" (the benchmark's words; SGD at 0.06 gave NaN here too).
        return LARS(self.parameters(), lr=0.3 * batch_size / 256, momentum=0.9, weight_decay=1e-4)

    def schedule(self, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
        # The benchmark warms up for 20 of its 200 epochs (40 of 800); shorter runs, a tenth of theirs.
        warmup = 40 if epochs >= 800 else min(20, epochs // 10)
        return CosineWarmupScheduler(optimizer, warmup, epochs)


class DINO(LightlyModel):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.head = self.new_head()
        self.teacher_backbone = _frozen_copy(backbone)
        # A head of its own, not a copy of the student's, as the benchmark builds it.
        self.teacher_head = self.new_head()
        lightly_utils.deactivate_requires_grad(self.teacher_head)
        self.criterion = lightly_loss.DINOLoss(output_dim=2048)

    def new_head(self) -> nn.Module:
        head = heads.DINOProjectionHead(self.backbone.feature_dim, 2048, 256, 2048, batch_norm=True)
        # The benchmark's 2 layers (to the 256-d bottleneck) for CIFAR-10, then the normalised last layer.
        head.layers = heads.ProjectionHead([
            (self.backbone.feature_dim, 2048, nn.BatchNorm1d(2048), nn.GELU()),
            (2048, 256, None, None)]).layers
        return head

    @staticmethod
    def transform() -> Callable[[Any], list[Tensor]]:
        return lightly_transforms.DINOTransform(global_crop_size=32, n_local_views=0, cj_strength=0.5,
                                                gaussian_blur=(0, 0, 0))

    def training_loss(self, views: list[Tensor], step: Step) -> Tensor:
        lightly_utils.update_momentum(self.backbone, self.teacher_backbone, 0.99)
        lightly_utils.update_momentum(self.head, self.teacher_head, 0.99)
        teacher = [self.teacher_head(self.teacher_backbone(view).flatten(start_dim=1)) for view in views[:2]]
        student = [self.head(self.embed(view)) for view in views]
        return self.criterion(teacher, student, epoch=step.epoch)


# contrastkit's method name -> lightly's model of it.
LIGHTLY_MODELS: dict[str, type[LightlyModel]] = {
    "simclr": SimCLR, "moco_v2": MoCoV2, "moco_v3": MoCoV3, "byol": BYOL, "simsiam": SimSiam, "swav": SwaV,
    "barlow_twins": BarlowTwins, "vicreg": VICReg, "dino": DINO,
}


class PilViews(Dataset):
    """uint8 images (N, 3, H, W), each made into PIL and through a lightly transform per item, as
    the benchmark's LightlyDataset does with its image files."""

    def __init__(self, images: Tensor, transform: Callable[[Any], list[Tensor]]) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # PIL takes (H, W, C)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[Tensor]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index]))


def train_lightly(method: str, splits: DatasetSplits, args: argparse.Namespace, cifar_stem: bool,
                  device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``method`` as lightly's benchmark does; returns the trained backbone and the figures."""
    torch.manual_seed(args.seed)  # as contrastkit seeds before its backbone: the same initial weights
    backbone = create_backbone(args.backbone, in_channels=splits.channels, cifar_stem=cifar_stem)
    model = LIGHTLY_MODELS[method](backbone).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    loader = DataLoader(PilViews(splits.train.images, model.transform()), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, num_workers=args.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = model.optimizer(args.batch_size)
    peak_lr, weight_decay = optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]
    scheduler = model.schedule(optimizer, args.epochs)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.resolved_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype is torch.float16)
    model.train()
    total = args.epochs * len(loader)
    index, last_epoch_loss = 0, float("nan")
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        loss_sum = torch.zeros((), device=device)
        for views in loader:
            views = [view.to(device, non_blocking=True).contiguous(memory_format=memory_format) for view in views]
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model.training_loss(views, Step(index, total, epoch))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach().float().reshape(())  # SwaVLoss returns a one-element vector
            index += 1
        scheduler.step()
        last_epoch_loss = loss_sum.item() / len(loader)  # one host sync an epoch, as contrastkit's log
        print(f"lightly {method} epoch {epoch + 1}/{args.epochs}  loss {last_epoch_loss:.4f}  "
              f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return model.backbone, {"train_seconds": round(seconds, 2), "last_epoch_loss": round(last_epoch_loss, 4),
                            "optimizer": type(optimizer).__name__.lower(), "lr": peak_lr,
                            "weight_decay": weight_decay, "lr_schedule": f"{type(scheduler).__name__} per epoch",
                            "recipe_from": model.source}


def normalised(mean: list[float], std: list[float], device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 (B, C, H, W) -> float images normalised by ``mean`` and ``std``: the benchmark's test
    transform (ToTensor, Normalize), batched."""
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda images: (images.float() / 255 - mean_t) / std_t


def knn_top1(backbone: nn.Module, view: Callable[[Tensor], Tensor], splits: DatasetSplits, k: int,
             device: torch.device, channels_last: bool) -> float:
    """contrastkit's kNN top-1 (weighted vote, t=0.1) of ``backbone`` on the test split, from the
    features of the un-augmented train and test images made by ``view``."""
    features = [extract_features(backbone, split.images, view, device=device, channels_last=channels_last)
                for split in (splits.train, splits.test)]
    classes = len(splits.classes)
    predicted = knn_predict(features[0], splits.train.labels, features[1], k=min(k, len(splits.train)),
                            temperature=KNN_TEMPERATURE, num_classes=classes)
    return round(classification_metrics(splits.test.labels, predicted, num_classes=classes)["top1"], 4)


def train_subset(source: Path, count: int, seed: int, out_dir: Path) -> Path:
    """A packed-JPEG archive holding ``count`` training images of ``source`` drawn at random with
    ``seed`` (the archive is sorted by class: its first images are all of one class) and its whole
    test split, for both sides to read."""
    path = out_dir / f"{source.stem}-train{count}-seed{seed}.npz"
    with np.load(source) as archive:
        offsets, data = archive["train_offsets"], archive["train_jpeg"]
        if not 0 < count <= len(offsets) - 1:
            raise SystemExit(f"--train-subset must lie in [1, {len(offsets) - 1}], got {count}.")
        chosen = np.sort(np.random.default_rng(seed).choice(len(offsets) - 1, count, replace=False))
        sizes = offsets[chosen + 1] - offsets[chosen]
        subset = {name: archive[name] for name in archive.files if not name.startswith("train_")}
        subset["train_jpeg"] = np.concatenate([data[offsets[i]:offsets[i + 1]] for i in chosen])
        subset["train_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        subset["train_labels"] = archive["train_labels"][chosen]
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **subset)
    return path


def run_method(method: str, data: Path, splits: DatasetSplits, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out_dir) / f"{method}-{int(time.time())}"
    values = dict(method=method, dataset="cifar10", data_root=str(data), backbone=args.backbone, epochs=args.epochs,
                  batch_size=args.batch_size, device=args.device, precision=args.precision,
                  channels_last=args.channels_last, seed=args.seed, out=str(out), evaluate=False, plot=False,
                  progress=False, log_every=50, knn_k=args.knn_k, knn_temperature=KNN_TEMPERATURE,
                  raw_baseline=False)
    config = resolve(Config(**values))
    # contrastkit reports its progress on stdout, which carries only the JSON here.
    with contextlib.redirect_stdout(sys.stderr):
        run_dir = runs.train(config)
        run = runs.Run.load(run_dir)
    device = run.device
    summary = json.loads((run_dir / "summary.json").read_text())
    result: dict[str, Any] = {"method": method, "contrastkit": {
        "knn_top1": knn_top1(run.method.backbone, run.augment.eval_view, splits, args.knn_k, device,
                             args.channels_last),
        "train_seconds": summary["train_seconds"], "optimizer": config.optimizer, "lr": config.lr,
        "weight_decay": config.weight_decay, "lr_schedule": f"{config.lr_schedule} per step",
        "run_dir": str(run_dir)}}
    print(json.dumps(result), file=sys.stderr, flush=True)
    if args.contrastkit_only:
        result["lightly"] = {"skipped": "--contrastkit-only"}
        return result
    backbone, figures = train_lightly(method, splits, args, bool(config.cifar_stem), device)
    view = normalised(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"], device)
    result["lightly"] = {"knn_top1": knn_top1(backbone, view, splits, args.knn_k, device, args.channels_last),
                         **figures}
    print(json.dumps(result["lightly"]), file=sys.stderr, flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(LIGHTLY_MODELS), choices=list(LIGHTLY_MODELS))
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.npz", help="CIFAR-10 as a packed-JPEG .npz")
    parser.add_argument("--train-subset", type=int,
                        help="train on this many training images (a fixed random draw), e.g. 1000 for a CPU table")
    parser.add_argument("--backbone", default="resnet18",
                        help="contrastkit backbone of both sides; ResNets take the CIFAR stem")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--knn-k", type=int, default=200, help="kNN neighbours (200 for the CIFAR-10 table)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the lightly side (the benchmark's 8)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="of both sides; auto: bf16 autocast on CUDA, fp32 elsewhere")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="contiguous memory format on both sides (default: channels_last on both)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/side-by-side",
                        help="contrastkit's run folders and the training subset's archive")
    parser.add_argument("--contrastkit-only", action="store_true", help="skip the lightly side")
    args = parser.parse_args(argv)
    if LIGHTLY_MISSING and not args.contrastkit_only:
        parser.exit(2, f"{LIGHTLY_MISSING}; install it: {INSTALL_LIGHTLY}\n")
    return args


def main() -> None:
    args = parse_args()
    device = runs.pick_device(args.device)
    args.resolved_precision = args.precision if args.precision != "auto" else (
        "bf16" if device.type == "cuda" else "fp32")
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} does not exist; pass --data PATH of cifar10-jpeg.npz (../shared/data/README.md).")
    if args.train_subset:
        data = train_subset(data, args.train_subset, args.seed, Path(args.out_dir))
    # Decoded once: both sides train on, and are scored on, these very pixels.
    splits = load_dataset("cifar10", root=data)
    results = [run_method(method, data, splits, args) for method in args.methods]
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(json.dumps({
        "device": name, "date": date.today().isoformat(), "torch": torch.__version__,
        "lightly": None if LIGHTLY_MISSING else lightly.__version__, "data": str(data),
        "train_images": len(splits.train), "test_images": len(splits.test), "backbone": args.backbone,
        "epochs": args.epochs, "batch_size": args.batch_size, "knn_k": args.knn_k, "knn_temperature": KNN_TEMPERATURE,
        "precision": args.resolved_precision, "channels_last": args.channels_last, "seed": args.seed,
        "lightly_num_workers": None if args.contrastkit_only else args.num_workers,
        "lightly_skipped": "--contrastkit-only" if args.contrastkit_only else None,
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
