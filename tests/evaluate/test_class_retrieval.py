import math

import numpy as np
import pytest
import torch

import contrastkit.evaluate.knn as knn_module
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate import class_retrieval_scores

HAS_FAISS = knn_module._import_faiss() is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install faiss-cpu)")


def reference_scores(queries, query_labels, reference, reference_labels, same_set, normalize=True):
    """Float64 brute force over the definitions: a full stable sort of every query's similarities
    (ties: lower reference index first), the query's own row removed by index when ``same_set``."""
    if normalize:
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    p1, r_precision, average_precision = [], [], []
    for i, query in enumerate(queries):
        order = np.argsort(-(reference @ query), kind="stable")
        if same_set:
            order = order[order != i]
        r = int(np.sum(reference_labels == query_labels[i])) - int(same_set)
        if r == 0:
            continue  # a lone query: nothing to retrieve, left out of the means
        relevant = reference_labels[order[:r]] == query_labels[i]
        precision = np.cumsum(relevant) / np.arange(1, r + 1)
        p1.append(float(relevant[0]))
        r_precision.append(relevant.sum() / r)
        average_precision.append(np.sum(precision * relevant) / r)
    return {"precision_at_1": np.mean(p1), "r_precision": np.mean(r_precision),
            "map_at_r": np.mean(average_precision)}


def on_circle(degrees):
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


# Six points on the unit circle; cosine order is angular-gap order. Classes A = 0, B = 1.
CIRCLE = on_circle([0.0, 20.0, 35.0, 80.0, 130.0, 185.0])
CIRCLE_LABELS = torch.tensor([0, 1, 0, 0, 1, 1])  # A B A A B B


def test_hand_computed_leave_one_out():
    # Every class has 3 points, so R = 2 for every query. Neighbours in order (gap in degrees):
    #   p0   0 A: p1 20 B, p2 35 A        rel 0 1   AP = (1/2)(1/2)        = 1/4   RP 1/2  P@1 0
    #   p1  20 B: p2 15 A, p0 20 A        rel 0 0   AP = 0                         RP 0    P@1 0
    #   p2  35 A: p1 15 B, p0 35 A        rel 0 1   AP = 1/4                       RP 1/2  P@1 0
    #   p3  80 A: p2 45 A, p4 50 B        rel 1 0   AP = (1/2)(1)          = 1/2   RP 1/2  P@1 1
    #   p4 130 B: p3 50 A, p5 55 B        rel 0 1   AP = 1/4                       RP 1/2  P@1 0
    #   p5 185 B: p4 55 B, p3 105 A       rel 1 0   AP = 1/2                       RP 1/2  P@1 1
    # MAP@R = (1/4 + 0 + 1/4 + 1/2 + 1/4 + 1/2) / 6 = 7/24, RP = 5/12, P@1 = 2/6.
    want = {"precision_at_1": 1 / 3, "r_precision": 5 / 12, "map_at_r": 7 / 24}
    assert class_retrieval_scores(CIRCLE, CIRCLE_LABELS) == pytest.approx(want, abs=1e-12)
    # The same tensor passed as the reference set is recognised as leave-one-out.
    assert class_retrieval_scores(CIRCLE, CIRCLE_LABELS, CIRCLE, CIRCLE_LABELS) == pytest.approx(want, abs=1e-12)


def test_hand_computed_separate_queries():
    # Reference = the six circle points (R = 3 for A and B), queries elsewhere:
    #   25 A: p1 5 B, p2 10 A, p0 25 A          rel 0 1 1  AP = (1/3)(1/2 + 2/3) = 7/18  RP 2/3  P@1 0
    #  100 B: p3 20 A, p4 30 B, p2 65 A         rel 0 1 0  AP = (1/3)(1/2)       = 1/6   RP 1/3  P@1 0
    #    0 C: no class-C reference point, R = 0: left out of the means
    #  182 B: p5 3 B, p4 52 B, p3 102 A         rel 1 1 0  AP = (1/3)(1 + 1)     = 2/3   RP 2/3  P@1 1
    queries = on_circle([25.0, 100.0, 0.0, 182.0])
    labels = torch.tensor([0, 1, 2, 1])
    got = class_retrieval_scores(queries, labels, CIRCLE, CIRCLE_LABELS)
    assert got == pytest.approx({"precision_at_1": 1 / 3, "r_precision": 5 / 9, "map_at_r": 11 / 27}, abs=1e-12)


