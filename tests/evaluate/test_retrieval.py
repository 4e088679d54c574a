import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate import retrieval_recall


def reference_recall(queries, keys, ks, group_ids=None):
    """Float64 brute force over the definition, one cosine at a time: for each row the pessimistic
    rank of its best relevant column (same group id; without ids, only its own), 1 + the number of
    irrelevant columns at least as similar."""
    n = len(queries)
    groups = list(range(n)) if group_ids is None else list(group_ids)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    result = {}
    for direction, rows, columns in (("q2k", q, k), ("k2q", k, q)):
        ranks = []
        for i in range(n):
            similarities = [float(np.dot(rows[i], columns[j])) for j in range(n)]
            relevant = [j for j in range(n) if groups[j] == groups[i]]
            best = max(similarities[j] for j in relevant)
            ranks.append(1 + sum(similarities[j] >= best for j in range(n) if j not in relevant))
        for cutoff in ks:
            result[f"{direction}_recall@{cutoff}"] = float(np.mean([rank <= cutoff for rank in ranks]))
    return result


def on_circle(degrees):
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_identical_pairs_are_all_found_first():
    embeddings = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    recall = retrieval_recall(embeddings, embeddings * 2.5)  # the length does not matter
    assert recall == {f"{direction}_recall@{k}": 1.0 for direction in ("q2k", "k2q") for k in (1, 5, 10)}


def test_hand_computed_case():
    # Queries at 0, 30, 90, 180 degrees, keys at 20, 10, 150, 170; cosine falls with the angle gap.
    #   q2k: q0 (0) is 10 from k1, 20 from its k0: rank 2. q1 (30) is 10 from k0, 20 from k1: rank 2.
    #        q2 (90) is 60 from k2, 70 / 80 / 80 from the others: rank 1. q3 (180): 10 from k3, rank 1.
    #   k2q: k0 (20) is 10 from q1, 20 from q0: rank 2. k1 (10) is 10 from q0, 20 from q1: rank 2.
    #        k2 (150) is 30 from q3, 60 from q2: rank 2. k3 (170) is 10 from q3: rank 1.
    queries, keys = on_circle([0.0, 30.0, 90.0, 180.0]), on_circle([20.0, 10.0, 150.0, 170.0])
    recall = retrieval_recall(queries, keys, ks=(1, 2, 3))
    assert recall == {"q2k_recall@1": 0.5, "q2k_recall@2": 1.0, "q2k_recall@3": 1.0,
                      "k2q_recall@1": 0.25, "k2q_recall@2": 1.0, "k2q_recall@3": 1.0}


def test_shuffled_keys_find_only_the_fixed_points_and_ties_count_against_the_query():
    # Orthonormal queries, keys = queries permuted: query i's key is e_perm(i). Where perm(i) != i
    # its own key has cosine 0, tied with the N - 2 other unrelated keys: pessimistic rank N.
    permutation = [0, 2, 1, 3, 5, 6, 4, 7]  # fixed points 0, 3, 7
    queries = torch.eye(8)
    recall = retrieval_recall(queries, queries[permutation], ks=(1, 7, 8))
    assert recall == {"q2k_recall@1": 3 / 8, "q2k_recall@7": 3 / 8, "q2k_recall@8": 1.0,
                      "k2q_recall@1": 3 / 8, "k2q_recall@7": 3 / 8, "k2q_recall@8": 1.0}


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(60, 6, generator=generator, dtype=torch.float64)
    keys = queries + 1.5 * torch.randn(60, 6, generator=generator, dtype=torch.float64)
    ks = (1, 3, 10, 60)
    recall = retrieval_recall(queries, keys, ks, chunk_size=7)
    assert recall == pytest.approx(reference_recall(queries.numpy(), keys.numpy(), ks), abs=1e-12)


def test_chunked_equals_unchunked():
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(300, 32, generator=generator)
    keys = queries + 3 * torch.randn(300, 32, generator=generator)
    whole = retrieval_recall(queries, keys, ks=(1, 5, 10, 50), chunk_size=300)
    assert 0 < whole["q2k_recall@1"] < whole["q2k_recall@50"] < 1  # a case where ranks vary
    for chunk_size in (1, 7, 64, 299, 1000):
        assert retrieval_recall(queries, keys, ks=(1, 5, 10, 50), chunk_size=chunk_size) == whole


def test_copies_of_a_repeated_caption_do_not_count_against_each_other():
    # The case: 4 captions x 6 copies, each image embedded exactly as its caption. Without
    # group ids every query ties with the 5 other copies of its caption, rank 6: recall@5 = 0.
    caption_ids = torch.arange(4).repeat(6)
    embeddings = F.one_hot(caption_ids, 4).double()
    recall = retrieval_recall(embeddings, embeddings, ks=(1, 5), group_ids=caption_ids)
    assert recall == {"q2k_recall@1": 1.0, "q2k_recall@5": 1.0, "k2q_recall@1": 1.0, "k2q_recall@5": 1.0}
    assert set(retrieval_recall(embeddings, embeddings, ks=(1, 5)).values()) == {0.0}


