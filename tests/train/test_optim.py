"""The optimizers as the trainer builds them: fused kernels on the CPU too, so the suite runs what CUDA runs."""

import pytest
import torch
from torch import nn

from contrastkit import runs
from contrastkit.config import Config
from contrastkit.train import LARS, SGD, create_optimizer


def late_gradient_run(optimizer_class, steps=4, **kwargs):
    """Two parameters; the second gets its first gradient at step 2 (a frozen layer thawing)."""
    early = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    late = nn.Parameter(torch.tensor([[0.3, 0.7], [-1.0, 2.0]], dtype=torch.float64))
    optimizer = optimizer_class([early, late], **kwargs)
    for step in range(steps):
        early.grad = torch.full_like(early, 0.1 * (step + 1))
        late.grad = None if step < 2 else torch.full_like(late, -0.2 * step)
        optimizer.step()
    return early.detach(), late.detach()


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_fused_sgd_takes_a_parameter_whose_first_gradient_comes_late(weight_decay):
    # torch's own fused SGD raises "expected Tensor as element 1" here (SwAV's prototypes, DINO's last layer).
    expected = late_gradient_run(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=weight_decay, foreach=False)
    actual = late_gradient_run(SGD, lr=0.1, momentum=0.9, weight_decay=weight_decay, fused=True)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-15)


def test_fused_sgd_matches_a_hand_computed_momentum_step():
    early, late = late_gradient_run(SGD, lr=0.1, momentum=0.9, fused=True)
    # late: buffer g2 = -0.4 at step 2, then 0.9 * -0.4 - 0.6 = -0.96 at step 3.
    torch.testing.assert_close(late, torch.tensor([[0.3, 0.7], [-1.0, 2.0]], dtype=torch.float64) + 0.1 * (0.4 + 0.96))
    buffers = [0.1, 0.9 * 0.1 + 0.2, 0.9 * 0.29 + 0.3, 0.9 * 0.561 + 0.4]
    torch.testing.assert_close(early, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.1 * sum(buffers))


def test_lars_takes_a_parameter_whose_first_gradient_comes_late():
    early, late = late_gradient_run(LARS, lr=0.1, momentum=0.9, trust_coefficient=0.01)
    # Steps 2 and 3 adapt the weight's update to 0.01 * ||w|| / ||g|| * g with a fresh momentum buffer at step 2.
    weight = torch.tensor([[0.3, 0.7], [-1.0, 2.0]], dtype=torch.float64)
    buffer = None
    for gradient in (0.4, 0.6):
        g = torch.full_like(weight, -gradient)
        update = 0.01 * weight.norm() / g.norm() * g
        buffer = update if buffer is None else 0.9 * buffer + update
        weight = weight - 0.1 * buffer
    torch.testing.assert_close(late, weight)
    assert early.shape == (3,)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_create_optimizer_uses_the_fused_kernels_on_the_cpu_too(name):
    optimizer = create_optimizer(name, nn.Linear(3, 2).parameters(), lr=0.1)
    assert optimizer.defaults["fused"] is True


def test_dampened_momentum_is_refused_with_a_reason():
    with pytest.raises(Exception, match="dampening 0"):
        SGD(nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9, dampening=0.1)


# Each method whose trainable parameters receive their first gradient after a frozen first epoch.
FROZEN_AT_FIRST = {"swav": {"hidden_dim": 64, "method_options": {"num_prototypes": 16}},
                   "dino": {"hidden_dim": 64, "method_options": {"out_dim": 64, "bottleneck_dim": 16}}}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "lars"])
@pytest.mark.parametrize("method", sorted(FROZEN_AT_FIRST))
def test_methods_with_frozen_layers_train_past_the_thaw_with_every_optimizer(tmp_path, method, optimizer):
    config = Config(method=method, dataset="digits", optimizer=optimizer, epochs=2, batch_size=256, log_every=1,
                    evaluate=False, plot=False, progress=False, device="cpu", out=str(tmp_path / "run"),
                    **FROZEN_AT_FIRST[method])
    run_dir = runs.train(config)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