@pytest.fixture(scope="module")
def clusters():
    """600 float64 points in 8 classes of uneven size, class means close enough to mix the ranks."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (600,), generator=gen)
    centers = torch.randn(8, 24, generator=gen, dtype=torch.float64)
    features = centers[labels] + 1.5 * torch.randn(600, 24, generator=gen, dtype=torch.float64)
    return features, labels


@pytest.mark.parametrize("normalize", [True, False])
def test_leave_one_out_matches_brute_force(clusters, normalize):
    features, labels = clusters
    got = class_retrieval_scores(features, labels, normalize=normalize, chunk_size=128)
    want = reference_scores(features.numpy(), labels.numpy(), features.numpy(), labels.numpy(), True, normalize)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.1 < got["map_at_r"] < got["r_precision"] < got["precision_at_1"] < 1


def test_separate_sets_match_brute_force(clusters):
    features, labels = clusters
    queries, query_labels = features[:150], labels[:150].clone()
    query_labels[:5] = 9  # a class absent from the reference set: lone queries
    got = class_retrieval_scores(queries, query_labels, features[150:], labels[150:], chunk_size=64)
    want = reference_scores(queries.numpy(), query_labels.numpy(), features[150:].numpy(), labels[150:].numpy(),
                            False)
    assert got == pytest.approx(want, abs=1e-12)


def tied_features():
    """Rows drawn from 6 distinct vectors (exact duplicates tie exactly), labels independent of them."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(6, 8, generator=gen)
    features = base[torch.randint(0, 6, (300,), generator=gen)]
    return features, torch.randint(0, 3, (300,), generator=gen)


def test_ties_go_to_the_lower_reference_index():
    features, labels = tied_features()
    got = class_retrieval_scores(features, labels, chunk_size=50)
    # The brute force is float64; the duplicates tie exactly in either precision.
    want = reference_scores(features.double().numpy(), labels.numpy(), features.double().numpy(), labels.numpy(),
                            True)
    assert got == pytest.approx(want, abs=1e-12)


def test_chunk_size_does_not_change_the_scores(clusters):
    features, labels = (clusters[0].float(), clusters[1])
    full = class_retrieval_scores(features, labels, chunk_size=10_000)
    for chunk_size in (1, 7, 100):
        assert class_retrieval_scores(features, labels, chunk_size=chunk_size) == full


def test_same_set_leaves_the_query_out(clusters):
    features, labels = clusters
    copy = features.clone()  # an equal but separate tensor: not recognised as the same set
    loo = class_retrieval_scores(features, labels)
    assert class_retrieval_scores(features, labels, copy, labels, same_set=True) == loo
    # Without leaving it out, every query finds itself first.
    with_self = class_retrieval_scores(features, labels, copy, labels)
    assert with_self["precision_at_1"] == 1.0 and with_self["map_at_r"] > loo["map_at_r"]


@needs_faiss
@pytest.mark.parametrize("same_set", [True, False])
def test_faiss_backend_gives_the_same_scores(clusters, same_set):
    features, labels = clusters[0].float(), clusters[1]
    reference = (None, None) if same_set else (features[200:], labels[200:])
    torch_scores = class_retrieval_scores(features[:400], labels[:400], *reference, chunk_size=100)
    faiss_scores = class_retrieval_scores(features[:400], labels[:400], *reference, chunk_size=100,
                                          backend="faiss")
    # Equal here; in general two neighbours within float32 rounding (~1e-7) of each other may come in
    # either order (the libraries sum the dot products differently), which can move one query's
    # scores: by at most 1/400 in the means.
    assert faiss_scores == pytest.approx(torch_scores, abs=1 / 400)


@needs_faiss
def test_faiss_backend_breaks_ties_the_same_way():
    features, labels = tied_features()
    assert (class_retrieval_scores(features, labels, backend="faiss", chunk_size=64)
            == class_retrieval_scores(features, labels, chunk_size=64))


def test_faiss_backend_without_faiss_names_the_package(monkeypatch):
    monkeypatch.setattr(knn_module, "_import_faiss", lambda: None)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        class_retrieval_scores(CIRCLE, CIRCLE_LABELS, backend="faiss")
    # "auto" falls back to torch instead.
    assert class_retrieval_scores(CIRCLE, CIRCLE_LABELS, backend="auto")["map_at_r"] == pytest.approx(7 / 24)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query_features": torch.randn(6)}, InputError, "shape"),
        ({"query_labels": torch.zeros(6)}, InputError, "integer"),
        ({"query_labels": torch.zeros(5, dtype=torch.long)}, InputError, "one label per row"),
        ({"reference_labels": torch.zeros(6, dtype=torch.long)}, ConfigError, "without reference_features"),
        ({"reference_features": torch.randn(6, 2)}, ConfigError, "without reference_labels"),
        ({"same_set": False}, ConfigError, "same_set=False needs"),
        ({"reference_features": torch.randn(6, 3), "reference_labels": torch.arange(6)}, InputError, "D=2"),
        ({"reference_features": torch.randn(5, 2), "reference_labels": torch.arange(5), "same_set": True},
         InputError, "same_set=True needs"),
        ({"query_labels": torch.arange(6)}, InputError, "R = 0"),
        ({"chunk_size": 0}, ConfigError, "chunk_size"),
        ({"backend": "annoy"}, ConfigError, "backend must be"),
        ({"query_features": torch.full((6, 2), float("inf"))}, InputError, "NaN/inf"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = {"query_features": torch.randn(6, 2), "query_labels": torch.tensor([0, 0, 1, 1, 2, 2])}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        class_retrieval_scores(args.pop("query_features"), args.pop("query_labels"), **args)
