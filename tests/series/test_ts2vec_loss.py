"""TS2Vec's hierarchical contrastive loss against a float64 reference written with explicit loops."""

import math

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.ts2vec import HierarchicalContrastiveLoss, hierarchical_contrastive_loss


def dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def cross_entropy_of_pairs(first, second):
    """Mean over the 2N anchors of -log softmax(positive) among the other 2N - 1 rows (lists of vectors)."""
    rows = first + second
    n = len(first)
    if n == 1:
        return 0.0
    total = 0.0
    for anchor in range(2 * n):
        partner = anchor + n if anchor < n else anchor - n
        logits = [dot(rows[anchor], rows[other]) for other in range(2 * n) if other != anchor]
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(value - top) for value in logits))
        total += log_sum - dot(rows[anchor], rows[partner])
    return total / (2 * n)


def max_pool_pairs(z):
    """z as nested lists [b][t][d], each pair of timesteps replaced by its elementwise maximum."""
    return [[[max(a, b) for a, b in zip(series[2 * t], series[2 * t + 1])] for t in range(len(series) // 2)]
            for series in z]


def reference_loss(z1, z2, alpha, temporal_unit):
    z1, z2 = z1.tolist(), z2.tolist()
    total, scales = 0.0, 0
    while True:
        batch, length = len(z1), len(z1[0])
        instance = sum(cross_entropy_of_pairs([z1[b][t] for b in range(batch)], [z2[b][t] for b in range(batch)])
                       for t in range(length)) / length
        total += alpha * instance
        if length == 1:
            return (total / (scales + 1))
        if scales >= temporal_unit:
            temporal = sum(cross_entropy_of_pairs(z1[b], z2[b]) for b in range(batch)) / batch
            total += (1 - alpha) * temporal
        scales += 1
        z1, z2 = max_pool_pairs(z1), max_pool_pairs(z2)


@pytest.mark.parametrize("batch, length, alpha, temporal_unit", [
    (4, 8, 0.5, 0), (3, 7, 0.5, 0), (5, 13, 0.3, 1), (1, 6, 0.5, 0), (4, 1, 0.5, 0), (2, 9, 0.0, 0),
    (3, 10, 1.0, 2), (6, 5, 0.5, 5)])
def test_matches_the_loop_reference(batch, length, alpha, temporal_unit):
    generator = torch.Generator().manual_seed(batch * 100 + length)
    z1 = torch.randn(batch, length, 5, generator=generator, dtype=torch.float64)
    z2 = torch.randn(batch, length, 5, generator=generator, dtype=torch.float64)
    loss = hierarchical_contrastive_loss(z1, z2, alpha=alpha, temporal_unit=temporal_unit)
    assert loss.dtype == torch.float64
    assert math.isclose(loss.item(), reference_loss(z1, z2, alpha, temporal_unit), rel_tol=1e-10, abs_tol=1e-12)


def test_float32_inputs_agree_with_float64_and_the_module_with_the_function():
    z1, z2 = torch.randn(4, 12, 6), torch.randn(4, 12, 6)
    loss = HierarchicalContrastiveLoss(alpha=0.4, temporal_unit=1)(z1, z2)
    assert loss.dtype == torch.float32
    expected = hierarchical_contrastive_loss(z1.double(), z2.double(), alpha=0.4, temporal_unit=1)
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)


def test_gradients_match_finite_differences():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: hierarchical_contrastive_loss(a, b), (z1, z2))


def test_a_single_sample_and_timestep_has_nothing_to_contrast():
    z = torch.randn(1, 1, 3, requires_grad=True)
    loss = hierarchical_contrastive_loss(z, z.detach() + 1)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph, with zero gradient
    assert z.grad.eq(0).all()


def test_aligned_distinct_views_beat_shuffled_ones():
    z = torch.randn(8, 16, 32) * 3
    aligned = hierarchical_contrastive_loss(z, z + 0.01 * torch.randn_like(z))
    shuffled = hierarchical_contrastive_loss(z, z[torch.randperm(8)].flip(1))
    assert aligned < shuffled


def test_bad_inputs_are_refused():
    z = torch.randn(2, 4, 3)
    with pytest.raises(InputError, match="same shape"):
        hierarchical_contrastive_loss(z, torch.randn(2, 5, 3))
    with pytest.raises(InputError, match=r"\(batch, time, dim\)"):
        hierarchical_contrastive_loss(z[0], z[0])
    with pytest.raises(InputError, match="NaN"):
        hierarchical_contrastive_loss(z, torch.full_like(z, float("nan")))
    with pytest.raises(InputError, match="floating"):
        hierarchical_contrastive_loss(z.long(), z.long())
    with pytest.raises(InputError, match="empty"):
        hierarchical_contrastive_loss(z[:, :0], z[:, :0])
    with pytest.raises(ConfigError, match="alpha"):
        hierarchical_contrastive_loss(z, z, alpha=1.5)
    with pytest.raises(ConfigError, match="temporal_unit"):
        HierarchicalContrastiveLoss(temporal_unit=-1)
