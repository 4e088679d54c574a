"""Full-ranking metrics of a recommender: every user's held-out items ranked among all items, the
items the user was already seen with (training, and validation for the test split) masked out.

For a user u with held-out items T(u) and the top-K list of the items left after masking, with
hit_r = 1 when the item at rank r (1-based) is in T(u):

    Recall@K = sum_r hit_r / |T(u)|            Hit@K = 1 if any hit_r
    MRR@K    = 1 / (rank of the first hit)      (0 without a hit)
    NDCG@K   = sum_r hit_r / log2(r + 1)  /  sum_{r <= min(|T(u)|, K)} 1 / log2(r + 1)

each averaged over the users with at least one held-out item: RecBole's definitions, so figures
compare with its tables. Users are scored a batch at a time on the device, and no (users x items)
matrix larger than a batch's is held.

Example:
    >>> scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    >>> ranking_metrics(lambda users: scores[users], num_users=1, num_items=4, truth=torch.tensor([[0, 2]]),
    ...                 seen=torch.tensor([[0, 0]]), ks=(2,))  # item 0 seen: items 1 and 2 are the top 2
    {'recall@2': 1.0, 'ndcg@2': 0.6309297535714575, 'hit@2': 1.0, 'mrr@2': 0.5}
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from contrastkit.errors import InputError

METRICS = ("recall", "ndcg", "hit", "mrr")


def _by_user(pairs: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """(user, item) rows sorted by user, and each user's offset into them (num_users + 1)."""
    order = torch.argsort(pairs[:, 0], stable=True)
    pairs = pairs[order]
    offsets = torch.zeros(num_users + 1, dtype=torch.long, device=pairs.device)
    offsets[1:] = torch.cumsum(torch.bincount(pairs[:, 0], minlength=num_users), 0)
    return pairs, offsets


def _check_pairs(name: str, pairs: Tensor, num_users: int, num_items: int) -> None:
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype != torch.long:
        raise InputError(f"{name} must be (N, 2) int64 rows of (user, item), got {tuple(pairs.shape)} "
                         f"{pairs.dtype}.")
    if len(pairs) and (pairs.min() < 0 or pairs[:, 0].max() >= num_users or pairs[:, 1].max() >= num_items):
        raise InputError(f"{name} holds ids outside 0..{num_users - 1} (users) or 0..{num_items - 1} (items); "
                         "map the raw ids to internal ones first.")


