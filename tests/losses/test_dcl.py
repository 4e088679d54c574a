import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.dcl import DCLLoss, dcl_loss
from contrastkit.losses.info_nce import info_nce


def reference_dcl(z_a, z_b, temperature, weight_sigma=None):
    """Independent float64 DCL / DCLW from the paper's formula: a loop over the 2N anchors."""
    views = [v.detach().numpy().astype(np.float64) for v in (z_a, z_b)]
    views = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in views]
    n = views[0].shape[0]
    positives = [views[0][i] @ views[1][i] for i in range(n)]
    weights = [1.0] * n
    if weight_sigma is not None:
        mean_exp = np.mean([np.exp(s / weight_sigma) for s in positives])
        weights = [2 - np.exp(s / weight_sigma) / mean_exp for s in positives]
    total = 0.0
    for k in range(2):
        for i in range(n):
            negatives = [np.exp(views[k][i] @ views[l][j] / temperature)
                         for l in range(2) for j in range(n) if j != i]
            total += -weights[i] * positives[i] / temperature + np.log(np.sum(negatives))
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("weight_sigma", [None, 0.5, 2.0])
def test_matches_float64_reference(temperature, weight_sigma):
    generator = torch.Generator().manual_seed(int(temperature * 10) + int((weight_sigma or 0) * 10))
    z_a, z_b = (torch.randn(6, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    loss = dcl_loss(z_a, z_b, temperature=temperature, weight_sigma=weight_sigma)
    assert loss.item() == pytest.approx(reference_dcl(z_a, z_b, temperature, weight_sigma), rel=1e-10)


@pytest.mark.parametrize("weight_sigma", [None, 0.5])
def test_gradcheck(weight_sigma):
    generator = torch.Generator().manual_seed(3)
    z_a, z_b = (torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(
        lambda a, b: dcl_loss(a, b, temperature=0.2, weight_sigma=weight_sigma), (z_a, z_b))


def test_removing_the_positive_from_the_denominator_lowers_info_nce():
    # Per anchor, log sum over the negatives < log sum over the negatives and the positive.
    generator = torch.Generator().manual_seed(4)
    z_a, z_b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    assert dcl_loss(z_a, z_b, temperature=0.2) < info_nce(z_a, z_b, temperature=0.2)


def test_dclw_with_equal_positive_similarities_equals_dcl():
    # With equal positive similarities every weight is 1, so DCLW equals DCL.
    z = torch.nn.functional.one_hot(torch.arange(5), 5).double()
    torch.testing.assert_close(DCLLoss(weight_sigma=0.5)(z, z), DCLLoss()(z, z))


def test_bf16_inputs_are_computed_in_float32():
    z_a, z_b = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    loss = dcl_loss(z_a, z_b, weight_sigma=0.5)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, dcl_loss(z_a.float(), z_b.float(), weight_sigma=0.5))


def test_autocast_does_not_lower_the_precision():
    z_a, z_b = torch.randn(16, 32), torch.randn(16, 32)
    expected = dcl_loss(z_a, z_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dcl_loss(z_a, z_b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_bad_inputs_and_options_are_refused():
    with pytest.raises(InputError, match="at least 2 samples"):
        dcl_loss(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(InputError, match="same shape"):
        dcl_loss(torch.randn(4, 8), torch.randn(3, 8))
    z_a = torch.randn(4, 8)
    z_a[1, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        dcl_loss(z_a, torch.randn(4, 8))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        DCLLoss(temperature=0.0)
    with pytest.raises(ConfigError, match="weight_sigma must be > 0"):
        DCLLoss(weight_sigma=-0.5)
