import importlib.util

import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, ContrastkitError, InputError
from contrastkit.evaluate import plot_embedding, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


@pytest.fixture
def embedding():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(60)  # 240 points, thinned to 200 below
    return torch.randn(4, 64, generator=gen)[labels] * 3 + torch.randn(240, 64, generator=gen), labels


def test_tsne_png(tmp_path, embedding):
    features, labels = embedding
    path = plot_embedding(
        features, labels, tmp_path / "new" / "tsne.png", method="tsne", max_points=200,
        class_names=["cat", "dog", "car", "ship"],
    )
    assert path == tmp_path / "new" / "tsne.png"
    assert_png(path)


def test_pca_png_from_numpy(tmp_path, embedding):
    features, labels = embedding
    path = plot_embedding(features.numpy(), labels.numpy(), str(tmp_path / "pca.png"), method="pca", title="SimCLR")
    assert_png(path)


def test_unknown_method(tmp_path, embedding):
    with pytest.raises(ConfigError, match="tsne"):
        plot_embedding(*embedding, tmp_path / "x.png", method="lda")


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_missing_says_how_to_install(tmp_path, embedding):
    with pytest.raises(ContrastkitError, match="pip install umap-learn"):
        plot_embedding(*embedding, tmp_path / "x.png", method="umap")


def test_bad_embedding_inputs(tmp_path):
    with pytest.raises(InputError, match="labels"):
        plot_embedding(np.zeros((5, 3)), np.zeros(4, dtype=int), tmp_path / "x.png", method="pca")
    with pytest.raises(InputError, match="class_names"):
        plot_embedding(np.random.rand(5, 3), np.arange(5), tmp_path / "x.png", method="pca", class_names=["a"])


def test_training_curves_skip_missing_keys(tmp_path):
    records = [
        {"step": s, "epoch": s / 50, "loss": 5.0 / (s + 1), "samples_per_second": 1500.0} for s in range(0, 100, 10)
    ]
    records[3]["lr"] = 0.1  # only one record logs lr
    records.append({"epoch": 2.0, "loss": 0.1})  # no step: skipped
    path = plot_training_curves(records, tmp_path / "curves" / "train.png", keys=("loss", "lr", "top1"))
    assert_png(path)


def test_training_curves_without_any_key(tmp_path):
    with pytest.raises(InputError, match="keys present"):
        plot_training_curves([{"step": 1, "loss": 1.0}], tmp_path / "c.png", keys=("top1",))


def test_training_curves_add_the_health_metrics_where_logged(tmp_path):
    from PIL import Image

    plain = [{"step": s, "loss": 1.0 / (s + 1), "lr": 0.1} for s in range(10)]
    healthy = [{**record, "rankme": 40.0 + record["step"], "embedding_std": 0.08} for record in plain]
    heights = [Image.open(plot_training_curves(records, tmp_path / f"{name}.png")).size[1]
               for name, records in (("plain", plain), ("healthy", healthy))]
    assert heights[1] > 1.6 * heights[0]  # four subplots instead of two
