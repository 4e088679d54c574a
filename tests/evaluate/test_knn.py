import numpy as np
import pytest
import torch
import torch.nn.functional as F

import contrastkit.evaluate.knn as knn_module
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate import knn_predict
from contrastkit.evaluate.knn import _neighbour_chunks, _resolve_backend


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



# --- backends: torch and faiss give the same neighbours, ties to the lower training index ---------------

HAS_FAISS = knn_module._import_faiss() is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install faiss-cpu)")


def neighbours(test, train, k, backend, exclude_self=False):
    train = F.normalize(train, dim=1)
    chunks = list(_neighbour_chunks(test, train, k, chunk_size=300, backend=backend, exclude_self=exclude_self))
    return torch.cat([sims for _, sims, _ in chunks]), torch.cat([idx for _, _, idx in chunks])


def sign_vectors(n, dim, gen):
    """Random +-1 rows: normalised, their entries are +-1/sqrt(dim) exactly (dim a power of 4), so every
    cosine is a multiple of 1/dim, computed without rounding in any summation order: exact ties galore,
    the same in torch and faiss."""
    return torch.randint(0, 2, (n, dim), generator=gen).float() * 2 - 1


def test_torch_neighbours_break_ties_towards_the_lower_index():
    # Rows 0, 2 and 4 are equal: equally similar to every test row, so they rank 0, 2, 4.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    sims, idx = neighbours(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), train, 3, "torch")
    assert idx.tolist() == [[0, 2, 4], [1, 3, 0]]
    # k = 1 at a tie across the cut: training row 0's label wins, whichever order topk returned.
    labels = torch.tensor([3, 0, 1, 0, 2])
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=1).tolist() == [3]
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=2).tolist() == [1]  # 3 vs 1: lower class


@needs_faiss
@pytest.mark.parametrize("k", [1, 20, 200])
def test_faiss_backend_agrees_with_torch_on_random_data(k):
    gen = torch.Generator().manual_seed(2)
    train, test = torch.randn(3000, 32, generator=gen), torch.randn(800, 32, generator=gen)
    labels = torch.randint(0, 10, (3000,), generator=gen)
    want = knn_predict(train, labels, test, k=k, chunk_size=256)
    assert torch.equal(knn_predict(train, labels, test, k=k, chunk_size=256, backend="faiss"), want)
    torch_sims, torch_idx = neighbours(test, train, k, "torch")
    faiss_sims, faiss_idx = neighbours(test, train, k, "faiss")
    torch.testing.assert_close(faiss_sims, torch_sims, rtol=0, atol=1e-6)
    # The same neighbour sets. The two libraries sum the dot products in different orders, so two
    # neighbours within float32 rounding (~1e-7) of each other can come in either order (4 of the
    # 160,000 positions at k = 200 here): where the order differs, torch's own similarity of faiss's
    # neighbour must equal, to rounding, that of torch's neighbour at the same rank.
    assert torch.equal(faiss_idx.sort(dim=1).values, torch_idx.sort(dim=1).values)
    full = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    torch.testing.assert_close(full.gather(1, faiss_idx), torch_sims, rtol=0, atol=1e-6)
    assert (faiss_idx != torch_idx).sum() <= 10


@needs_faiss
def test_faiss_backend_breaks_ties_exactly_like_torch():
    gen = torch.Generator().manual_seed(3)
    train, test = sign_vectors(2000, 16, gen), sign_vectors(300, 16, gen)
    labels = torch.randint(0, 5, (2000,), generator=gen)
    for exclude_self, queries in ((False, test), (True, train[:300])):
        for k in (1, 37):
            torch_sims, torch_idx = neighbours(queries, train, k, "torch", exclude_self)
            faiss_sims, faiss_idx = neighbours(queries, train, k, "faiss", exclude_self)
            assert torch.equal(faiss_idx, torch_idx) and torch.equal(faiss_sims, torch_sims)
    # Ties inside the top k but not across the cut, where faiss's own list is kept (it returns tied
    # neighbours highest index first) and only reordered: 5 copies of each query among Gaussian rows.
    queries = torch.randn(20, 32, generator=gen)
    mixed = torch.randn(1000, 32, generator=gen)
    copies = torch.randperm(1000, generator=gen)[:100].view(5, 20)  # copies[:, j]: the rows equal to query j
    mixed[copies.flatten()] = queries.repeat(5, 1)
    for exclude_self, rows in ((False, queries), (True, mixed)):
        torch_sims, torch_idx = neighbours(rows, mixed, 10, "torch", exclude_self)
        faiss_sims, faiss_idx = neighbours(rows, mixed, 10, "faiss", exclude_self)
        assert torch.equal(faiss_idx, torch_idx)
        torch.testing.assert_close(faiss_sims, torch_sims, rtol=0, atol=1e-6)
        if not exclude_self:
            assert torch.equal(torch_idx[:, :5], copies.T.sort(dim=1).values)
    # Predictions equal the float64 stable-argsort reference of test_matches_numpy_reference too.
    for k in (1, 75, 2000):
        want = reference_knn(train.double().numpy(), labels.numpy(), test.double().numpy(), k, 0.1, 5)
        for backend in ("torch", "faiss"):
            np.testing.assert_array_equal(knn_predict(train, labels, test, k=k, backend=backend).numpy(), want)


def test_backend_choice(monkeypatch):
    train = torch.randn(100, 4)
    assert _resolve_backend("torch", train, torch.float32) == "torch"
    monkeypatch.setattr(knn_module, "FAISS_AUTO_MIN_REFERENCE", 100)
    monkeypatch.setattr(knn_module, "_import_faiss", lambda: object())
    assert _resolve_backend("auto", train, torch.float32) == "faiss"
    assert _resolve_backend("auto", train[:99], torch.float32) == "torch"  # below the threshold
    assert _resolve_backend("auto", train.double(), torch.float64) == "torch"  # faiss would round to float32
    monkeypatch.setattr(knn_module, "_import_faiss", lambda: None)
    assert _resolve_backend("auto", train, torch.float32) == "torch"
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        knn_predict(train, torch.zeros(100, dtype=torch.long), train[:3], backend="faiss")
    with pytest.raises(ConfigError, match="backend must be"):
        knn_predict(train, torch.zeros(100, dtype=torch.long), train[:3], backend="gpu")
