import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.miners import (
    batch_all_triplets,
    batch_hard_triplets,
    hard_negatives_from_bank,
    semi_hard_triplets,
)

from loss_helpers import reference_distance

DISTANCES = ["euclidean", "squared_euclidean", "cosine"]


def numpy_batch(embeddings, labels, bank=None, bank_labels=None):
    """The batch as float64 numpy arrays, with the candidate negatives (batch then bank)."""
    x, y = embeddings.numpy().astype(np.float64), labels.tolist()
    if bank is None:
        return x, y, x, y
    return x, y, np.concatenate([x, bank.numpy().astype(np.float64)]), y + bank_labels.tolist()


def brute_force_batch_all(embeddings, labels, distance, margin=None, bank=None, bank_labels=None):
    x, y, pool, pool_labels = numpy_batch(embeddings, labels, bank, bank_labels)
    triplets = []
    for a in range(len(x)):
        for p in range(len(x)):
            for n in range(len(pool)):
                if a == p or y[a] != y[p] or pool_labels[n] == y[a]:
                    continue
                loss = (reference_distance(x[a], x[p], distance)
                        - reference_distance(x[a], pool[n], distance) + (margin or 0.0))
                if margin is None or loss > 0:
                    triplets.append((a, p, n))
    return triplets


def brute_force_batch_hard(embeddings, labels, distance, bank=None, bank_labels=None):
    x, y, pool, pool_labels = numpy_batch(embeddings, labels, bank, bank_labels)
    triplets = []
    for a in range(len(x)):
        positives = [p for p in range(len(x)) if p != a and y[p] == y[a]]
        negatives = [n for n in range(len(pool)) if pool_labels[n] != y[a]]
        if positives and negatives:
            hardest_positive = max(positives, key=lambda p: reference_distance(x[a], x[p], distance))
            hardest_negative = min(negatives, key=lambda n: reference_distance(x[a], pool[n], distance))
            triplets.append((a, hardest_positive, hardest_negative))
    return triplets


def brute_force_semi_hard(embeddings, labels, distance, margin, bank=None, bank_labels=None):
    x, y, pool, pool_labels = numpy_batch(embeddings, labels, bank, bank_labels)
    triplets = []
    for a in range(len(x)):
        for p in range(len(x)):
            if p == a or y[p] != y[a]:
                continue
            to_positive = reference_distance(x[a], x[p], distance)
            window = [n for n in range(len(pool)) if pool_labels[n] != y[a]
                      and to_positive < reference_distance(x[a], pool[n], distance) < to_positive + margin]
            if window:
                triplets.append((a, p, min(window, key=lambda n: reference_distance(x[a], pool[n], distance))))
    return triplets


def as_list(triplets):
    return list(zip(*(t.tolist() for t in triplets)))


def random_batch(seed, size=12, dim=3, classes=3, bank_size=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(size, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (size,), generator=generator)
    bank = torch.randn(bank_size, dim, generator=generator, dtype=torch.float64)
    bank_labels = torch.randint(0, classes, (bank_size,), generator=generator)
    return embeddings, labels, bank, bank_labels


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("margin", [None, 0.5])
def test_batch_all_matches_brute_force(distance, margin):
    embeddings, labels, _, _ = random_batch(1)
    mined = batch_all_triplets(embeddings, labels, distance=distance, margin=margin)
    expected = brute_force_batch_all(embeddings, labels, distance, margin)
    assert as_list(mined) == expected and len(expected) > 0
    if margin is not None:
        assert len(expected) < len(brute_force_batch_all(embeddings, labels, distance))


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [2, 3])
def test_batch_hard_matches_brute_force(distance, seed):
    embeddings, labels, _, _ = random_batch(seed, size=10, classes=4)
    mined = batch_hard_triplets(embeddings, labels, distance=distance)
    assert as_list(mined) == brute_force_batch_hard(embeddings, labels, distance)


def test_batch_hard_drops_anchors_without_a_positive():
    embeddings = torch.randn(5, 3, dtype=torch.float64)
    anchors, positives, negatives = batch_hard_triplets(embeddings, torch.tensor([0, 0, 1, 2, 2]))
    assert anchors.tolist() == [0, 1, 3, 4]
    assert positives.tolist() == [1, 0, 4, 3]


@pytest.mark.parametrize("distance, margin", [("euclidean", 0.5), ("squared_euclidean", 1.0), ("cosine", 0.2)])
def test_semi_hard_matches_brute_force(distance, margin):
    embeddings, labels, _, _ = random_batch(4, size=14)
    mined = semi_hard_triplets(embeddings, labels, distance=distance, margin=margin)
    expected = brute_force_semi_hard(embeddings, labels, distance, margin)
    assert as_list(mined) == expected and len(expected) > 0
    # Some (anchor, positive) pairs have no negative in the window and are dropped.
    pairs = {(a, p) for a, p, _ in brute_force_batch_all(embeddings, labels, distance)}
    assert len(expected) < len(pairs)


