import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import PairInfoNCELoss, pair_info_nce

from loss_helpers import assert_averaged_over_processes_equal, numeric_gradients, run_in_process_group


def reference_pair_info_nce(anchors, positives, negatives, temperature, symmetric):
    """Float64 loop from the formula: anchor i against every positive and hard negative, and (if
    symmetric) positive i against every anchor, the two directions averaged."""
    unit = lambda rows: [row / np.linalg.norm(row) for row in rows]  # noqa: E731
    a, p = unit(anchors), unit(positives)
    candidates = p + ([] if negatives is None else unit(negatives))

    def direction(queries, keys):
        total = 0.0
        for i, query in enumerate(queries):
            logits = [query @ key / temperature for key in keys]
            total += np.log(np.sum(np.exp(logits))) - logits[i]
        return total / len(queries)

    forward = direction(a, candidates)
    return (forward + direction(p, a)) / 2 if symmetric else forward


def sentence_transformers_reference(anchors, positives, negative_columns, scale, symmetric):
    """MultipleNegatives(Symmetric)RankingLoss as sentence-transformers computes it: cos_sim of the
    anchors with every candidate column concatenated, times scale, cross-entropy with labels
    0..N-1; the symmetric variant adds the cross-entropy of the transposed anchor-positive block."""
    candidates = torch.cat([positives, *negative_columns])
    scores = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T * scale
    labels = torch.arange(anchors.shape[0])
    forward_loss = F.cross_entropy(scores, labels)
    if not symmetric:
        return forward_loss
    backward_loss = F.cross_entropy(scores[:, :anchors.shape[0]].T, labels)
    return (forward_loss + backward_loss) / 2


def random_rows(seed, *shapes):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes]


@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("num_negatives", [None, 1, 9])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_float64_reference(temperature, num_negatives, symmetric):
    anchors, positives, negatives = random_rows(int(temperature * 100) + (num_negatives or 0), (6, 5), (6, 5),
                                                (num_negatives or 1, 5))
    negatives = None if num_negatives is None else negatives
    loss = pair_info_nce(anchors, positives, negatives=negatives, temperature=temperature, symmetric=symmetric)
    expected = reference_pair_info_nce(anchors.numpy(), positives.numpy(),
                                       None if negatives is None else negatives.numpy(), temperature, symmetric)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("hard_negative_columns", [0, 1, 2])