def ranking_metrics(score: Callable[[Tensor], Tensor], *, num_users: int, num_items: int, truth: Tensor,
                    seen: Tensor | None = None, ks: Sequence[int] = (10, 20), batch_size: int = 1024,
                    device: torch.device | str | None = None) -> dict[str, float]:
    """Recall, NDCG, Hit and MRR at each K over all items (see the module docstring).

    Args:
        score: maps a 1-D tensor of user ids (on ``device``) to their (B, num_items) scores.
        num_users, num_items: the id ranges.
        truth: (N, 2) int64 (user, item) held-out interactions.
        seen: (M, 2) int64 (user, item) interactions to mask (never ranked); None masks nothing.
        ks: the cut-offs.
        batch_size: users scored at a time.
        device: where the scores are computed (default: ``truth``'s device).

    Returns:
        ``{"recall@K": ..., "ndcg@K": ..., "hit@K": ..., "mrr@K": ...}`` for every K, as floats.
    """
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise InputError(f"ks must be cut-offs >= 1, got {ks}.")
    device = torch.device(device) if device is not None else truth.device
    seen = truth.new_zeros((0, 2)) if seen is None else seen
    _check_pairs("truth", truth, num_users, num_items)
    _check_pairs("seen", seen, num_users, num_items)
    truth, truth_offsets = _by_user(truth.to(device), num_users)
    seen, seen_offsets = _by_user(seen.to(device), num_users)
    largest = min(ks[-1], num_items)
    sums = {f"{name}@{k}": torch.zeros((), dtype=torch.float64, device=device) for k in ks for name in METRICS}
    discounts = 1.0 / torch.log2(torch.arange(2, largest + 2, device=device, dtype=torch.float64))
    cumulative_discounts = torch.cat([discounts.new_zeros(1), torch.cumsum(discounts, 0)])
    for start in range(0, num_users, batch_size):
        end = min(start + batch_size, num_users)
        users = torch.arange(start, end, device=device)
        scores = score(users).to(device=device, dtype=torch.float32).clone()
        if scores.shape != (end - start, num_items):
            raise InputError(f"score returned {tuple(scores.shape)} for {end - start} users; it must return "
                             f"(users, {num_items}).")
        # The batch's users are a contiguous id range, so their rows are one slice of the sorted pairs.
        masked = seen[seen_offsets[start]:seen_offsets[end]]
        scores[masked[:, 0] - start, masked[:, 1]] = float("-inf")
        held = truth[truth_offsets[start]:truth_offsets[end]]
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[held[:, 0] - start, held[:, 1]] = True
        counts = (truth_offsets[start + 1:end + 1] - truth_offsets[start:end]).to(torch.float64)
        top = scores.topk(largest, dim=1).indices
        hits = relevant.gather(1, top).to(torch.float64)
        has_truth = counts > 0
        for k in ks:
            hits_k = hits[:, :k]
            found = hits_k.sum(1)
            sums[f"recall@{k}"] += (found[has_truth] / counts[has_truth]).sum()
            sums[f"hit@{k}"] += (found > 0).to(torch.float64).sum()
            first = torch.where(found > 0, 1.0 / (hits_k.argmax(1) + 1).to(torch.float64), 0.0)
            sums[f"mrr@{k}"] += first.sum()
            ideal = cumulative_discounts[counts.clamp(max=k).long()]
            dcg = (hits_k * discounts[:k]).sum(1)
            sums[f"ndcg@{k}"] += (dcg[has_truth] / ideal[has_truth]).sum()
    evaluated = int((truth_offsets[1:] > truth_offsets[:-1]).sum())
    if evaluated == 0:
        raise InputError("truth holds no interaction, so there is no user to rank items for.")
    return {key: float(value / evaluated) for key, value in sums.items()}


def popularity_scores(train: Tensor, num_items: int) -> Callable[[Tensor], Tensor]:
    """The popularity baseline's scorer: every user gets each item's number of training
    interactions.

    Args:
        train: (N, 2) int64 (user, item) training interactions.
        num_items: the item id range.
    """
    counts = torch.bincount(train[:, 1], minlength=num_items).to(torch.float32)
    return lambda users: counts.to(users.device).expand(len(users), num_items)


def embedding_scores(user_embeddings: Tensor, item_embeddings: Tensor) -> Callable[[Tensor], Tensor]:
    """The scorer of a model whose score is the dot product of a user's and an item's embedding.

    Args:
        user_embeddings: (num_users, D).
        item_embeddings: (num_items, D).
    """
    return lambda users: user_embeddings[users.to(user_embeddings.device)] @ item_embeddings.T


def similar_items(item_embeddings: Tensor, queries: Tensor, k: int = 10) -> Tensor:
    """Item-to-item retrieval: the ``k`` items nearest to each query item by cosine similarity,
    the query itself left out.

    Args:
        item_embeddings: (I, D).
        queries: (Q,) item ids.
        k: neighbours per query.

    Returns:
        (Q, k) item ids, nearest first.

    Example:
        >>> similar_items(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), torch.tensor([0]), k=1).tolist()
        [[1]]
    """
    normalized = torch.nn.functional.normalize(item_embeddings.float(), dim=1)
    similarities = normalized[queries] @ normalized.T
    similarities[torch.arange(len(queries)), queries] = float("-inf")
    return similarities.topk(min(k, len(item_embeddings) - 1), dim=1).indices
