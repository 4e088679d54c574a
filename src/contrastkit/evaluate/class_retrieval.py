"""Class-based retrieval: precision@1, R-precision and MAP@R (Musgrave et al., 2020).

Each query ranks the reference set by cosine similarity; the reference items of the query's class
are its relevant items, and R is their number (the class's count in the reference set, less the
query itself when the queries are the reference set). With rel(i) = 1 when the i-th neighbour is
relevant and P(i) = (1/i) sum_{j <= i} rel(j),

    precision@1  = rel(1)
    R-precision  = (1/R) sum_{i=1..R} rel(i)
    AP@R         = (1/R) sum_{i=1..R} P(i) rel(i)

each averaged over the queries ("A Metric Learning Reality Check", Musgrave, Belongie and Lim,
ECCV 2020; MAP@R is the mean of AP@R). AP@R is average precision cut at R: it is 1 only when the
R nearest neighbours are exactly the R relevant items, and unlike recall@k it rewards ranking all
of them first. This is what pytorch-metric-learning's ``AccuracyCalculator`` computes as
``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r``, including its rule for a
query with R = 0 (no other item of its class in the reference set): it is left out of every mean.
Differences: the query itself is left out by its index, where AccuracyCalculator drops the
first neighbour (not always the query when the set holds duplicates); neighbours tied in
similarity are ranked by reference index, lower first (AccuracyCalculator leaves that to faiss);
and similarity is cosine by default (AccuracyCalculator ranks by Euclidean distance, the same
order on normalised features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_class_labels, check_count, check_embeddings, check_finite, check_ndim
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate.knn import Backend, _neighbour_chunks, _resolve_backend


def _check_class_labels(name: str, labels: Tensor, n: int, features_name: str) -> None:
    check_ndim(name, labels, 1, "(N,)")
    check_class_labels(name, labels)
    if labels.shape[0] != n:
        raise InputError(f"{name} has {labels.shape[0]} entries but {features_name} has {n} rows; "
                         "pass one label per row.")


def _relevant_counts(query_labels: Tensor, reference_labels: Tensor, same_set: bool) -> Tensor:
    """R of every query: the reference rows of its class, less itself when ``same_set``."""
    classes, counts = torch.unique(reference_labels, return_counts=True)  # classes come sorted
    position = torch.searchsorted(classes, query_labels).clamp_max(classes.shape[0] - 1)
    found = classes[position] == query_labels
    return torch.where(found, counts[position], 0) - int(same_set)


def class_retrieval_scores(query_features: Tensor, query_labels: Tensor, reference_features: Tensor | None = None,
                           reference_labels: Tensor | None = None, *, same_set: bool | None = None,
                           normalize: bool = True, chunk_size: int = 1024,
                           backend: Backend = "torch") -> dict[str, float]:
    """Precision@1, R-precision and MAP@R of class-based retrieval (see the module docstring).

    Args:
        query_features: (N_query, D) floating-point embeddings.
        query_labels: (N_query,) integer class ids.
        reference_features: (N_ref, D) embeddings to retrieve from; None: the queries themselves
            (leave-one-out retrieval, as for a test set retrieved against itself).
        reference_labels: (N_ref,) class ids of ``reference_features``; required with them.
        same_set: True when reference row i *is* query i, so that query i never retrieves it.
            None (the default) means True when ``reference_features`` is None or is the
            ``query_features`` tensor itself, False otherwise.
        normalize: L2-normalise both sides, ranking by cosine similarity (the geometry contrastive
            losses train); False ranks by the raw inner product.
        chunk_size: queries processed at once; memory is O(chunk_size * N_ref) for the torch
            backend's similarity matrix, never N_query x N_ref.
        backend: the neighbour search, as in :func:`contrastkit.evaluate.knn_predict`: "torch",
            "faiss" (an exact ``IndexFlatIP``, float32, CPU; needs ``pip install faiss-cpu``) or
            "auto". Ties go to the lower reference index with either.

    Returns:
        ``{"precision_at_1": ..., "r_precision": ..., "map_at_r": ...}``, means over the queries
        with R >= 1. Computed in float32 (float64 for float64 inputs) on the reference's device,
        autocast off. Tied similarities are ranked by reference index, so a collapsed encoder
        (all similarities equal) scores by the order of the reference set rather than 0.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> class_retrieval_scores(features, torch.tensor([0, 0, 1, 1]))  # classes = clusters
        {'precision_at_1': 1.0, 'r_precision': 1.0, 'map_at_r': 1.0}
        >>> class_retrieval_scores(features, torch.tensor([0, 1, 0, 1]))  # classes across them
        {'precision_at_1': 0.0, 'r_precision': 0.0, 'map_at_r': 0.0}
    """
    check_embeddings("query_features", query_features, "(N_query, D)")
    _check_class_labels("query_labels", query_labels, query_features.shape[0], "query_features")
    if reference_features is None:
        if reference_labels is not None:
            raise ConfigError("reference_labels was given without reference_features; pass both, or neither "
                              "to retrieve among the queries.")
        if same_set is False:
            raise ConfigError("same_set=False needs reference_features; without them the queries are the "
                              "reference set, so each query must be left out of its own neighbours.")
        reference_features, reference_labels, same_set = query_features, query_labels, True
    elif reference_labels is None:
        raise ConfigError("reference_features was given without reference_labels; pass the class id of "
                          "every reference row.")
    if same_set is None:
        same_set = reference_features is query_features
    check_embeddings("reference_features", reference_features, "(N_ref, D)")
    _check_class_labels("reference_labels", reference_labels, reference_features.shape[0], "reference_features")
    if query_features.shape[1] != reference_features.shape[1]:
        raise InputError(f"query_features has D={query_features.shape[1]} but reference_features has "
                         f"D={reference_features.shape[1]}; embed both with the same encoder.")
    if query_features.shape[0] == 0 or reference_features.shape[0] == 0:
        raise InputError("query_features and reference_features must each have at least one row.")
    device = reference_features.device
    query_labels = query_labels.to(device=device, dtype=torch.long)  # bool ids too
    reference_labels = reference_labels.to(device=device, dtype=torch.long)
    if same_set and (query_features.shape != reference_features.shape
                     or not torch.equal(query_labels, reference_labels)):
        raise InputError("same_set=True needs reference row i to be query i (same shape, same labels); "
                         "pass same_set=False for separate query and reference sets.")
    check_count("chunk_size", chunk_size, 1, "it bounds the queries whose similarities are held at once.")
    check_finite("query_features", query_features)
    if reference_features is not query_features:
        check_finite("reference_features", reference_features)

    relevant = _relevant_counts(query_labels, reference_labels, same_set)
    counted = relevant > 0
    if not bool(counted.any()):
        raise InputError("no query has another item of its class in the reference set (R = 0 for all), so "
                         "there is nothing to retrieve; check that the query and reference labels use the "
                         "same class ids.")
    k = int(relevant.max())  # every query's top R lies in the top k
    dtype = torch.promote_types(query_features.dtype, torch.float32)
    reference = reference_features.to(dtype)
    if normalize:
        reference = F.normalize(reference, dim=1)
    backend = _resolve_backend(backend, reference, dtype)
    ranks = torch.arange(1, k + 1, device=device)
    # Per query, so that the means do not depend on how the queries were chunked.
    scores = torch.zeros(3, query_features.shape[0], dtype=torch.float64, device=device)
    # Under autocast the products would run in bf16, whose rounding turns near ties into ties.
    with torch.autocast(device.type, enabled=False):
        for start, _, indices in _neighbour_chunks(query_features, reference, k, chunk_size=chunk_size,
                                                   backend=backend, normalize=normalize, exclude_self=same_set):
            stop = start + indices.shape[0]
            r = relevant[start:stop]
            # rel(i) for i <= R only: neighbours past a query's own R do not count.
            hits = (reference_labels[indices] == query_labels[start:stop, None]) & (ranks <= r[:, None])
            precision = hits.cumsum(dim=1).double() / ranks  # P(i)
            scores[:, start:stop] = torch.stack([hits[:, 0].double(), hits.sum(dim=1).double() / r.clamp_min(1),
                                                 (precision * hits).sum(dim=1) / r.clamp_min(1)])
    p1, r_precision, map_at_r = scores[:, counted].mean(dim=1).tolist()  # one host transfer for all three
    return {"precision_at_1": p1, "r_precision": r_precision, "map_at_r": map_at_r}
