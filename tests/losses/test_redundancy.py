import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.redundancy import BarlowTwinsLoss, VICRegLoss, barlow_twins_loss, vicreg_loss

from loss_helpers import run_in_process_group


def reference_barlow_twins(z_a, z_b, lambda_offdiag):
    """Independent float64 Barlow Twins from the paper: loops over features and samples."""
    a, b = (z.detach().numpy().astype(np.float64) for z in (z_a, z_b))
    n, d = a.shape

    def standardise(z):
        out = np.empty_like(z)
        for j in range(d):
            mean = sum(z[k, j] for k in range(n)) / n
            variance = sum((z[k, j] - mean) ** 2 for k in range(n)) / n  # biased, as batch norm
            out[:, j] = (z[:, j] - mean) / np.sqrt(variance + 1e-5)
        return out

    a, b = standardise(a), standardise(b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij ** 2
    return loss


def reference_vicreg(z_a, z_b, invariance_weight, variance_weight, covariance_weight, epsilon):
    """Independent float64 VICReg from the paper: loops over samples and feature pairs."""
    a, b = (z.detach().numpy().astype(np.float64) for z in (z_a, z_b))
    n, d = a.shape
    invariance = sum((a[k, j] - b[k, j]) ** 2 for k in range(n) for j in range(d)) / (n * d)
    variance = covariance = 0.0
    for z in (a, b):
        mean = [sum(z[k, j] for k in range(n)) / n for j in range(d)]
        cov = [[sum((z[k, i] - mean[i]) * (z[k, j] - mean[j]) for k in range(n)) / (n - 1) for j in range(d)]
               for i in range(d)]
        variance += sum(max(0.0, 1 - np.sqrt(cov[j][j] + epsilon)) for j in range(d)) / d / 2  # mean of the views
        covariance += sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


def correlated_pair(seed, n=6, d=5, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=generator, dtype=dtype)
    # Scales both sides of 1 so that VICReg's variance hinge is active on some dims only.
    scale = torch.linspace(0.3, 2.0, d, dtype=dtype)
    return z_a * scale, (z_a + 0.5 * torch.randn(n, d, generator=generator, dtype=dtype)) * scale


@pytest.mark.parametrize("lambda_offdiag", [0.0, 5e-3, 0.5])
def test_barlow_twins_matches_float64_reference(lambda_offdiag):
    z_a, z_b = correlated_pair(int(lambda_offdiag * 1000))
    loss = barlow_twins_loss(z_a, z_b, lambda_offdiag=lambda_offdiag)
    assert loss.item() == pytest.approx(reference_barlow_twins(z_a, z_b, lambda_offdiag), rel=1e-10)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 3.0), (0.0, 2.0, 0.0)])
def test_vicreg_matches_float64_reference(weights):
    z_a, z_b = correlated_pair(int(sum(weights)))
    loss = vicreg_loss(z_a, z_b, invariance_weight=weights[0], variance_weight=weights[1],
                       covariance_weight=weights[2], epsilon=1e-4)
    assert loss.item() == pytest.approx(reference_vicreg(z_a, z_b, *weights, 1e-4), rel=1e-10)


def test_gradcheck():
    z_a, z_b = (z.requires_grad_() for z in correlated_pair(7, n=5, d=3))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambda_offdiag=0.1), (z_a, z_b))
    assert torch.autograd.gradcheck(lambda a, b: vicreg_loss(a, b), (z_a, z_b))


def test_modules_match_the_functions():
    z_a, z_b = correlated_pair(8, dtype=torch.float32)
    torch.testing.assert_close(BarlowTwinsLoss(lambda_offdiag=0.01)(z_a, z_b),
                               barlow_twins_loss(z_a, z_b, lambda_offdiag=0.01))
    torch.testing.assert_close(VICRegLoss(variance_weight=5.0, epsilon=1e-3)(z_a, z_b),
                               vicreg_loss(z_a, z_b, variance_weight=5.0, epsilon=1e-3))


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    # Orthogonal columns with zero mean and unit variance: C is the identity up to the batch-norm
    # epsilon (C_ii = 1/(1 + 1e-5)), so only that tiny on-diagonal residue is left.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins_loss(z, z).item() == pytest.approx(2 * (1 - 1 / (1 + 1e-5)) ** 2, rel=1e-6)


def test_autocast_does_not_lower_the_precision():
    z_a, z_b = correlated_pair(9, n=32, d=64, dtype=torch.float32)
    expected = barlow_twins_loss(z_a, z_b), vicreg_loss(z_a, z_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = barlow_twins_loss(z_a, z_b), vicreg_loss(z_a, z_b)
    for loss, reference in zip(losses, expected):
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, reference)


def _distributed_worker(rank, world, z_a, z_b, expected):
    shard = slice(rank * z_a.shape[0] // world, (rank + 1) * z_a.shape[0] // world)
    for loss_fn, (value, grad_a, grad_b) in zip((barlow_twins_loss, vicreg_loss), expected):
        a, b = z_a[shard].clone().requires_grad_(), z_b[shard].clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        torch.testing.assert_close(loss.detach(), value, rtol=1e-12, atol=0.0)
        # Each process holds the gradient of the sum of the world's (equal) losses; averaged over
        # the processes, as DistributedDataParallel does, it is the one-process gradient.
        torch.testing.assert_close(a.grad / world, grad_a[shard], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(b.grad / world, grad_b[shard], rtol=1e-10, atol=1e-14)


def test_statistics_and_gradients_span_all_processes(tmp_path):
    z_a, z_b = correlated_pair(10, n=8, d=4)
    expected = []
    for loss_fn in (barlow_twins_loss, vicreg_loss):
        a, b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        expected.append((loss.detach(), a.grad, b.grad))
    run_in_process_group(tmp_path, _distributed_worker, z_a, z_b, expected)


@pytest.mark.parametrize("loss", [barlow_twins_loss, vicreg_loss])
def test_bad_inputs_are_refused(loss):
    with pytest.raises(InputError, match="at least 2 samples"):
        loss(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(InputError, match="same shape"):
        loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(InputError, match=r"z_b must have shape \(batch, dim\)"):
        loss(torch.randn(4, 8), torch.randn(4, 8, 1))
    z_a = torch.randn(4, 8)
    z_a[3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        loss(z_a, torch.randn(4, 8))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="lambda_offdiag must be >= 0"):
        BarlowTwinsLoss(lambda_offdiag=-1e-3)
    with pytest.raises(ConfigError, match="variance_weight must be >= 0"):
        VICRegLoss(variance_weight=-1.0)
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        vicreg_loss(torch.randn(4, 8), torch.randn(4, 8), epsilon=0.0)
