"""benchmarks/side_by_side.py: its lightly recipes build and take a step, its training subset is a
readable archive drawn across classes, and a missing lightly is named with its fix. No training run."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.data.datasets import load_jpeg_archive
from contrastkit.methods import list_methods
from contrastkit.models import create_backbone

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "side_by_side.py"
spec = importlib.util.spec_from_file_location("side_by_side", SCRIPT)
side_by_side = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = side_by_side  # its dataclass looks its module up there
spec.loader.exec_module(side_by_side)

needs_lightly = pytest.mark.skipif(side_by_side.LIGHTLY_MISSING is not None,
                                   reason=f"{side_by_side.LIGHTLY_MISSING}; {side_by_side.INSTALL_LIGHTLY}")


@needs_lightly
def test_every_method_of_both_libraries_is_compared_by_default():
    assert set(side_by_side.LIGHTLY_MODELS) <= set(list_methods())
    args = side_by_side.parse_args([])
    assert args.methods == list(side_by_side.LIGHTLY_MODELS) and len(args.methods) == 9
    assert (args.knn_k, args.epochs, args.batch_size) == (200, 200, 512)


@needs_lightly
@pytest.mark.parametrize("method", list(side_by_side.LIGHTLY_MODELS))
def test_lightly_recipe_takes_a_finite_step(method):
    from PIL import Image

    torch.manual_seed(0)
    model = side_by_side.LIGHTLY_MODELS[method](create_backbone("small_cnn", in_channels=3))
    transform = model.transform()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    items = [transform(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images]
    views = [torch.stack(view) for view in zip(*items)]
    assert len(views) == 2 and views[0].shape == (8, 3, 32, 32)  # the benchmark's two 32-pixel views
    optimizer = model.optimizer(batch_size=128)
    scheduler = model.schedule(optimizer, epochs=4)
    before = [parameter.detach().clone() for parameter in model.backbone.parameters()]
    loss = model.training_loss(views, side_by_side.Step(index=0, total=4, epoch=0))
    loss.backward()
    optimizer.step()
    scheduler.step()
    assert torch.isfinite(loss).all()
    assert any(not torch.equal(old, new) for old, new in zip(before, model.backbone.parameters()))


def _archive(path: Path, per_class: int, classes: int) -> None:
    """A class-sorted packed-JPEG archive of small solid images, like cifar10-jpeg.npz."""
    from PIL import Image

    parts = {}
    for split in ("train", "test"):
        encoded = []
        for label in range(classes):
            for _ in range(per_class):
                buffer = io.BytesIO()
                Image.new("RGB", (8, 8), (label * 40, 0, 0)).save(buffer, format="JPEG")
                encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        parts[f"{split}_jpeg"] = np.concatenate(encoded)
        parts[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(item) for item in encoded])]).astype(np.int64)
        parts[f"{split}_labels"] = np.repeat(np.arange(classes), per_class).astype(np.int64)
    np.savez(path, classes=np.array([f"c{label}" for label in range(classes)]), **parts)


def test_train_subset_is_a_readable_draw_across_classes(tmp_path):
    source = tmp_path / "data.npz"
    _archive(source, per_class=10, classes=4)
    subset = load_jpeg_archive(side_by_side.train_subset(source, 12, seed=0, out_dir=tmp_path / "out"))
    assert len(subset.train) == 12 and len(subset.test) == 40  # the whole test split
    assert len(set(subset.train.labels.tolist())) > 1  # the first 12 would all be class 0


def test_missing_lightly_names_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(side_by_side, "LIGHTLY_MISSING", "lightly is not importable (No module named 'lightly')")
    with pytest.raises(SystemExit) as exit_info:
        side_by_side.parse_args(["--methods", "simclr"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "pip install" in message and "--contrastkit-only" in message and message.count("\n") == 1
    assert side_by_side.parse_args(["--contrastkit-only"]).contrastkit_only
