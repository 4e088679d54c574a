import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.triplet import TripletLoss, triplet_loss

from loss_helpers import numeric_gradients, reference_distance

DISTANCES = ["euclidean", "squared_euclidean", "cosine"]


def hinge_terms(anchor, positive, negative, margin, distance):
    """Per-triplet FaceNet terms D(a,p) - D(a,n) + margin, before the max with 0."""
    return [reference_distance(a, p, distance) - reference_distance(a, n, distance) + margin
            for a, p, n in zip(anchor, positive, negative)]


def reference_triplet(anchor, positive, negative, margin, distance, reduction="mean"):
    """Independent float64 triplet loss: a loop over triplets."""
    losses = [max(0.0, term) for term in hinge_terms(anchor, positive, negative, margin, distance)]
    count = len(losses) if reduction == "mean" else sum(loss > 0 for loss in losses)
    return sum(losses) / max(count, 1)


def reference_batch_hard(embeddings, labels, margin, distance, bank=(), bank_labels=()):
    """Hermans et al.'s batch-hard loss: per anchor the farthest positive and nearest negative."""
    pool, pool_labels = list(embeddings) + list(bank), list(labels) + list(bank_labels)
    losses = []
    for a, x in enumerate(embeddings):
        positives = [reference_distance(x, embeddings[p], distance) for p in range(len(embeddings))
                     if p != a and labels[p] == labels[a]]
        negatives = [reference_distance(x, pool[n], distance) for n in range(len(pool))
                     if pool_labels[n] != labels[a]]
        if positives and negatives:
            losses.append(max(0.0, max(positives) - min(negatives) + margin))
    return sum(losses) / max(len(losses), 1)


def random_triplets(seed, count=10, dim=4):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, dim, generator=generator, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "mean_positive"])
def test_matches_float64_reference(distance, margin, reduction):
    anchor, positive, negative = random_triplets(int(margin * 10) + len(distance))
    loss = triplet_loss(anchor, positive, negative, margin=margin, distance=distance, reduction=reduction)
    arrays = [t.numpy() for t in (anchor, positive, negative)]
    expected = reference_triplet(*arrays, margin, distance, reduction)
    assert expected > 0
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradients_match_finite_differences_away_from_the_hinge(distance):
    tensors = [t.requires_grad_() for t in random_triplets(21, count=6, dim=3)]
    margin = {"cosine": 0.3}.get(distance, 1.0)
    arrays = [t.detach().numpy().copy() for t in tensors]
    terms = np.array(hinge_terms(*arrays, margin, distance))
    assert (terms > 0).any() and (terms < 0).any() and np.abs(terms).min() > 1e-3
    triplet_loss(*tensors, margin=margin, distance=distance).backward()
    numeric = numeric_gradients(lambda *x: reference_triplet(*x, margin, distance), arrays)
    for tensor, expected in zip(tensors, numeric):
        np.testing.assert_allclose(tensor.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_identical_anchor_and_positive_give_finite_gradients():
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = anchor.detach().clone().requires_grad_()
    negative = anchor.detach().clone().requires_grad_()
    loss = triplet_loss(anchor, positive, negative, margin=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    for tensor in (anchor, positive, negative):
        assert torch.isfinite(tensor.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "mean_positive"])
def test_no_triplets_give_a_zero_loss_that_backward_accepts(reduction):
    embeddings = torch.randn(5, 3, requires_grad=True)
    empty = embeddings[torch.zeros(0, dtype=torch.long)]
    loss = triplet_loss(empty, empty, empty, reduction=reduction)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(embeddings.grad, torch.zeros(5, 3))


def test_mean_positive_of_satisfied_triplets_is_zero():
    anchor = torch.zeros(3, 2)
    loss = triplet_loss(anchor, anchor, anchor + 5.0, margin=0.2, reduction="mean_positive")
    assert loss.item() == 0.0


@pytest.mark.parametrize("distance", DISTANCES)
def test_batch_hard_module_matches_reference(distance):
    generator = torch.Generator().manual_seed(31)
    embeddings = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])
    margin = {"cosine": 0.5}.get(distance, 1.0)
    loss = TripletLoss(margin, distance, miner="batch_hard")(embeddings, labels)
    expected = reference_batch_hard(embeddings.numpy(), labels.tolist(), margin, distance)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_batch_hard_gradients_match_finite_differences_of_reference():
    generator = torch.Generator().manual_seed(8)
    embeddings = torch.randn(8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = [0, 0, 1, 1, 1, 2, 2, 3]
    TripletLoss(1.0, miner="batch_hard")(embeddings, torch.tensor(labels)).backward()
    (numeric,) = numeric_gradients(lambda x: reference_batch_hard(x, labels, 1.0, "euclidean"),
                                   [embeddings.detach().numpy().copy()])
    np.testing.assert_allclose(embeddings.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", ["mean", "mean_positive"])
def test_batch_all_module_averages_over_every_valid_triplet(reduction):
    generator = torch.Generator().manual_seed(9)
    embeddings = torch.randn(9, 3, generator=generator, dtype=torch.float64)
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    triplets = [(a, p, n) for a in range(9) for p in range(9) for n in range(9)
                if a != p and labels[a] == labels[p] and labels[n] != labels[a]]
    x = embeddings.numpy()
    expected = reference_triplet(*([x[t[k]] for t in triplets] for k in range(3)), 0.5, "euclidean", reduction)
    loss = TripletLoss(0.5, miner="batch_all", reduction=reduction)(embeddings, torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_semi_hard_module_loss_lies_inside_the_margin():
    generator = torch.Generator().manual_seed(10)
    embeddings = torch.randn(16, 3, generator=generator)
    loss = TripletLoss(0.5, miner="semi_hard")(embeddings, torch.arange(16) % 4)
    assert 0 < loss.item() < 0.5


def test_memory_bank_adds_negatives_without_gradient():
    generator = torch.Generator().manual_seed(12)
    embeddings = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels, bank_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 3, 3, 4, 0])
    loss = TripletLoss(1.0, miner="batch_hard")(embeddings, labels, bank=bank, bank_labels=bank_labels)
    expected = reference_batch_hard(embeddings.detach().numpy(), labels.tolist(), 1.0, "euclidean",
                                    bank.detach().numpy(), bank_labels.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert expected > reference_batch_hard(embeddings.detach().numpy(), labels.tolist(), 1.0, "euclidean")
    loss.backward()
    assert bank.grad is None and embeddings.grad is not None


@pytest.mark.parametrize("miner", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("labels", [torch.arange(6), torch.zeros(6, dtype=torch.long)],
                         ids=["no-positive", "no-negative"])
def test_batch_without_a_valid_triplet_is_refused(miner, labels):
    # Before: a silent 0 (all labels distinct: no positive; one class: no negative).
    with pytest.raises(InputError, match="got a batch of 6 with no valid triplet"):
        TripletLoss(0.2, miner=miner)(torch.randn(6, 4), labels)


def test_an_empty_batch_is_refused():
    # Before: a raw IndexError from the miner's argmax over an empty dimension.
    with pytest.raises(InputError, match=r"TripletLoss\(miner='batch_hard'\) got an empty batch"):
        TripletLoss(miner="batch_hard")(torch.randn(0, 4), torch.zeros(0, dtype=torch.long))


def test_semi_hard_mining_that_keeps_no_triplet_gives_zero_not_nan():
    # Valid triplets exist but all are satisfied by more than the margin: semi-hard keeps none.
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1]], requires_grad=True)
    loss = TripletLoss(0.2, miner="semi_hard")(embeddings, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(embeddings.grad, torch.zeros(4, 2))


def test_module_without_miner_matches_function():
    anchor, positive, negative = random_triplets(13)
    expected = triplet_loss(anchor, positive, negative, margin=0.3, distance="cosine")
    assert TripletLoss(0.3, "cosine")(anchor, positive, negative) == expected


def test_bf16_inputs_are_computed_in_float32():
    anchor, positive, negative = (t.bfloat16() for t in random_triplets(14))
    loss = triplet_loss(anchor, positive, negative)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, triplet_loss(anchor.float(), positive.float(), negative.float()))


