"""Weighted k-nearest-neighbour classification of frozen features (InstDisc-style kNN monitor).

Also the exact nearest-neighbour search it shares with :mod:`contrastkit.evaluate.class_retrieval`:
in torch (chunked similarity matrix + ``topk``) or, with faiss installed, in a flat (exact) faiss
index. Both break ties the same way, towards the lower reference index (see :func:`_canonical_topk`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_finite, check_ndim
from contrastkit.errors import ConfigError, InputError

Backend = Literal["auto", "torch", "faiss"]

# backend="auto" uses faiss from this many reference rows on (CPU, float32 or half features only).
# Measured on 2 busy CPU cores (D=256, 2048 queries, k=200): faiss took 0.8x the torch path's time
# at 5,000 to 100,000 rows (1.3 s vs 1.6 s, 4.9 s vs 6.5 s), a modest gain, while the torch path
# holds a chunk_size x N_reference float32 similarity matrix: 200 MB at 50,000 rows (CIFAR's
# training set), 5 GB at ImageNet's 1.28 M. Smaller sets keep the torch path, whose results do not
# depend on an optional package's float rounding; from there on the memory and time saved win.
FAISS_AUTO_MIN_REFERENCE = 50_000


def _check_labels(name: str, labels: Tensor, n: int, features_name: str) -> None:
    check_ndim(name, labels, 1, "(N,)")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {labels.dtype}; convert with .long().")
    if labels.shape[0] != n:
        raise InputError(
            f"{name} has {labels.shape[0]} entries but {features_name} has {n} rows; pass one label per row."
        )


def _resolve_num_classes(labels: Tensor, num_classes: int | None, name: str) -> int:
    """Return ``num_classes`` (default: largest label + 1) after checking the non-empty ``labels`` fit it."""
    if int(labels.min()) < 0:
        raise InputError(f"{name} holds negative values; class indices must be in [0, num_classes).")
    top = int(labels.max()) + 1
    if num_classes is None:
        return top
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}.")
    if top > num_classes:
        raise InputError(
            f"{name} holds class {top - 1} but num_classes={num_classes}; raise num_classes or fix the labels."
        )
    return num_classes


def _check_split(train_features: Tensor, train_labels: Tensor, test_features: Tensor) -> None:
    """Validate a (train features, train labels, test features) triple; shared with the linear probe."""
    check_ndim("train_features", train_features, 2, "(N_train, D)")
    check_ndim("test_features", test_features, 2, "(N_test, D)")
    if train_features.shape[1] != test_features.shape[1]:
        raise InputError(
            f"train_features has D={train_features.shape[1]} but test_features has D={test_features.shape[1]}; "
            "extract both with the same encoder."
        )
    if train_features.shape[0] == 0:
        raise InputError("train_features is empty; pass at least one training row.")
    _check_labels("train_labels", train_labels, train_features.shape[0], "train_features")
    check_finite("train_features", train_features)
    check_finite("test_features", test_features)


def _import_faiss():
    """Return the faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _resolve_backend(backend: str, reference: Tensor, dtype: torch.dtype) -> str:
    """Return the search ("torch" or "faiss") that ``backend`` (see :func:`knn_predict`) picks for the
    prepared ``reference`` set, compared in ``dtype``; ConfigError for an unknown name or missing faiss."""
    if backend not in ("auto", "torch", "faiss"):
        raise ConfigError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}.")
    if backend == "faiss":
        if _import_faiss() is None:
            raise ConfigError("backend='faiss' needs faiss, which is not installed; install it with "
                              "`pip install faiss-cpu`, or pass backend='torch'.")
        return "faiss"
    if backend == "auto":
        # faiss-cpu would copy GPU features to the host and round float64 to float32; on those the
        # torch path is the faster or the more exact one, so "auto" keeps it.
        if (reference.device.type == "cpu" and dtype != torch.float64
                and reference.shape[0] >= FAISS_AUTO_MIN_REFERENCE and _import_faiss() is not None):
            return "faiss"
    return "torch"


