"""Paired retrieval recall@k: does each query find its own key among all keys (and vice versa)?

For N pairs (q_i, k_i) (a caption and its image, a question and its passage), key i is the only
relevant key of query i. Ranking every key by cosine similarity to q_i,

    rank_i     = 1 + #{ j != i : cos(q_i, k_j) >= cos(q_i, k_i) }
    recall@k   = 1/N  #{ i : rank_i <= k }

(with one relevant item per query, recall@k is the hit rate or top-k accuracy). Ties count
against the query: a key exactly as similar as the right one ranks ahead of it, so a collapsed
encoder whose similarities are all equal scores recall@k = 0 for every k < N rather than a
recall set by index order. The reverse direction ranks every query for key i the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_count, check_embeddings, check_finite
from contrastkit.errors import ConfigError, InputError


def _match_ranks(rows: Tensor, columns: Tensor, chunk_size: int) -> Tensor:
    """rank_i of column i among all columns for row i (see the module docstring), for every i.

    ``rows`` and ``columns`` are L2-normalised; rows go ``chunk_size`` at a time, so memory is
    O(chunk_size * N) rather than N x N.
    """
    ranks = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    for start in range(0, rows.shape[0], chunk_size):
        similarities = rows[start:start + chunk_size] @ columns.T
        # Row r of the chunk is pair start + r: its match sits at column start + r. Taking it from
        # the same product (not a separate dot product) keeps an exact tie a tie.
        matched = similarities.diagonal(start)
        ranks[start:start + similarities.shape[0]] = (similarities >= matched[:, None]).sum(dim=1)
    return ranks


def retrieval_recall(queries: Tensor, keys: Tensor, ks: Sequence[int] = (1, 5, 10), *,
                     chunk_size: int = 1024) -> dict[str, float]:
    """Recall@k of paired retrieval in both directions (see the module docstring).

    Args:
        queries: (N, D) floating-point embeddings; query i's only relevant key is keys[i].
        keys: (N, D) embeddings of the other side of the pairs.
        ks: the cut-offs k >= 1 to report (k >= N gives 1.0).
        chunk_size: rows of the similarity matrix computed at once; memory is
            O(chunk_size * N), about 50 MB for chunk_size=1024 and N = 10,000.

    Returns:
        ``{"q2k_recall@k": ..., "k2q_recall@k": ...}`` for every k in ``ks``: "q2k" ranks the keys
        for each query (text-to-image, question-to-passage), "k2q" ranks the queries for each key.
        Computed in float32 (float64 for float64 inputs) on ``queries``' device, autocast off.

    Example:
        >>> queries = torch.eye(4)
        >>> keys = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0.5]])
        >>> # q2k: queries 2 and 3 each prefer the other's key. k2q: key 2 is as close to query 3
        >>> # as to its own query 2, a tie that counts as a miss at k = 1.
        >>> retrieval_recall(queries, keys, ks=(1, 2))
        {'q2k_recall@1': 0.5, 'q2k_recall@2': 1.0, 'k2q_recall@1': 0.5, 'k2q_recall@2': 1.0}
    """
    check_embeddings("queries", queries)
    check_embeddings("keys", keys)
    if queries.shape != keys.shape:
        raise InputError(f"queries and keys must have the same shape (N, D); got {tuple(queries.shape)} and "
                         f"{tuple(keys.shape)}; key i must be the match of query i.")
    if queries.shape[0] == 0:
        raise InputError("queries and keys are empty; pass at least one pair.")
    if isinstance(ks, (int, str)) or not ks:
        raise ConfigError(f"ks must be a non-empty sequence of cut-offs, e.g. (1, 5, 10), got {ks!r}.")
    for k in ks:
        check_count("every k in ks", k, 1, "recall@k counts the queries whose match is in the top k.")
    check_count("chunk_size", chunk_size, 1, "it bounds the rows of the similarity matrix held at once.")
    check_finite("queries", queries)
    check_finite("keys", keys)
    dtype = torch.promote_types(queries.dtype, torch.float32)
    q = F.normalize(queries.to(dtype), dim=1)
    k_rows = F.normalize(keys.to(device=q.device, dtype=dtype), dim=1)
    # Under autocast the products would run in bf16, whose rounding turns near ties into ties.
    with torch.autocast(q.device.type, enabled=False):
        # Row 0 ranks the keys for every query (q2k), row 1 the queries for every key (k2q).
        ranks = torch.stack([_match_ranks(q, k_rows, chunk_size), _match_ranks(k_rows, q, chunk_size)])
    hits = ranks[:, :, None] <= torch.tensor(list(ks), device=q.device)
    recalls = hits.double().mean(dim=1).tolist()  # one host transfer for all the numbers
    return {f"{direction}_recall@{k}": recall for direction, row in zip(("q2k", "k2q"), recalls)
            for k, recall in zip(ks, row)}
