import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from contrastkit.errors import InputError
from contrastkit.evaluate import spearman, sts_spearman


def scipy_spearman(x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return stats.spearmanr(x, y).statistic


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [2, 3, 17, 200])
def test_matches_scipy_on_random_data(seed, n):
    generator = np.random.default_rng(seed * 1000 + n)
    x, y = generator.normal(size=n), generator.normal(size=n)
    y = y + 0.5 * x  # some correlation, so that the sign is tested too
    assert spearman(x, y) == pytest.approx(scipy_spearman(x, y), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [2, 3, 6])
def test_matches_scipy_with_ties(seed, levels):
    # STS gold scores are ratings: many ties, in both sequences.
    generator = np.random.default_rng(seed)
    x = generator.integers(0, levels, size=40).astype(float)
    y = np.round(x + generator.normal(scale=1.0, size=40))
    assert spearman(x, y) == pytest.approx(scipy_spearman(x, y), abs=1e-12)


def test_tensors_lists_and_arrays_give_the_same_value():
    x = [0.5, 2.0, 2.0, -1.0, 3.5, 0.0]
    y = [1, 3, 2, 0, 2, 1]
    expected = scipy_spearman(x, y)
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert spearman(np.array(x), np.array(y)) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.tensor(x), torch.tensor(y)) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.int32)) == pytest.approx(
        expected, abs=1e-12)


def test_monotone_relations_give_plus_and_minus_one():
    x = np.linspace(-3, 3, 25)
    assert spearman(x, np.exp(x)) == 1.0
    assert spearman(x, -x ** 3) == -1.0


def test_constant_input_gives_nan_like_scipy():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(scipy_spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


@pytest.mark.parametrize("x, y, message", [
    ([1.0, 2.0, 3.0], [1.0, 2.0], "x has 3 values but y has 2"),
    ([1.0], [2.0], "at least 2 pairs"),
    ([[1.0, 2.0]], [[1.0, 2.0]], r"x must be 1-D \(N,\), got shape \(1, 2\)"),
    ([1.0, float("nan")], [1.0, 2.0], "x holds 1 NaN/inf"),
    ([1.0, 2.0], [float("inf"), 2.0], "y holds 1 NaN/inf"),
])
def test_spearman_bad_inputs_are_refused(x, y, message):
    with pytest.raises(InputError, match=message):
        spearman(x, y)


def pairs_at_angles(angles):
    """Pairs (e_0, (cos t, sin t)): the cosine similarity of pair i is cos(angles[i])."""
    angles = torch.tensor(angles, dtype=torch.float64)
    z_a = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(len(angles), 2)
    return z_a, torch.stack([angles.cos(), angles.sin()], dim=1) * 3.0  # lengths do not matter


def test_sts_spearman_on_a_toy_benchmark():
    # Cosines fall with the angle: 1.0, cos 0.5, cos 1.0, cos 2.0, cos 3.0, ranks 5, 4, 3, 2, 1.
    z_a, z_b = pairs_at_angles([0.0, 0.5, 1.0, 2.0, 3.0])
    assert sts_spearman(z_a, z_b, [5.0, 4.0, 3.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert sts_spearman(z_a, z_b, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])) == pytest.approx(-1.0)
    # Gold ranks 4, 5, 3, 1, 2 against cosine ranks 5, 4, 3, 2, 1: sum d^2 = 1 + 1 + 0 + 1 + 1 = 4,
    # no ties, so rho = 1 - 6 * 4 / (5 * (25 - 1)) = 0.8.
    assert sts_spearman(z_a, z_b, [4.0, 5.0, 3.0, 1.0, 2.0]) == pytest.approx(0.8, abs=1e-12)
    # Tied gold scores: ranks 4.5, 4.5, 3, 1.5, 1.5 against 5, 4, 3, 2, 1.
    expected = np.corrcoef([4.5, 4.5, 3, 1.5, 1.5], [5, 4, 3, 2, 1])[0, 1]
    assert sts_spearman(z_a, z_b, [2, 2, 1, 0, 0]) == pytest.approx(expected, abs=1e-12)


def test_sts_spearman_matches_scipy_on_random_embeddings():
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(50, 8, generator=generator), torch.randn(50, 8, generator=generator)
    scores = torch.randint(0, 6, (50,), generator=generator).float()
    a, b = z_a.double().numpy(), z_b.double().numpy()
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert sts_spearman(z_a, z_b, scores) == pytest.approx(scipy_spearman(cosines, scores.numpy()), abs=1e-12)
    assert sts_spearman(z_a.bfloat16(), z_b.bfloat16(), scores) == pytest.approx(
        scipy_spearman(cosines, scores.numpy()), abs=0.05)


@pytest.mark.parametrize("z_a, z_b, scores, message", [
    (torch.randn(4, 3), torch.randn(5, 3), [1, 2, 3, 4], "z_a and z_b must have the same shape"),
    (torch.randn(4, 3), torch.randn(4, 3), [1, 2, 3], "scores has 3 entries but there are 4 pairs"),
    (torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3), [1, 2, 3, 4], "z_a must be a floating-point tensor"),
    (torch.randn(4), torch.randn(4), [1, 2, 3, 4], r"z_a must have shape \(batch, dim\)"),
    (torch.randn(4, 3), torch.full((4, 3), float("nan")), [1, 2, 3, 4], "z_b holds 12 NaN"),
])
def test_sts_spearman_bad_inputs_are_refused(z_a, z_b, scores, message):
    with pytest.raises(InputError, match=message):
        sts_spearman(z_a, z_b, scores)
