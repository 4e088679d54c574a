"""Projection heads (contrastkit.models.heads)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.errors import ConfigError
from contrastkit.models import DINOHead, MLPHead, Prototypes


def test_mlp_head_defaults_keep_their_layers_and_state_dict_keys():
    head = MLPHead(8, 16, 4, num_layers=3)
    assert [type(m) for m in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert list(head.state_dict()) == [
        "layers.0.weight",
        *[f"layers.1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")],
        "layers.3.weight",
        *[f"layers.4.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")],
        "layers.6.weight", "layers.6.bias",
    ]
    assert head(torch.randn(5, 8)).shape == (5, 4)


def test_last_batch_norm_is_affine_free_and_replaces_the_final_bias():
    head = MLPHead(8, 16, 4, num_layers=2, last_batch_norm=True).train()
    last = head.layers[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine and last.weight is None
    assert head.layers[-2].bias is None
    out = head(torch.randn(32, 8))
    # Training-mode BN without affine: every output feature has zero mean and unit (biased) variance.
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in MLPHead(8, 16, 4, batch_norm=False).modules())


def test_gelu_activation_and_unknown_activation():
    head = MLPHead(8, 16, 4, num_layers=3, activation="gelu")
    assert sum(isinstance(m, nn.GELU) for m in head.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in head.modules())
    with pytest.raises(ConfigError, match="unknown activation 'tanh'; choose one of relu, gelu"):
        MLPHead(8, 16, 4, activation="tanh")


@pytest.mark.parametrize("num_layers, linears", [(1, 1), (3, 3)])
def test_dino_head_shapes_and_mlp(num_layers, linears):
    head = DINOHead(12, out_dim=40, hidden_dim=24, bottleneck_dim=6, num_layers=num_layers)
    assert head(torch.randn(5, 12)).shape == (5, 40)
    assert sum(isinstance(m, nn.Linear) for m in head.mlp.modules()) == linears
    assert sum(isinstance(m, nn.GELU) for m in head.mlp.modules()) == linears - 1
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert head.last_layer.bias is None


def test_dino_head_normalises_the_bottleneck_and_the_last_layer_weights():
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=40, hidden_dim=24, bottleneck_dim=6).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    bottleneck = head.mlp(x)
    weight = head.last_layer.weight
    assert weight.shape == (40, 6)
    # Each output unit's weight vector has norm 1, so the logits are cosine similarities.
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(head(x), F.normalize(bottleneck, dim=1) @ weight.T)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.equal(gain, torch.ones_like(gain))
    # Scaling the input of the last layer does not change its output: it only sees directions.
    with torch.no_grad():
        head.mlp.layers[-1].weight.mul_(3.0)
        head.mlp.layers[-1].bias.mul_(3.0)
    torch.testing.assert_close(head(x), F.normalize(bottleneck, dim=1) @ weight.T)


def test_dino_head_gain_is_trainable_without_normalize_last_layer():
    head = DINOHead(12, out_dim=40, hidden_dim=24, bottleneck_dim=6, normalize_last_layer=False)
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.requires_grad
    head(torch.randn(3, 12)).sum().backward()
    assert gain.grad is not None
    with torch.no_grad():
        gain.mul_(2.0)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), gain.flatten())


def test_prototypes_normalize_and_cosine_scores():
    torch.manual_seed(0)
    protos = Prototypes(5, 7).double()
    with torch.no_grad():
        protos.prototypes.weight.mul_(4.0)
    protos.normalize_()
    weight = protos.prototypes.weight
    assert weight.is_leaf and weight.requires_grad  # still a trainable parameter, updated outside autograd
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-15)
    x = torch.randn(3, 5, dtype=torch.float64) * 10
    cosine = F.cosine_similarity(x[:, None, :], weight[None, :, :], dim=-1)
    scores = protos(x)
    assert scores.shape == (3, 7)
    torch.testing.assert_close(scores, cosine, rtol=0, atol=1e-14)
    assert protos.prototypes.bias is None


def test_prototypes_reject_empty_sizes():
    with pytest.raises(ConfigError, match="num_prototypes >= 1"):
        Prototypes(8, 0)
