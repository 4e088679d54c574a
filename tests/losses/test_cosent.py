import math

import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import CoSENTLoss, cosent_loss

from loss_helpers import numeric_gradients


def reference_cosent(z_a, z_b, scores, scale):
    """Float64 CoSENT from Su (2022): a loop over the ordered pairs (i, j) with s_i > s_j."""
    cosines = [x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(z_a, z_b)]
    terms = [scale * (cosines[j] - cosines[i])
             for i in range(len(scores)) for j in range(len(scores)) if scores[i] > scores[j]]
    return math.log(1 + sum(math.exp(term) for term in terms))


def as_numpy(*tensors):
    return [tensor.detach().numpy().astype(np.float64) for tensor in tensors]


def random_pairs(seed, n=7, dim=5):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=generator, dtype=torch.float64) for _ in range(2)]


SCORES = {
    "distinct floats": torch.tensor([0.3, 4.8, 2.2, 1.0, 3.7, 0.9, 2.5], dtype=torch.float64),
    "integer ratings with ties": torch.tensor([0, 5, 2, 2, 4, 0, 2]),
    "binary labels": torch.tensor([True, False, True, True, False, False, True]),
}


@pytest.mark.parametrize("scale", [1.0, 20.0, 45.0])
@pytest.mark.parametrize("scores", SCORES.values(), ids=SCORES.keys())
def test_matches_float64_reference(scale, scores):
    z_a, z_b = random_pairs(int(scale))
    loss = cosent_loss(z_a, z_b, scores, scale=scale)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference_cosent(*as_numpy(z_a, z_b), scores.tolist(), scale), rel=1e-12)


def test_matches_sentence_transformers_masked_formulation():
    # CoSENTLoss in sentence-transformers: scale * (c_i - c_j) masked by labels_i < labels_j with
    # a -1e12 offset, a zero prepended, then one logsumexp over the flattened matrix.
    z_a, z_b = random_pairs(3)
    scores = SCORES["integer ratings with ties"].double()
    cosines = torch.nn.functional.cosine_similarity(z_a, z_b) * 20.0
    differences = cosines[:, None] - cosines[None, :]
    relevant = (scores[:, None] < scores[None, :]).double()
    masked = differences - (1 - relevant) * 1e12
    expected = torch.logsumexp(torch.cat([torch.zeros(1, dtype=torch.float64), masked.flatten()]), dim=0)
    torch.testing.assert_close(CoSENTLoss()(z_a, z_b, scores), expected, rtol=1e-12, atol=0)


def test_gradients_match_finite_differences_of_reference():
    z_a, z_b = random_pairs(4, n=5, dim=3)
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    scores = [1.0, 3.0, 3.0, 0.5, 2.0]
    cosent_loss(z_a, z_b, torch.tensor(scores), scale=5.0).backward()
    numeric = numeric_gradients(lambda a, b: reference_cosent(a, b, scores, 5.0), as_numpy(z_a, z_b))
    for tensor, expected in zip((z_a, z_b), numeric):
        np.testing.assert_allclose(tensor.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_gradcheck():
    z_a, z_b = (z.requires_grad_(True) for z in random_pairs(5, n=5, dim=3))
    scores = torch.tensor([2, 0, 2, 1, 3])  # a tie: the pair (0, 2) is no term
    assert torch.autograd.gradcheck(lambda a, b: cosent_loss(a, b, scores, scale=4.0), (z_a, z_b))


def test_scale_sharpens_the_loss_towards_the_worst_violation():
    # With every cosine equal, each of the P ordered pairs adds exp(0) = 1 whatever the scale.
    z = torch.randn(5, 4, dtype=torch.float64)
    scores = torch.tensor([0.0, 1.0, 1.0, 2.0, 3.0])  # 10 pairs minus the tie
    for scale in (1.0, 20.0, 100.0):
        assert cosent_loss(z, z, scores, scale=scale).item() == pytest.approx(math.log(1 + 9), rel=1e-12)
    # Cosines ranked like the scores: a larger scale drives the loss to 0 ...
    angles = torch.tensor([1.2, 0.9, 0.6, 0.3], dtype=torch.float64)  # cosines increase with the score
    z_a = torch.stack([torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)], dim=1)
    z_b = torch.stack([angles.cos(), angles.sin()], dim=1)
    ranked = torch.tensor([0.0, 1.0, 2.0, 3.0])
    losses = [cosent_loss(z_a, z_b, ranked, scale=scale).item() for scale in (1.0, 5.0, 20.0, 80.0)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])) and losses[-1] < 1e-4
    # ... ranked against them, it approaches scale * (the largest cosine gap the wrong way).
    worst_gap = (angles.cos().max() - angles.cos().min()).item()
    assert cosent_loss(z_a, z_b, ranked.flip(0), scale=80.0).item() == pytest.approx(80.0 * worst_gap, rel=1e-2)


