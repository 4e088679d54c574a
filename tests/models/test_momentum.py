"""Momentum target networks (contrastkit.models.momentum)."""

import math

import pytest
import torch
from torch import nn

from contrastkit.errors import ConfigError
from contrastkit.models import DINOHead, MLPHead, cosine_momentum, ema_update, momentum_copy


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = MLPHead(4, 6, 3, num_layers=2).double()
    net.train()(torch.randn(8, 4, dtype=torch.float64))  # move the BN running stats off their init
    return net


def test_ema_update_is_the_exact_moving_average_and_copies_buffers():
    online, target = small_net(0), small_net(1)
    online(torch.randn(8, 4, dtype=torch.float64))  # online has seen one more batch than target
    before = {name: p.clone() for name, p in target.named_parameters()}
    ema_update(target, online, momentum=0.9)
    for name, p in target.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(online.named_parameters())[name]
        torch.testing.assert_close(p, expected, rtol=1e-14, atol=1e-15)
    online_buffers = dict(online.named_buffers())
    assert set(online_buffers) == {"layers.1.running_mean", "layers.1.running_var", "layers.1.num_batches_tracked"}
    for name, buffer in target.named_buffers():
        assert torch.equal(buffer, online_buffers[name]), name
    assert int(target.layers[1].num_batches_tracked) == 2


def test_momentum_one_keeps_the_target_and_zero_copies_the_online_weights():
    online, target = small_net(0), small_net(1)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, momentum=1.0)
    assert all(torch.equal(p, b) for p, b in zip(target.parameters(), before))
    ema_update(target, online, momentum=0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))


def test_ema_update_does_not_touch_the_online_network_or_build_a_graph():
    online = small_net(0)
    target = momentum_copy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    online_before = [p.clone() for p in online.parameters()]
    ema_update(target, online, momentum=0.5)
    assert all(torch.equal(p, b) for p, b in zip(online.parameters(), online_before))
    assert all(p.grad_fn is None and not p.requires_grad for p in target.parameters())


def test_ema_update_works_through_weight_norm_parametrizations():
    torch.manual_seed(0)
    online = DINOHead(8, out_dim=16, hidden_dim=12, bottleneck_dim=4)
    target = momentum_copy(online)
    with torch.no_grad():
        online.last_layer.parametrizations.weight.original1.mul_(3.0)
    v_before = target.last_layer.parametrizations.weight.original1.clone()
    ema_update(target, online, momentum=0.75)
    torch.testing.assert_close(target.last_layer.parametrizations.weight.original1,
                               0.75 * v_before + 0.25 * online.last_layer.parametrizations.weight.original1)


def test_mismatched_networks_name_the_first_difference():
    with pytest.raises(ConfigError, match=r"parameter 'layers.0.weight' differs: target \(6, 5\)"):
        ema_update(MLPHead(5, 6, 3), MLPHead(4, 6, 3), momentum=0.9)
    with pytest.raises(ConfigError, match="the target network has no parameter 'layers.0.bias'"):
        ema_update(MLPHead(4, 6, 3), MLPHead(4, 6, 3, batch_norm=False), momentum=0.9)
    with pytest.raises(ConfigError, match="the online network has no buffer 'running_mean'"):
        ema_update(nn.BatchNorm1d(4), nn.BatchNorm1d(4, track_running_stats=False), momentum=0.9)
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\]"):
        ema_update(MLPHead(4, 6, 3), MLPHead(4, 6, 3), momentum=1.5)


def test_cosine_momentum_endpoints_and_midpoint():
    assert cosine_momentum(0, 100, base=0.996) == pytest.approx(0.996, abs=1e-15)
    assert cosine_momentum(100, 100, base=0.996) == pytest.approx(1.0, abs=1e-15)
    assert cosine_momentum(50, 100, base=0.99) == pytest.approx(0.995, abs=1e-15)
    # A quarter of the way: 1 - 0.01 * (cos(pi / 4) + 1) / 2.
    assert cosine_momentum(25, 100) == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2, abs=1e-15)
    assert cosine_momentum(250, 100, base=0.9, final=0.99) == pytest.approx(0.99, abs=1e-15)  # holds after the end
    values = [cosine_momentum(step, 10) for step in range(11)]
    assert values == sorted(values)
    with pytest.raises(ConfigError, match="total_steps must be >= 1"):
        cosine_momentum(0, 0)
    with pytest.raises(ConfigError, match="step must be >= 0"):
        cosine_momentum(-1, 10)
    with pytest.raises(ConfigError, match=r"base momentum must be in \[0, 1\]"):
        cosine_momentum(0, 10, base=1.2)


def test_momentum_copy_is_frozen_and_shares_no_storage():
    online = small_net(0)
    target = momentum_copy(online)
    assert all(p.requires_grad for p in online.parameters())
    assert not any(p.requires_grad for p in target.parameters())
    online_pointers = {t.data_ptr() for t in [*online.parameters(), *online.buffers()]}
    assert not online_pointers & {t.data_ptr() for t in [*target.parameters(), *target.buffers()]}
    for t, o in zip(target.state_dict().values(), online.state_dict().values()):
        assert torch.equal(t, o)
    with torch.no_grad():
        next(online.parameters()).add_(1.0)
    assert not torch.equal(next(online.parameters()), next(target.parameters()))