def _canonical_order(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row's (similarity, index) pairs by similarity, descending, then index, ascending.

    Rows already strictly descending (no ties: the usual case, as ``topk`` and faiss return
    them) are left as they are; the others are sorted in place.
    """
    unsorted = (values[:, 1:] >= values[:, :-1]).any(dim=1)
    if bool(unsorted.any()):
        rows = unsorted.nonzero().squeeze(1)
        by_index = indices[rows].argsort(dim=1)
        row_values, row_indices = values[rows].gather(1, by_index), indices[rows].gather(1, by_index)
        # A stable sort keeps equal similarities in the ascending index order just made.
        row_values, order = row_values.sort(dim=1, descending=True, stable=True)
        values[rows], indices[rows] = row_values, row_indices.gather(1, order)
    return values, indices


def _canonical_topk(similarities: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each row's ``k`` largest similarities and their column indices, deterministically.

    ``topk`` picks arbitrarily among columns tied with the k-th value, and orders ties
    arbitrarily; here ties go to the lower column index: the result is the first ``k`` columns
    of a stable descending sort. One extra value is taken to see whether a tie crosses the cut
    (the (k+1)-th equals the k-th); only such rows are redone over their full length.
    """
    if k >= similarities.shape[1]:
        return _canonical_order(*similarities.topk(k, dim=1))
    values, indices = similarities.topk(k + 1, dim=1)
    crossing = values[:, k] == values[:, k - 1]
    values, indices = values[:, :k], indices[:, :k]
    if bool(crossing.any()):  # rare: exact ties across the cut (duplicates, a collapsed encoder)
        rows = crossing.nonzero().squeeze(1)
        sub, kth = similarities[rows], values[rows, k - 1 :]
        above, tied = sub > kth, sub == kth
        needed = k - above.sum(dim=1, keepdim=True)
        chosen = above | (tied & (tied.cumsum(dim=1) <= needed))
        indices[rows] = chosen.nonzero()[:, 1].view(-1, k)  # nonzero lists columns in order
        values[rows] = sub.gather(1, indices[rows])
    return _canonical_order(values, indices)


def _faiss_topk(index, reference: Tensor, queries: Tensor, k: int,
                self_rows: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`_canonical_topk` of ``queries @ reference.T`` from a faiss inner-product ``index``.

    ``queries`` and ``reference`` are float32 CPU tensors, ``reference`` the rows in ``index``;
    ``self_rows`` (or None) gives the reference row to leave out for each query. faiss returns
    an exact top list but its own order among ties, so one extra neighbour is fetched: where it
    ties with the k-th, the row is redone in torch, and otherwise the set is unambiguous and
    only its order is made canonical.
    """
    batch = queries.shape[0]
    fetch = min(k + 1 + (self_rows is not None), index.ntotal)
    values, indices = index.search(queries.contiguous().numpy(), fetch)
    values, indices = torch.from_numpy(values), torch.from_numpy(indices)
    if self_rows is not None:
        keep = indices != self_rows[:, None]
        # A query that is not among its own top neighbours (a duplicate outranks it, or
        # unnormalised features) drops the surplus last neighbour instead.
        keep[keep.all(dim=1), -1] = False
        values, indices = values[keep].view(batch, fetch - 1), indices[keep].view(batch, fetch - 1)
    ambiguous = values[:, k] == values[:, k - 1] if values.shape[1] > k else None
    values, indices = _canonical_order(values[:, :k], indices[:, :k])
    if ambiguous is not None and bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        similarities = queries[rows] @ reference.T
        if self_rows is not None:
            similarities[torch.arange(rows.shape[0]), self_rows[rows]] = -torch.inf
        values[rows], indices[rows] = _canonical_topk(similarities, k)
    return values, indices


def _neighbour_chunks(queries: Tensor, reference: Tensor, k: int, *, chunk_size: int, backend: str,
                      normalize: bool = True, exclude_self: bool = False) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(start, similarities, indices)``: the top-``k`` reference rows of each query row.

    ``reference`` is prepared (normalised if wanted, compute dtype, on its device); query rows go
    ``chunk_size`` at a time, moved to that device and dtype (and normalised when ``normalize``).
    With ``exclude_self``, query row i never gets reference row i (queries *are* the reference).
    Each chunk's (B, k) results are sorted by similarity, ties by lower reference index, on the
    reference's device. ``backend`` is "torch" or "faiss" (resolved by :func:`_resolve_backend`).
    """
    device, dtype = reference.device, reference.dtype
    if backend == "faiss":
        faiss = _import_faiss()
        host = reference.detach().to("cpu", torch.float32).contiguous()
        index = faiss.IndexFlatIP(host.shape[1])
        index.add(host.numpy())
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start:start + chunk_size].to(device=device, dtype=dtype)
        if normalize:
            chunk = F.normalize(chunk, dim=1)
        rows = torch.arange(start, start + chunk.shape[0], device=device) if exclude_self else None
        if backend == "faiss":
            values, indices = _faiss_topk(index, host, chunk.detach().to("cpu", torch.float32), k,
                                          None if rows is None else rows.cpu())
            yield start, values.to(device=device, dtype=dtype), indices.to(device)
        else:
            similarities = chunk @ reference.T
            if rows is not None:
                similarities[torch.arange(chunk.shape[0], device=device), rows] = -torch.inf
            yield start, *_canonical_topk(similarities, k)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    backend: Backend = "torch",
) -> Tensor:
    """Predict test labels by a weighted vote of the ``k`` most cosine-similar training features.

    Features are L2-normalised; each of a test row's top-``k`` neighbours votes for its
    label with weight ``exp(similarity / temperature)`` and the class with the largest
    summed vote wins (ties go to the lowest class index). ``k`` larger than the training
    set is clipped to it. Test rows are processed ``chunk_size`` at a time, so memory is
    O(chunk_size * N_train), on ``train_features``' device (test chunks are moved there).
    Half-precision features are compared in float32; float32/float64 keep their dtype.

    Neighbours tied in similarity are taken in reference order (lower training index first),
    with either backend: ``backend="torch"`` (the default, as before the option existed) searches
    with a chunked similarity matrix and ``topk``; ``backend="faiss"`` with an exact ``faiss.IndexFlatIP`` over the
    normalised training features on the CPU, in float32 (float64 inputs are rounded; results come
    back to ``train_features``' device); ``backend="auto"`` uses faiss when it is installed, the
    features are float32 or half on the CPU and there are at least ``FAISS_AUTO_MIN_REFERENCE``
    (50,000) training rows, torch otherwise. The two agree on the neighbours and predictions
    except where two similarities differ by float32 rounding (~1e-7), which the two libraries
    sum in different orders.

    Returns:
        int64 predicted labels of shape (N_test,), on ``train_features``' device.

    Example:
        >>> train = torch.randn(100, 16); labels = torch.randint(0, 5, (100,))
        >>> knn_predict(train, labels, train[:10], k=20).shape
        torch.Size([10])
    """
    _check_split(train_features, train_labels, test_features)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}.")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}; 0.1 is a common choice.")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}.")
    device = train_features.device
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    labels = train_labels.to(device=device, dtype=torch.long)
    classes = _resolve_num_classes(labels, num_classes, "train_labels")
    train = F.normalize(train_features.to(dtype), dim=1)
    k = min(k, train.shape[0])

    backend = _resolve_backend(backend, train, dtype)

    preds = torch.empty(test_features.shape[0], dtype=torch.long, device=device)
    for start, sims, idx in _neighbour_chunks(test_features, train, k, chunk_size=chunk_size, backend=backend):
        # Subtracting each row's best similarity leaves the argmax unchanged but keeps
        # exp() finite for small temperatures (exp(1 / 0.01) overflows float32).
        weights = ((sims - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(sims.shape[0], classes, dtype=dtype, device=device)
        votes.scatter_add_(1, labels[idx], weights)
        preds[start : start + sims.shape[0]] = votes.argmax(dim=1)
    return preds