@pytest.mark.parametrize("miner, reference", [
    (batch_all_triplets, brute_force_batch_all),
    (batch_hard_triplets, brute_force_batch_hard),
    (semi_hard_triplets, brute_force_semi_hard),
])
def test_bank_entries_join_the_candidate_negatives(miner, reference):
    embeddings, labels, bank, bank_labels = random_batch(5, size=8, bank_size=10)
    options = {"margin": 0.5} if miner is semi_hard_triplets else {}
    mined = miner(embeddings, labels, distance="euclidean", bank=bank, bank_labels=bank_labels, **options)
    expected = reference(embeddings, labels, "euclidean", *options.values(), bank=bank, bank_labels=bank_labels)
    assert as_list(mined) == expected
    assert any(n >= len(embeddings) for _, _, n in expected)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("k", [1, 3])
def test_hard_negatives_from_bank_match_brute_force(distance, k):
    anchors, anchor_labels, bank, bank_labels = random_batch(6, size=5, bank_size=15)
    indices = hard_negatives_from_bank(anchors, anchor_labels, bank, bank_labels, distance=distance, k=k)
    x, b = anchors.numpy(), bank.numpy()
    for i in range(len(x)):
        candidates = [j for j in range(len(b)) if bank_labels[j] != anchor_labels[i]]
        nearest = sorted(candidates, key=lambda j: reference_distance(x[i], b[j], distance))[:k]
        assert indices[i].tolist() == nearest + [-1] * (k - len(nearest))


def test_missing_bank_negatives_are_padded_with_minus_one():
    bank_labels = torch.tensor([0, 0, 1, 0])
    indices = hard_negatives_from_bank(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(4, 3),
                                       bank_labels, k=6)
    assert indices.shape == (2, 6)
    assert indices[0].tolist() == [2, -1, -1, -1, -1, -1]
    assert (indices[1] >= 0).sum() == 3
    assert set(indices[1, :3].tolist()) == {0, 1, 3}


def test_all_labels_distinct_give_empty_index_tensors():
    embeddings, labels = torch.randn(6, 4), torch.arange(6)
    for triplets in (batch_all_triplets(embeddings, labels),
                     batch_hard_triplets(embeddings, labels),
                     semi_hard_triplets(embeddings, labels, margin=10.0)):
        assert [t.shape for t in triplets] == [torch.Size([0])] * 3
        assert all(t.dtype == torch.long for t in triplets)


@pytest.mark.parametrize("bank_size", [0, 3])
def test_a_batch_without_rows_gives_empty_index_tensors(bank_size):
    # Before: batch hard and semi-hard raised a raw IndexError (argmax/argmin over an empty dim).
    embeddings, labels = torch.randn(0, 4), torch.zeros(0, dtype=torch.long)
    bank = {"bank": torch.randn(bank_size, 4), "bank_labels": torch.arange(bank_size)} if bank_size else {}
    for triplets in (batch_all_triplets(embeddings, labels, **bank),
                     batch_hard_triplets(embeddings, labels, **bank),
                     semi_hard_triplets(embeddings, labels, margin=1.0, **bank)):
        assert [t.shape for t in triplets] == [torch.Size([0])] * 3
        assert all(t.dtype == torch.long for t in triplets)


def test_miners_carry_no_gradient_and_accept_low_precision():
    embeddings = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for t in batch_hard_triplets(embeddings, labels, distance="cosine"):
        assert not t.requires_grad
    mined = batch_hard_triplets(embeddings.detach().bfloat16(), labels)
    assert mined[0].tolist() == list(range(8))


def test_bad_inputs_are_refused():
    embeddings, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(InputError, match="labels has 5 entries"):
        batch_all_triplets(embeddings, labels[:5])
    with pytest.raises(InputError, match="give both or neither"):
        batch_hard_triplets(embeddings, labels, bank=torch.randn(3, 4))
    with pytest.raises(InputError, match="bank has dim 2"):
        batch_hard_triplets(embeddings, labels, bank=torch.randn(3, 2), bank_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="must have shape"):
        batch_hard_triplets(embeddings[None], labels)
    with pytest.raises(ConfigError, match="distance must be one of"):
        batch_all_triplets(embeddings, labels, distance="manhattan")
    with pytest.raises(ConfigError, match="needs margin > 0"):
        semi_hard_triplets(embeddings, labels, margin=0.0)
    with pytest.raises(ConfigError, match="k must be >= 1"):
        hard_negatives_from_bank(embeddings, labels, torch.randn(3, 4), torch.zeros(3), k=0)
