"""AAM-softmax against a float64 reference written from the ArcFace formula, one row at a time."""

import math

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import AAMSoftmaxLoss, aam_softmax_loss


def reference(x, w, labels, margin, scale):
    total = 0.0
    for row, label in zip(x.double(), labels.tolist()):
        logits = []
        for c, weight in enumerate(w.double()):
            cosine = float(row @ weight / (row.norm() * weight.norm()))
            if c == label:
                theta = math.acos(max(-1.0, min(1.0, cosine)))
                # Beyond pi - m the margin is linear in the cosine (ArcFace's reference).
                cosine = math.cos(theta + margin) if theta + margin < math.pi else cosine - margin * math.sin(margin)
            logits.append(scale * cosine)
        top = max(logits)
        total += -(logits[label] - top) + math.log(sum(math.exp(v - top) for v in logits))
    return total / len(labels)


@pytest.mark.parametrize("margin,scale", [(0.2, 30.0), (0.0, 1.0), (0.5, 10.0)])
def test_matches_the_float64_reference(margin, scale):
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(12, 8, generator=generator), torch.randn(5, 8, generator=generator)
    labels = torch.randint(5, (12,), generator=generator)
    got = aam_softmax_loss(x.double(), w.double(), labels, margin=margin, scale=scale)
    assert float(got) == pytest.approx(reference(x, w, labels, margin, scale), rel=1e-10)
    assert aam_softmax_loss(x, w, labels, margin=margin, scale=scale).dtype == torch.float32


def test_no_margin_is_the_cosine_softmax():
    x, w, labels = torch.randn(6, 4).double(), torch.randn(3, 4).double(), torch.tensor([0, 1, 2, 0, 1, 2])
    cosine = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
    expected = torch.nn.functional.cross_entropy(7 * cosine, labels)
    assert torch.allclose(aam_softmax_loss(x, w, labels, margin=0.0, scale=7.0), expected)


def test_past_pi_minus_margin_the_target_logit_keeps_falling_with_the_angle():
    # The other class is orthogonal to every x, so only the target logit changes along the path.
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    angles = torch.linspace(2.0, math.pi, 30, dtype=torch.float64)  # across pi - 0.5
    x = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], dim=1)
    losses = [float(aam_softmax_loss(row[None], w, torch.tensor([0]), margin=0.5, scale=10.0)) for row in x]
    assert all(b > a for a, b in zip(losses, losses[1:]))


def test_gradients_are_finite_when_an_embedding_is_its_class_weight():
    w = torch.randn(3, 4, requires_grad=True)
    x = w.detach()[[0, 1]].clone().requires_grad_()
    aam_softmax_loss(x, w, torch.tensor([0, 1])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()


def test_the_module_learns_to_separate_classes():
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    labels = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    criterion = AAMSoftmaxLoss(dim=6, classes=4, margin=0.1, scale=10.0)
    optimizer = torch.optim.SGD(criterion.parameters(), lr=0.5)
    first = float(criterion(x, labels).detach())
    for _ in range(200):
        optimizer.zero_grad()
        criterion(x, labels).backward()
        optimizer.step()
    assert float(criterion(x, labels).detach()) < first / 2


@pytest.mark.parametrize("call,message", [
    (lambda: aam_softmax_loss(torch.randn(4, 3), torch.randn(2, 5), torch.zeros(4, dtype=torch.long)), "dim 5"),
    (lambda: aam_softmax_loss(torch.randn(4, 3), torch.randn(2, 3), torch.tensor([0, 1, 2, 0])), "2 class weights"),
    (lambda: aam_softmax_loss(torch.randn(4, 3), torch.randn(2, 3), torch.zeros(3, dtype=torch.long)), "one each"),
    (lambda: aam_softmax_loss(torch.full((2, 3), float("nan")), torch.randn(2, 3), torch.tensor([0, 1])), "NaN"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(InputError, match=message):
        call()


@pytest.mark.parametrize("kwargs", [dict(margin=2.0), dict(margin=-0.1), dict(scale=0.0), dict(scale=float("inf"))])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        aam_softmax_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), **kwargs)
    with pytest.raises(ConfigError):
        AAMSoftmaxLoss(3, 2, **kwargs)
