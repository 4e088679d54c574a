"""Paired retrieval recall@k: does each query find its own key among all keys (and vice versa)?

For N pairs (q_i, k_i) (a caption and its image, a question and its passage), the relevant keys
of query i are R_i = {i}, or, given group ids g (pairs with equal ids are interchangeable, e.g.
images whose captions are the same sentence), R_i = { j : g_j = g_i }. Ranking every key by
cosine similarity to q_i, the best relevant key's rank is

    best_i     = max_{j in R_i} cos(q_i, k_j)
    rank_i     = 1 + #{ j not in R_i : cos(q_i, k_j) >= best_i }
    recall@k   = 1/N  #{ i : rank_i <= k }

(with one relevant item per query, recall@k is the hit rate or top-k accuracy). Ties with an
irrelevant key count against the query: a key exactly as similar as the right one ranks ahead of
it, so a collapsed encoder whose similarities are all equal scores recall@k = 0 for every k < N
(every k <= N - |R_i| with groups) rather than a recall set by index order. Relevant keys never count
against each other, so the tied copies of a repeated caption do not push each other down.
The reverse direction ranks every query for key i the same way (R_i is symmetric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_class_labels, check_count, check_embeddings, check_finite, check_ndim
from contrastkit.errors import ConfigError, InputError


def _match_ranks(rows: Tensor, columns: Tensor, group_ids: Tensor, chunk_size: int) -> Tensor:
    """rank_i of row i's best relevant column among all columns (see the module docstring), for every i.

    ``rows`` and ``columns`` are L2-normalised; column j is relevant to row i where
    ``group_ids[j] == group_ids[i]``. Rows go ``chunk_size`` at a time, so memory is
    O(chunk_size * N) rather than N x N.
    """
    ranks = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    for start in range(0, rows.shape[0], chunk_size):
        similarities = rows[start:start + chunk_size] @ columns.T
        irrelevant = group_ids[start:start + chunk_size, None] != group_ids[None, :]
        # Every row has a relevant column (its own pair), so the max is finite. Taking it from the
        # same product (not a separate dot product) keeps an exact tie a tie.
        best_relevant = similarities.masked_fill(irrelevant, -math.inf).amax(dim=1)
        ahead = (similarities >= best_relevant[:, None]).logical_and_(irrelevant)
        ranks[start:start + similarities.shape[0]] = 1 + ahead.sum(dim=1)
    return ranks


def retrieval_recall(queries: Tensor, keys: Tensor, ks: Sequence[int] = (1, 5, 10), *,
                     chunk_size: int = 1024, group_ids: Tensor | None = None) -> dict[str, float]:
    """Recall@k of paired retrieval in both directions (see the module docstring).

    Args:
        queries: (N, D) floating-point embeddings; query i's only relevant key is keys[i] (unless
            ``group_ids`` says otherwise).
        keys: (N, D) embeddings of the other side of the pairs.
        ks: the cut-offs k >= 1 to report (k >= N gives 1.0).
        chunk_size: rows of the similarity matrix computed at once; memory is
            O(chunk_size * N), about 100 MB for chunk_size=1024 and N = 10,000 (float32).
        group_ids: optional (N,) integer ids, one per pair, equal for interchangeable pairs (e.g.
            caption ids: equal for equal captions, as the CLIP losses' ``caption_ids``). Query i
            then finds any key j with ``group_ids[j] == group_ids[i]``, and key i any such query;
            ties among those do not count against it. None: every pair is its own group.

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
        >>> # Pairs 0 and 1 share a caption, so their keys are equal and tie for both queries: a miss
        >>> # at k = 1 unless group_ids says either key is right for either query.
        >>> captions = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])
        >>> retrieval_recall(captions, captions, ks=(1,))
        {'q2k_recall@1': 0.3333333333333333, 'k2q_recall@1': 0.3333333333333333}
        >>> retrieval_recall(captions, captions, ks=(1,), group_ids=torch.tensor([7, 7, 3]))
        {'q2k_recall@1': 1.0, 'k2q_recall@1': 1.0}
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
    if group_ids is not None:
        check_ndim("group_ids", group_ids, 1, "(N,)")
        check_class_labels("group_ids", group_ids)
        if group_ids.shape[0] != queries.shape[0]:
            raise InputError(f"group_ids has {group_ids.shape[0]} entries but there are {queries.shape[0]} pairs; "
                             "give one id per pair, equal for interchangeable pairs.")
    check_finite("queries", queries)
    check_finite("keys", keys)
    dtype = torch.promote_types(queries.dtype, torch.float32)
    q = F.normalize(queries.to(dtype), dim=1)
    k_rows = F.normalize(keys.to(device=q.device, dtype=dtype), dim=1)
    groups = torch.arange(q.shape[0], device=q.device) if group_ids is None else group_ids.to(q.device)
    # Under autocast the products would run in bf16, whose rounding turns near ties into ties.
    with torch.autocast(q.device.type, enabled=False):
        # Row 0 ranks the keys for every query (q2k), row 1 the queries for every key (k2q).
        ranks = torch.stack([_match_ranks(q, k_rows, groups, chunk_size),
                             _match_ranks(k_rows, q, groups, chunk_size)])
    hits = ranks[:, :, None] <= torch.tensor(list(ks), device=q.device)
    recalls = hits.double().mean(dim=1).tolist()  # one host transfer for all the numbers
    return {f"{direction}_recall@{k}": recall for direction, row in zip(("q2k", "k2q"), recalls)
            for k, recall in zip(ks, row)}