def test_wrong_call_convention_says_which_form_to_use():
    embeddings, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(InputError, match=r"build TripletLoss\(miner='batch_hard'\)"):
        TripletLoss()(embeddings, labels)
    with pytest.raises(InputError, match=r"takes forward\(anchor, positive, negative\)"):
        TripletLoss()(embeddings, embeddings, embeddings, bank=embeddings, bank_labels=labels)
    with pytest.raises(InputError, match=r"build TripletLoss\(miner=None\)"):
        TripletLoss(miner="batch_hard")(embeddings, embeddings, embeddings)
    with pytest.raises(InputError, match="labels must have shape"):
        TripletLoss(miner="batch_all")(embeddings, embeddings)


def test_bad_inputs_are_refused():
    anchor, positive, negative = random_triplets(15)
    with pytest.raises(InputError, match="same shape"):
        triplet_loss(anchor, positive[:5], negative)
    with pytest.raises(InputError, match=r"shape \(num_triplets, dim\)"):
        triplet_loss(anchor[None], positive[None], negative[None])
    negative[1, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        triplet_loss(anchor, positive, negative)
    embeddings = torch.randn(4, 2)
    embeddings[0, 0] = float("inf")
    with pytest.raises(InputError, match="embeddings holds 1 NaN/inf"):
        TripletLoss(miner="batch_hard")(embeddings, torch.tensor([0, 0, 1, 1]))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="margin must be >= 0"):
        TripletLoss(margin=-0.1)
    with pytest.raises(ConfigError, match="distance must be one of"):
        TripletLoss(distance="l1")
    with pytest.raises(ConfigError, match="reduction must be one of"):
        triplet_loss(*random_triplets(16), reduction="sum")
    with pytest.raises(ConfigError, match="miner must be None or one of"):
        TripletLoss(miner="hardest")
    with pytest.raises(ConfigError, match="semi-hard mining needs margin > 0"):
        TripletLoss(margin=0.0, miner="semi_hard")
