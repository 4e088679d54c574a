"""Full-ranking metrics against a hand computation, the seen items masked."""

import math

import numpy as np
import pytest
import torch

from contrastkit.errors import InputError
from contrastkit.evaluate.ranking import embedding_scores, popularity_scores, ranking_metrics, similar_items


def test_metrics_of_a_hand_worked_example_with_masked_training_items():
    # One user, six items. Item 0 (the top score) was seen in training and is masked, so the
    # ranking is 1, 2, 3, 4, 5 and the held-out items 2 and 5 sit at ranks 2 and 5.
    scores = torch.tensor([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    metrics = ranking_metrics(lambda users: scores[users], num_users=1, num_items=6,
                              truth=torch.tensor([[0, 2], [0, 5]]), seen=torch.tensor([[0, 0]]), ks=(1, 3, 5))
    idcg = 1 + 1 / math.log2(3)
    assert metrics["recall@1"] == 0 and metrics["hit@1"] == 0 and metrics["mrr@1"] == 0
    assert metrics["recall@3"] == 0.5 and metrics["hit@3"] == 1 and metrics["mrr@3"] == 0.5
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3)) / idcg)
    assert metrics["recall@5"] == 1.0
    assert metrics["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / idcg)
    # Without the mask item 0 takes rank 1 and pushes both held-out items down one.
    unmasked = ranking_metrics(lambda users: scores[users], num_users=1, num_items=6,
                               truth=torch.tensor([[0, 2], [0, 5]]), ks=(3,))
    assert unmasked["mrr@3"] == pytest.approx(1 / 3)


def _reference(scores, truth, seen, k):
    """Per-user loops over numpy, RecBole's formulas."""
    totals = {"recall": 0.0, "ndcg": 0.0, "hit": 0.0, "mrr": 0.0}
    users = sorted({user for user, _ in truth})
    for user in users:
        row = scores[user].copy()
        row[[item for u, item in seen if u == user]] = -np.inf
        ranked = np.argsort(-row, kind="stable")[:k]
        relevant = {item for u, item in truth if u == user}
        hits = [item in relevant for item in ranked]
        totals["recall"] += sum(hits) / len(relevant)
        totals["hit"] += float(any(hits))
        totals["mrr"] += next((1 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0)
        dcg = sum(1 / math.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
        totals["ndcg"] += dcg / sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return {f"{name}@{k}": value / len(users) for name, value in totals.items()}


def test_metrics_match_a_per_user_reference_over_batches():
    generator = torch.Generator().manual_seed(0)
    num_users, num_items = 37, 50
    scores = torch.randn(num_users, num_items, generator=generator)
    pairs = torch.unique(torch.randint(0, num_users * num_items, (600,), generator=generator))
    pairs = torch.stack([pairs // num_items, pairs % num_items], 1)
    seen, truth = pairs[:450], pairs[450:]
    got = ranking_metrics(lambda users: scores[users], num_users=num_users, num_items=num_items, truth=truth,
                          seen=seen, ks=(5, 20), batch_size=8)
    for k in (5, 20):
        expected = _reference(scores.numpy(), truth.tolist(), seen.tolist(), k)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_scorers_neighbours_and_bad_input():
    train = torch.tensor([[0, 1], [1, 1], [1, 2]])
    assert popularity_scores(train, 4)(torch.tensor([0, 1])).tolist() == [[0, 2, 1, 0]] * 2
    users, items = torch.randn(2, 3), torch.randn(4, 3)
    assert torch.allclose(embedding_scores(users, items)(torch.tensor([1])), users[1:] @ items.T)
    assert similar_items(torch.eye(3) + 0.1, torch.tensor([0, 2]), k=2).shape == (2, 2)
    with pytest.raises(InputError, match="outside"):
        ranking_metrics(lambda u: torch.zeros(len(u), 4), num_users=2, num_items=4, truth=torch.tensor([[0, 9]]))
    with pytest.raises(InputError, match="score returned"):
        ranking_metrics(lambda u: torch.zeros(len(u), 3), num_users=2, num_items=4, truth=torch.tensor([[0, 1]]))
