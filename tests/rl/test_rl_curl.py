"""CURL's and ATC's auxiliary losses against float64 references written here (contrastkit.losses.curl)."""

import math

import pytest
import torch
from torch import nn

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.curl import bilinear_info_nce
from contrastkit.methods.rl_auxiliary import ATCAuxiliaryLoss, CURLAuxiliaryLoss


def _reference(anchors, keys, weight):
    """-1/N sum_i log( exp(a_i W k_i) / sum_j exp(a_i W k_j) ), element by element in float64."""
    a, k, w = (t.detach().double().tolist() for t in (anchors, keys, weight))
    n, d = len(a), len(w)
    total = 0.0
    for i in range(n):
        aw = [sum(a[i][p] * w[p][q] for p in range(d)) for q in range(d)]
        scores = [sum(aw[q] * k[j][q] for q in range(d)) for j in range(n)]
        top = max(scores)
        total += -(scores[i] - top) + math.log(sum(math.exp(s - top) for s in scores))
    return total / n


def _encoder(in_dim=3 * 6 * 6, out_dim=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 24), nn.ReLU(), nn.Linear(24, out_dim))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bilinear_info_nce_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    a, k, w = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g), torch.rand(5, 5, generator=g)
    loss = bilinear_info_nce(a.to(dtype), k.to(dtype), w.to(dtype))
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(_reference(a, k, w), rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_bilinear_info_nce_large_logits_stay_finite():
    g = torch.Generator().manual_seed(1)
    a, k, w = 30 * torch.randn(6, 4, generator=g), 30 * torch.randn(6, 4, generator=g), torch.rand(4, 4, generator=g)
    loss = bilinear_info_nce(a, k, w)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(_reference(a, k, w), rel=1e-4)


def test_bilinear_info_nce_does_not_differentiate_keys():
    a, k, w = (torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True),
               torch.rand(3, 3, requires_grad=True))
    bilinear_info_nce(a, k, w).backward()
    assert a.grad is not None and w.grad is not None and k.grad is None


def test_curl_module_matches_reference_and_gradients():
    torch.manual_seed(0)
    curl = CURLAuxiliaryLoss(_encoder(), feature_dim=10, momentum=0.9).double()
    anchor, positive = torch.rand(8, 3, 6, 6, dtype=torch.float64), torch.rand(8, 3, 6, 6, dtype=torch.float64)
    loss = curl(anchor, positive)
    with torch.no_grad():
        expected = _reference(curl.encoder(anchor), curl.key_encoder(positive), curl.W)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert curl.W.grad is not None and curl.W.grad.abs().sum() > 0
    assert all(p.grad is not None for p in curl.encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in curl.key_encoder.parameters())


def test_curl_update_target_is_an_ema():
    torch.manual_seed(0)
    curl = CURLAuxiliaryLoss(_encoder(), feature_dim=10, momentum=0.9)
    before = [p.clone() for p in curl.key_encoder.parameters()]
    with torch.no_grad():
        for p in curl.encoder.parameters():
            p.add_(1.0)
    curl.update_target()
    for old, new, online in zip(before, curl.key_encoder.parameters(), curl.encoder.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)


def test_curl_can_share_a_key_encoder():
    encoder, target = _encoder(), _encoder()
    curl = CURLAuxiliaryLoss(encoder, feature_dim=10, key_encoder=target)
    assert curl.key_encoder is target


def test_atc_module_matches_reference_and_gradients():
    torch.manual_seed(0)
    atc = ATCAuxiliaryLoss(_encoder(), feature_dim=10, latent_dim=6, hidden_dim=12).double()
    obs_t, obs_later = torch.rand(8, 3, 6, 6, dtype=torch.float64), torch.rand(8, 3, 6, 6, dtype=torch.float64)
    # Make the target differ from the online networks, so the test sees which one each side uses.
    with torch.no_grad():
        for p in [*atc.target_encoder.parameters(), *atc.target_head.parameters()]:
            p.mul_(0.5)
    loss = atc(obs_t, obs_later)
    with torch.no_grad():
        features = atc.encoder(obs_t)
        code = features @ atc.head.weight.T + atc.head.bias
        first, last = atc.predictor[0], atc.predictor[2]
        prediction = code + (code @ first.weight.T + first.bias).clamp(min=0) @ last.weight.T + last.bias
        target_features = atc.target_encoder(obs_later)
        target = target_features @ atc.target_head.weight.T + atc.target_head.bias
    assert loss.item() == pytest.approx(_reference(prediction, target, atc.W), rel=1e-12)
    loss.backward()
    trained = [atc.W, *atc.encoder.parameters(), *atc.head.parameters(), *atc.predictor.parameters()]
    assert all(p.grad is not None for p in trained)
    assert all(p.grad is None for p in [*atc.target_encoder.parameters(), *atc.target_head.parameters()])


def test_atc_update_target_moves_encoder_and_head():
    torch.manual_seed(0)
    atc = ATCAuxiliaryLoss(_encoder(), feature_dim=10, latent_dim=6, hidden_dim=12, momentum=0.5)
    with torch.no_grad():
        atc.head.weight.add_(2.0)
    old = atc.target_head.weight.clone()
    atc.update_target()
    torch.testing.assert_close(atc.target_head.weight, 0.5 * old + 0.5 * atc.head.weight)


def test_refusals():
    with pytest.raises(InputError, match="at least 2"):
        bilinear_info_nce(torch.randn(1, 3), torch.randn(1, 3), torch.rand(3, 3))
    with pytest.raises(InputError, match="weight"):
        bilinear_info_nce(torch.randn(4, 3), torch.randn(4, 3), torch.rand(3, 2))
    with pytest.raises(InputError, match="NaN"):
        bilinear_info_nce(torch.full((4, 3), float("nan")), torch.randn(4, 3), torch.rand(3, 3))
    with pytest.raises(InputError, match="feature_dim"):
        CURLAuxiliaryLoss(_encoder(), feature_dim=7)(torch.rand(4, 3, 6, 6), torch.rand(4, 3, 6, 6))
    with pytest.raises(ConfigError, match="momentum"):
        CURLAuxiliaryLoss(_encoder(), feature_dim=10, momentum=1.5)
    with pytest.raises(ConfigError, match="latent_dim"):
        ATCAuxiliaryLoss(_encoder(), feature_dim=10, latent_dim=0)


@pytest.mark.parametrize("kind", ["curl", "atc"])
def test_losses_learn_to_match_noisy_views(kind):
    """A few Adam steps with update_target() in the loop take the loss well below chance, log(N)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(16, 20, generator=g)
    encoder = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 8))
    aux = (CURLAuxiliaryLoss(encoder, 8) if kind == "curl"
           else ATCAuxiliaryLoss(encoder, 8, latent_dim=8, hidden_dim=16))
    optimizer = torch.optim.Adam(aux.parameters(), lr=1e-2)
    for _ in range(60):
        loss = aux(data + 0.1 * torch.randn(16, 20, generator=g), data + 0.1 * torch.randn(16, 20, generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        aux.update_target()
    assert loss.item() < 0.8 * math.log(16)