def test_a_tie_between_a_relevant_and_an_irrelevant_key_still_counts_against_the_query():
    # Three equal pairs, 0 and 2 in one group, 1 in another. Queries 0 and 2 tie with the one key
    # of group 1 (rank 2), query 1 with the two keys of group 0 (rank 3); the same for the keys.
    embeddings = torch.ones(3, 2)
    recall = retrieval_recall(embeddings, embeddings, ks=(1, 2, 3), group_ids=torch.tensor([0, 1, 0]))
    assert recall == {f"{direction}_recall@{k}": recall for direction in ("q2k", "k2q")
                      for k, recall in ((1, 0.0), (2, 2 / 3), (3, 1.0))}


def test_a_collapsed_encoder_with_groups_still_scores_zero():
    # 4 groups of 3 copies, every embedding equal: each query ties with the 9 keys of other groups.
    group_ids = torch.arange(4).repeat_interleave(3)
    collapsed = torch.ones(12, 8)
    recall = retrieval_recall(collapsed, collapsed, ks=(1, 5, 9, 10), group_ids=group_ids)
    assert recall == {f"{direction}_recall@{k}": float(k == 10) for direction in ("q2k", "k2q") for k in (1, 5, 9, 10)}


@pytest.mark.parametrize("chunk_size", [1, 7, 60, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_group_ids_match_brute_force_reference_with_exact_ties(seed, chunk_size):
    # Half the vectors are drawn from a small pool (some of them axis vectors, whose cosines are
    # exact), so equal vectors land in equal and in different groups: exact ties of both kinds.
    generator = torch.Generator().manual_seed(seed)
    n, dim = 60, 4
    pool = torch.cat([torch.eye(dim, dtype=torch.float64),
                      torch.randn(4, dim, generator=generator, dtype=torch.float64)])
    queries = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    keys = queries + torch.randn(n, dim, generator=generator, dtype=torch.float64)
    pooled = torch.randperm(n, generator=generator)[:n // 2]
    queries[pooled] = pool[torch.randint(len(pool), (n // 2,), generator=generator)]
    keys[pooled] = pool[torch.randint(len(pool), (n // 2,), generator=generator)]
    group_ids = torch.randint(6, (n,), generator=generator)
    ks = (1, 3, 10, 60)
    recall = retrieval_recall(queries, keys, ks, chunk_size=chunk_size, group_ids=group_ids)
    assert recall == pytest.approx(reference_recall(queries.numpy(), keys.numpy(), ks, group_ids.tolist()), abs=1e-12)
    assert recall != retrieval_recall(queries, keys, ks)  # the groups changed the outcome


def test_cutoffs_at_or_beyond_the_batch_find_everything():
    queries, keys = torch.randn(5, 3), torch.randn(5, 3)
    recall = retrieval_recall(queries, keys, ks=(5, 100))
    assert set(recall.values()) == {1.0}


def test_bf16_autocast_does_not_change_the_result():
    generator = torch.Generator().manual_seed(5)
    queries = torch.randn(300, 32, generator=generator)
    keys = queries + 3 * torch.randn(300, 32, generator=generator)
    expected = retrieval_recall(queries, keys, ks=(1, 5, 10, 50))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert retrieval_recall(queries, keys, ks=(1, 5, 10, 50)) == expected


@pytest.mark.parametrize("call, error, message", [
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(5, 3)), InputError,
     "queries and keys must have the same shape"),
    (lambda: retrieval_recall(torch.randn(0, 3), torch.randn(0, 3)), InputError, "queries and keys are empty"),
    (lambda: retrieval_recall(torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3)), InputError,
     "queries must be a floating-point tensor"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.full((4, 3), float("nan"))), InputError, "keys holds 12 NaN"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), ks=5), ConfigError,
     "ks must be a non-empty sequence of cut-offs"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), ks=()), ConfigError,
     "ks must be a non-empty sequence"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), ks=(1, 0)), ConfigError,
     "every k in ks must be >= 1"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), ks=(1.5,)), ConfigError,
     "every k in ks must be >= 1 \\(an integer\\), got 1.5"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), chunk_size=0), ConfigError,
     "chunk_size must be >= 1"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), group_ids=torch.tensor([0, 0, 1])), InputError,
     "group_ids has 3 entries but there are 4 pairs; give one id per pair"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), group_ids=torch.zeros(4)), InputError,
     "group_ids must hold integer class ids, got dtype torch.float32"),
    (lambda: retrieval_recall(torch.randn(4, 3), torch.randn(4, 3), group_ids=torch.zeros(4, 1, dtype=torch.long)),
     InputError, "group_ids must have shape \\(N,\\), got \\(4, 1\\)"),
], ids=["shape mismatch", "empty", "integer queries", "NaN keys", "bare int ks", "empty ks", "zero k",
        "fractional k", "zero chunk size", "group ids of the wrong length", "float group ids", "2-D group ids"])
def test_bad_inputs_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()
