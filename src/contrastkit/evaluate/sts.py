"""Semantic textual similarity (STS) scoring: Spearman's rank correlation of cosines and gold scores.

The STS benchmarks rate sentence pairs 0..5; a sentence encoder is scored by how well the cosine
similarity of each pair's embeddings RANKS the pairs like the ratings do, Spearman's rho:

    rho = Pearson( rank(x), rank(y) )

with tied values given the average of the ranks they span (so rho matches
``scipy.stats.spearmanr``), as sentence-transformers' EmbeddingSimilarityEvaluator reports it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_embeddings, check_finite
from contrastkit.errors import InputError

ArrayLike = Tensor | np.ndarray | list[float]


def _as_float64(name: str, values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InputError(f"{name} must be 1-D (N,), got shape {array.shape}; flatten it.")
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN/inf value(s), which have no rank.")
    return array


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; a run of equal values shares the mean of the ranks it spans."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_run = np.r_[True, ordered[1:] != ordered[:-1]]
    run = np.cumsum(starts_run) - 1
    run_starts = np.flatnonzero(starts_run)
    run_ends = np.r_[run_starts[1:], len(values)]  # exclusive
    # Sorted positions start..end-1 hold ranks start+1..end, whose mean is (start + 1 + end) / 2.
    ranks = np.empty(len(values))
    ranks[order] = ((run_starts + 1 + run_ends) / 2)[run]
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation of two sequences of N >= 2 paired values (see the module docstring).

    Accepts tensors (any device and floating or integer dtype), NumPy arrays or lists. Computed in
    float64. Where either sequence is constant its ranks have no spread and rho is undefined:
    NaN is returned, as scipy does (a collapsed encoder whose cosines are all equal scores NaN).

    Example:
        >>> round(spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 20.0, 40.0]), 4)  # y ties: ranks 2.5, 2.5
        0.9487
    """
    x_values, y_values = _as_float64("x", x), _as_float64("y", y)
    if x_values.shape != y_values.shape:
        raise InputError(f"x has {len(x_values)} values but y has {len(y_values)}; pass one y per x.")
    if len(x_values) < 2:
        raise InputError(f"spearman needs at least 2 pairs of values to rank, got {len(x_values)}.")
    x_ranks = _average_ranks(x_values) - (len(x_values) + 1) / 2  # the mean rank is (N + 1) / 2
    y_ranks = _average_ranks(y_values) - (len(y_values) + 1) / 2
    spread = np.sqrt((x_ranks ** 2).sum() * (y_ranks ** 2).sum())
    if spread == 0:
        return float("nan")
    # Rounding can push |rho| a hair past 1 for perfectly (anti-)correlated ranks.
    return float(np.clip((x_ranks * y_ranks).sum() / spread, -1.0, 1.0))


def sts_spearman(z_a: Tensor, z_b: Tensor, scores: ArrayLike) -> float:
    """Spearman's rho between the cosine similarity of each pair (z_a[i], z_b[i]) and its gold
    score, the STS benchmark's metric (multiply by 100 for the numbers papers report).

    Args:
        z_a, z_b: (N, D) floating-point embeddings of the two sentences of each pair, N >= 2.
        scores: (N,) gold similarity scores (tensor, array or list).

    Returns:
        rho in [-1, 1] (NaN where all cosines or all scores are equal, see :func:`spearman`).

    Example:
        >>> z_a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
        >>> z_b = torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
        >>> sts_spearman(z_a, z_b, [5.0, 0.0, 2.5])
        1.0
    """
    check_embeddings("z_a", z_a)
    check_embeddings("z_b", z_b)
    if z_a.shape != z_b.shape:
        raise InputError(f"z_a and z_b must have the same shape (N, D); got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}; row i of each is a sentence of pair i.")
    check_finite("z_a", z_a)
    check_finite("z_b", z_b)
    # Half-precision cosines would tie pairs that differ; float32 and float64 keep their dtype.
    dtype = torch.promote_types(z_a.dtype, torch.float32)
    cosines = F.cosine_similarity(z_a.to(dtype), z_b.to(device=z_a.device, dtype=dtype), dim=1)
    gold = _as_float64("scores", scores)
    if len(gold) != z_a.shape[0]:
        raise InputError(f"scores has {len(gold)} entries but there are {z_a.shape[0]} pairs; give one gold "
                         "score per pair.")
    return spearman(cosines, gold)
