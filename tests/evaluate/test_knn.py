import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate import knn_predict


def reference_knn(train, labels, test, k, temperature, num_classes):
    """Independent float64 weighted kNN: one test row at a time, explicit vote."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    k = min(k, len(train))
    preds = []
    for row in test:
        sims = train @ row
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for j in nearest:
            votes[labels[j]] += np.exp(sims[j] / temperature)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(120, 16, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 7, (120,), generator=gen)
    test = torch.randn(50, 16, generator=gen, dtype=torch.float64)
    return train, labels, test


@pytest.mark.parametrize("k", [1, 5, 50, 500])  # 500 > N_train: clipped
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_matches_numpy_reference(data, k, temperature):
    train, labels, test = data
    got = knn_predict(train, labels, test, k=k, temperature=temperature, chunk_size=16)
    want = reference_knn(train.numpy(), labels.numpy(), test.numpy(), k, temperature, 7)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)


def test_chunked_equals_unchunked(data):
    train, labels, test = (t.float() if t.is_floating_point() else t for t in data)
    full = knn_predict(train, labels, test, k=20, chunk_size=10_000)
    for chunk_size in (1, 7, 49):
        assert torch.equal(knn_predict(train, labels, test, k=20, chunk_size=chunk_size), full)


def test_separated_clusters_are_classified_perfectly():
    gen = torch.Generator().manual_seed(1)
    centers = 10 * torch.randn(5, 32, generator=gen)
    train_labels = torch.arange(5).repeat_interleave(40)
    test_labels = torch.arange(5).repeat_interleave(10)
    train = centers[train_labels] + torch.randn(200, 32, generator=gen)
    test = centers[test_labels] + torch.randn(50, 32, generator=gen)
    preds = knn_predict(train, train_labels, test, k=200)
    assert torch.equal(preds, test_labels)


def test_tiny_temperature_stays_finite_and_acts_as_1nn(data):
    train, labels, test = (t.float() if t.is_floating_point() else t for t in data)
    # exp(1 / 1e-6) overflows; the vote must still equal the nearest neighbour's label.
    assert torch.equal(
        knn_predict(train, labels, test, k=50, temperature=1e-6), knn_predict(train, labels, test, k=1)
    )


def test_num_classes_and_half_precision(data):
    train, labels, test = data
    preds = knn_predict(train.half(), labels, test.half(), k=10, num_classes=12)
    assert preds.shape == (50,) and preds.dtype == torch.int64 and int(preds.max()) < 7


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_features": torch.randn(10, 8), "test_features": torch.randn(4, 9)}, InputError, "D=8"),
        ({"train_features": torch.randn(10)}, InputError, "shape"),
        ({"train_labels": torch.zeros(9, dtype=torch.long)}, InputError, "one label per row"),
        ({"train_labels": torch.zeros(10)}, InputError, "integer"),
        ({"k": 0}, ConfigError, "k must be"),
        ({"temperature": 0.0}, ConfigError, "temperature"),
        ({"temperature": -1.0}, ConfigError, "temperature"),
        ({"num_classes": 2, "train_labels": torch.arange(10)}, InputError, "num_classes"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = {
        "train_features": torch.randn(10, 8),
        "train_labels": torch.zeros(10, dtype=torch.long),
        "test_features": torch.randn(4, 8),
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        knn_predict(
            args.pop("train_features"), args.pop("train_labels"), args.pop("test_features"), **args
        )


def test_nan_features_are_rejected():
    test = torch.randn(4, 8)
    test[1, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        knn_predict(torch.randn(10, 8), torch.zeros(10, dtype=torch.long), test)