def test_only_the_order_of_the_scores_matters():
    z_a, z_b = random_pairs(6)
    scores = SCORES["distinct floats"]
    torch.testing.assert_close(cosent_loss(z_a, z_b, scores), cosent_loss(z_a, z_b, scores.exp() * 3 - 7))


def test_large_scale_and_opposite_cosines_stay_finite():
    # exp(scale * 2) overflows float32 at scale 50; the log-sum-exp does not.
    z_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z_b = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    loss = cosent_loss(z_a, z_b, torch.tensor([1.0, 0.0]), scale=50.0)
    assert loss.item() == pytest.approx(100.0, rel=1e-6)


def test_bf16_autocast_keeps_the_cosines_in_float32():
    z_a, z_b = (z.float() for z in random_pairs(8, n=16, dim=32))
    scores = torch.arange(16.0).flip(0)
    expected = cosent_loss(z_a, z_b, scores)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = cosent_loss(z_a, z_b, scores)
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bf16_inputs_are_computed_in_float32():
    z_a, z_b = (z.bfloat16() for z in random_pairs(9))
    scores = SCORES["distinct floats"]
    loss = cosent_loss(z_a, z_b, scores)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, cosent_loss(z_a.float(), z_b.float(), scores))


def test_module_matches_function():
    z_a, z_b = random_pairs(10)
    scores = SCORES["integer ratings with ties"]
    torch.testing.assert_close(CoSENTLoss(scale=7.0)(z_a, z_b, scores), cosent_loss(z_a, z_b, scores, scale=7.0))
    assert repr(CoSENTLoss(scale=7.0)) == "CoSENTLoss(scale=7.0, gather_across_processes=False)"


def test_all_equal_scores_are_refused_unless_validation_is_off():
    z_a, z_b = (z.requires_grad_(True) for z in random_pairs(11, n=4))
    tied = torch.full((4,), 3.0)
    with pytest.raises(InputError, match="all 4 scores are equal"):
        cosent_loss(z_a, z_b, tied)
    # Without validation (no host sync) the batch contributes log(1 + 0) = 0 and no gradient.
    loss = cosent_loss(z_a, z_b, tied, validate=False)
    loss.backward()
    assert loss.item() == 0.0
    assert not z_a.grad.any() and not z_b.grad.any()


@pytest.mark.parametrize("call, error, message", [
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(5, 3), torch.arange(4.0)), InputError, "same shape"),
    (lambda: cosent_loss(torch.randn(4, 3, 2), torch.randn(4, 3, 2), torch.arange(4.0)), InputError,
     r"shape \(batch, dim\)"),
    (lambda: cosent_loss(torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3), torch.arange(4.0)), InputError,
     "z_a must be a floating-point tensor"),
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(4, 3), torch.arange(5.0)), InputError,
     "scores has 5 entries but the batch has 4 pairs"),
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(4, 3), torch.arange(4.0)[:, None]), InputError,
     r"scores must have shape \(batch,\)"),
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(4, 3), torch.arange(4.0) * 1j), InputError,
     "real gold similarity scores"),
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0.0, float("nan"), 1.0, 2.0])),
     InputError, "scores holds 1 NaN"),
    (lambda: cosent_loss(torch.full((4, 3), float("inf")), torch.randn(4, 3), torch.arange(4.0)), InputError,
     "z_a holds 12 NaN/inf"),
    (lambda: cosent_loss(torch.randn(1, 3), torch.randn(1, 3), torch.ones(1)), InputError,
     "cosent_loss needs at least 2 samples"),
    (lambda: cosent_loss(torch.randn(4, 3), torch.randn(4, 3), torch.arange(4.0), scale=0.0), ConfigError,
     "scale must be > 0"),
    (lambda: CoSENTLoss(scale=float("nan")), ConfigError, "scale must be > 0"),
], ids=["mismatched shapes", "3-D", "integer embeddings", "scores length", "2-D scores", "complex scores",
        "NaN score", "infinite embeddings", "one pair", "zero scale", "NaN scale"])
def test_bad_inputs_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()