def test_equals_sentence_transformers_multiple_negatives_ranking_loss(symmetric, hard_negative_columns):
    # (anchor, positive, negative_1, ..., negative_k) columns: the k negative columns concatenated.
    anchors, positives, *columns = random_rows(hard_negative_columns, *[(8, 16)] * (2 + hard_negative_columns))
    negatives = torch.cat(columns) if columns else None
    loss = PairInfoNCELoss(temperature=1 / 20, symmetric=symmetric)(anchors, positives, negatives)
    expected = sentence_transformers_reference(anchors, positives, columns, 20.0, symmetric)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_gradients_match_finite_differences_of_reference():
    tensors = [t.requires_grad_(True) for t in random_rows(3, (4, 3), (4, 3), (5, 3))]
    pair_info_nce(*tensors[:2], negatives=tensors[2], temperature=0.4, symmetric=True).backward()
    numeric = numeric_gradients(lambda a, p, n: reference_pair_info_nce(a, p, n, 0.4, True),
                                [t.detach().numpy().copy() for t in tensors])
    for tensor, expected in zip(tensors, numeric):
        np.testing.assert_allclose(tensor.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_gradcheck(symmetric, with_negatives):
    tensors = [t.requires_grad_(True) for t in random_rows(7, (4, 3), (4, 3), (6, 3))]
    if not with_negatives:
        tensors = tensors[:2]
    assert torch.autograd.gradcheck(
        lambda a, p, *n: pair_info_nce(a, p, negatives=n[0] if n else None, temperature=0.2, symmetric=symmetric),
        tensors)


def test_one_pair_with_hard_negatives_is_a_valid_batch():
    anchor, positive, negatives = random_rows(4, (1, 5), (1, 5), (3, 5))
    loss = pair_info_nce(anchor, positive, negatives=negatives, temperature=0.5)
    expected = reference_pair_info_nce(anchor.numpy(), positive.numpy(), negatives.numpy(), 0.5, False)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_empty_negatives_are_no_negatives():
    anchors, positives = random_rows(5, (4, 5), (4, 5))
    torch.testing.assert_close(pair_info_nce(anchors, positives, negatives=torch.empty(0, 5, dtype=torch.float64)),
                               pair_info_nce(anchors, positives))


def test_bf16_autocast_keeps_the_logits_in_float32():
    anchors, positives, negatives = (t.float() for t in random_rows(6, (16, 32), (16, 32), (8, 32)))
    expected = pair_info_nce(anchors, positives, negatives=negatives, symmetric=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = pair_info_nce(anchors, positives, negatives=negatives, symmetric=True)
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bf16_inputs_are_computed_in_float32():
    anchors, positives = (t.bfloat16() for t in random_rows(8, (4, 8), (4, 8)))
    loss = pair_info_nce(anchors, positives)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, pair_info_nce(anchors.float(), positives.float()))


def test_module_repr():
    assert repr(PairInfoNCELoss()) == ("PairInfoNCELoss(temperature=0.05, symmetric=False, "
                                       "gather_across_processes=False)")


@pytest.mark.parametrize("call, error, message", [
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(5, 8)), InputError,
     "anchors and positives must have the same shape"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 6)), InputError,
     "anchors and positives must have the same shape"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 8), negatives=torch.randn(5, 3)), InputError,
     "negatives have dim 3 but the anchors have dim 8"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 8), negatives=torch.randn(5)), InputError,
     r"negatives must have shape \(num_negatives, dim\)"),
    (lambda: pair_info_nce(torch.randn(1, 8), torch.randn(1, 8)), InputError,
     "pair_info_nce needs at least 2 samples, got 1: with one pair and no hard negatives"),
    (lambda: pair_info_nce(torch.randn(1, 8), torch.randn(1, 8), negatives=torch.randn(3, 8), symmetric=True),
     InputError, "with symmetric=True each positive classifies its anchor among the anchors"),
    (lambda: pair_info_nce(torch.randint(0, 2, (4, 8)), torch.randn(4, 8)), InputError,
     "anchors must be a floating-point tensor"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 8), negatives=torch.ones(5, 8, dtype=torch.bool)),
     InputError, "negatives must be a floating-point tensor"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.full((4, 8), float("nan"))), InputError,
     "positives holds 32 NaN"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 8), negatives=torch.full((2, 8), float("inf"))),
     InputError, "negatives holds 16 NaN/inf"),
    (lambda: pair_info_nce(torch.randn(4, 8), torch.randn(4, 8), temperature=0.0), ConfigError,
     "temperature must be > 0"),
    (lambda: PairInfoNCELoss(temperature=float("inf")), ConfigError, "temperature must be > 0"),
], ids=["batch mismatch", "dim mismatch", "negatives dim", "1-D negatives", "one pair without negatives",
        "one pair symmetric", "integer anchors", "bool negatives", "NaN positives", "infinite negatives",
        "zero temperature", "infinite temperature"])
def test_bad_inputs_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_gather_in_a_single_process_changes_nothing():
    anchors, positives, negatives = random_rows(9, (5, 4), (5, 4), (3, 4))
    for symmetric in (False, True):
        torch.testing.assert_close(
            pair_info_nce(anchors, positives, negatives=negatives, symmetric=symmetric,
                          gather_across_processes=True),
            pair_info_nce(anchors, positives, negatives=negatives, symmetric=symmetric), rtol=0, atol=0)


def _projection(weight):
    projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        projection.weight.copy_(weight)
    return projection


CASES = {"plain": (False, False), "symmetric": (True, False), "hard negatives": (False, True),
         "symmetric with hard negatives": (True, True)}


def _one_process_loss_and_gradient(projection, inputs, symmetric, with_negatives):
    anchors, positives, negatives = (projection(rows) for rows in inputs)
    return pair_info_nce(anchors, positives, negatives=negatives if with_negatives else None, temperature=0.3,
                         symmetric=symmetric, gather_across_processes=True)


def _distributed_worker(rank, world, inputs, weight, expected):
    # Each process holds a contiguous shard of the anchors, positives and hard negatives.
    shards = [rows[rank * rows.shape[0] // world:(rank + 1) * rows.shape[0] // world] for rows in inputs]
    for name, (symmetric, with_negatives) in CASES.items():
        projection = _projection(weight)
        loss = _one_process_loss_and_gradient(projection, shards, symmetric, with_negatives)
        loss.backward()
        assert_averaged_over_processes_equal([loss.detach(), projection.weight.grad], expected[name], world,
                                             rtol=1e-12, atol=1e-12, msg=name)


def test_gathered_loss_and_averaged_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    inputs = random_rows(12, (8, 6), (8, 6), (4, 6))
    weight, = random_rows(13, (4, 6))
    expected = {}
    for name, (symmetric, with_negatives) in CASES.items():
        projection = _projection(weight)
        loss = _one_process_loss_and_gradient(projection, inputs, symmetric, with_negatives)
        expected[name] = [loss.detach(), *torch.autograd.grad(loss, [projection.weight])]
    run_in_process_group(tmp_path, _distributed_worker, inputs, weight, expected)
