import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import InfoNCELoss, info_nce


def reference_info_nce(views, temperature, similarity="cosine", negatives=None):
    """Independent float64 InfoNCE written from the formula: a loop over anchors and positives."""
    z = np.concatenate([v.detach().numpy().astype(np.float64) for v in views])
    negs = None if negatives is None else negatives.detach().numpy().astype(np.float64)
    if similarity == "cosine":
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        if negs is not None:
            negs = negs / np.linalg.norm(negs, axis=1, keepdims=True)
    n, m = views[0].shape[0], z.shape[0]
    total = 0.0
    for i in range(m):
        others = [z[i] @ z[a] / temperature for a in range(m) if a != i]
        if negs is not None:
            others += [z[i] @ k / temperature for k in negs]
        log_denominator = np.log(np.sum(np.exp(others)))
        positives = [a for a in range(m) if a != i and a % n == i % n]
        total += np.mean([log_denominator - z[i] @ z[p] / temperature for p in positives])
    return total / m


@pytest.mark.parametrize("num_views", [2, 3, 4])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matches_float64_reference(num_views, temperature, similarity):
    generator = torch.Generator().manual_seed(num_views * 100 + int(temperature * 100))
    views = [torch.randn(6, 5, generator=generator, dtype=torch.float64) * 0.5 for _ in range(num_views)]
    loss = info_nce(*views, temperature=temperature, similarity=similarity)
    assert loss.item() == pytest.approx(reference_info_nce(views, temperature, similarity), rel=1e-10)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_extra_negatives_match_reference(similarity):
    generator = torch.Generator().manual_seed(3)
    views = [torch.randn(5, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    negatives = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    loss = info_nce(*views, temperature=0.3, similarity=similarity, negatives=negatives)
    expected = reference_info_nce(views, 0.3, similarity, negatives)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_gradients_match_finite_differences_of_reference():
    generator = torch.Generator().manual_seed(5)
    views = [torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    negatives = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    info_nce(*views, temperature=0.4, negatives=negatives).backward()
    step = 1e-6
    for tensor in [*views, negatives]:
        numeric = torch.zeros_like(tensor)
        for index in np.ndindex(*tensor.shape):
            with torch.no_grad():
                tensor[index] += step
                upper = reference_info_nce(views, 0.4, negatives=negatives)
                tensor[index] -= 2 * step
                lower = reference_info_nce(views, 0.4, negatives=negatives)
                tensor[index] += step
            numeric[index] = (upper - lower) / (2 * step)
        torch.testing.assert_close(tensor.grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_gradcheck(similarity):
    generator = torch.Generator().manual_seed(7)
    z_a, z_b, negatives = (torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
                           for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda a, b, k: info_nce(a, b, temperature=0.2, similarity=similarity, negatives=k), (z_a, z_b, negatives))


def test_two_views_equal_simclr_cross_entropy_form():
    generator = torch.Generator().manual_seed(11)
    z_a, z_b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.T / 0.5
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(8, 16), torch.arange(8)])
    expected = torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(InfoNCELoss(temperature=0.5)(z_a, z_b), expected)


def test_perfectly_aligned_views_give_lower_loss_than_random():
    z = torch.nn.functional.one_hot(torch.arange(8), 8).float()
    assert info_nce(z, z, temperature=0.1) < info_nce(z, torch.randn(8, 8), temperature=0.1)


def test_bf16_inputs_are_computed_in_float32():
    z_a, z_b = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    loss = info_nce(z_a, z_b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(z_a.float(), z_b.float()))


@pytest.mark.parametrize("views, message", [
    ((torch.randn(4, 8), torch.randn(5, 8)), "same shape"),
    ((torch.randn(4, 8, 2), torch.randn(4, 8, 2)), "shape (batch, dim)"),
])
def test_wrong_shapes_are_refused(views, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        info_nce(*views)


def test_nan_in_a_batch_is_refused():
    z_a = torch.randn(4, 8)
    z_a[2, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        info_nce(z_a, torch.randn(4, 8))


def test_bad_negatives_and_temperature_are_refused():
    with pytest.raises(InputError, match="negatives have dim 3"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), negatives=torch.randn(5, 3))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        InfoNCELoss(temperature=0.0)
    with pytest.raises(ConfigError, match="similarity"):
        InfoNCELoss(similarity="euclid")


def test_bf16_autocast_keeps_the_logits_in_float32():
    generator = torch.Generator().manual_seed(11)
    views = [torch.randn(16, 32, generator=generator) for _ in range(2)]
    expected = info_nce(*views, temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = info_nce(*views, temperature=0.1)
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)
