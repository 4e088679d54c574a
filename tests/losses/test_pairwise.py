import math

import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.pairwise import (
    ContrastiveLoss,
    LogisticLoss,
    NPairLoss,
    SigLIPLoss,
    contrastive_loss,
    logistic_loss,
    n_pair_loss,
    sigmoid_loss,
)

from loss_helpers import numeric_gradients


def unit(v):
    return v / np.linalg.norm(v)


def reference_pair_distance(x, y, distance):
    return 1 - unit(x) @ unit(y) if distance == "cosine" else np.sqrt(np.sum((x - y) ** 2))


def reference_contrastive(x_a, x_b, same, margin, distance):
    """Hadsell et al. 2006, a loop over pairs."""
    total = 0.0
    for x, y, similar in zip(x_a, x_b, same):
        d = reference_pair_distance(x, y, distance)
        total += d ** 2 if similar else max(0.0, margin - d) ** 2
    return total / (2 * len(x_a))


def reference_n_pair(anchors, positives, l2_reg=0.0):
    """Sohn 2016, a loop over anchors and their negatives p_j, j != i."""
    n = len(anchors)
    total = 0.0
    for i in range(n):
        total += np.log(1 + sum(np.exp(anchors[i] @ positives[j] - anchors[i] @ positives[i])
                                for j in range(n) if j != i))
    penalty = sum(a @ a + p @ p for a, p in zip(anchors, positives)) / n
    return total / n + l2_reg * penalty


def reference_pair_terms(x_a, x_b, scale, bias, positive, similarity="cosine"):
    """Every pair's binary cross-entropy: -log sigma(l) for a positive, -log(1 - sigma(l)) for a
    negative, with sigma(l) = 1 / (1 + e^-l) and 1 - sigma(l) = 1 / (1 + e^l) (log1p keeps the
    digits where sigma(l) is close to 1)."""
    terms = []
    for i, x in enumerate(x_a):
        for j, y in enumerate(x_b):
            s = unit(x) @ unit(y) if similarity == "cosine" else x @ y
            logit = scale * s + bias
            terms.append(np.log1p(np.exp(-logit)) if positive(i, j) else np.log1p(np.exp(logit)))
    return terms


def reference_logistic(x_a, x_b, temperature, bias, similarity, labels=None):
    positive = (lambda i, j: i == j) if labels is None else (lambda i, j: labels[i] == labels[j])
    terms = reference_pair_terms(x_a, x_b, 1 / temperature, bias, positive, similarity)
    return sum(terms) / len(x_a) ** 2


def reference_sigmoid(x_a, x_b, logit_scale, logit_bias):
    """Zhai et al. 2023: -1/N sum_ij log sigma(z_ij (exp(t') x_i.y_j + b))."""
    terms = reference_pair_terms(x_a, x_b, np.exp(logit_scale), logit_bias, lambda i, j: i == j)
    return sum(terms) / len(x_a)


def random_pairs(seed, batch=6, dim=5, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator, dtype=torch.float64) * scale for _ in range(2)]


# -- contrastive ------------------------------------------------------------------------------

@pytest.mark.parametrize("distance, margin", [("euclidean", 1.5), ("euclidean", 3.0), ("cosine", 0.5),
                                              ("cosine", 1.2)])
@pytest.mark.parametrize("as_bool", [True, False])
def test_contrastive_matches_float64_reference(distance, margin, as_bool):
    x_a, x_b = random_pairs(1, batch=10, scale=0.5)
    same = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 1, 0])
    loss = contrastive_loss(x_a, x_b, same.bool() if as_bool else same.float(), margin=margin, distance=distance)
    expected = reference_contrastive(x_a.numpy(), x_b.numpy(), same.tolist(), margin, distance)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("distance, margin", [("euclidean", 1.5), ("cosine", 0.8)])
def test_contrastive_gradients_match_finite_differences_away_from_the_hinge(distance, margin):
    x_a, x_b = (t.requires_grad_() for t in random_pairs(2, batch=8, dim=3, scale=0.6))
    same = [1, 0, 0, 1, 0, 0, 1, 0]
    arrays = [x_a.detach().numpy().copy(), x_b.detach().numpy().copy()]
    gaps = np.array([margin - reference_pair_distance(x, y, distance) for x, y in zip(*arrays)])
    negative_gaps = gaps[np.array(same) == 0]
    assert (negative_gaps > 0).any() and (negative_gaps < 0).any() and np.abs(negative_gaps).min() > 1e-3
    ContrastiveLoss(margin, distance)(x_a, x_b, torch.tensor(same)).backward()
    numeric = numeric_gradients(lambda a, b: reference_contrastive(a, b, same, margin, distance), arrays)
    np.testing.assert_allclose(x_a.grad.numpy(), numeric[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(x_b.grad.numpy(), numeric[1], rtol=1e-6, atol=1e-8)


def test_contrastive_identical_pairs_give_finite_gradients():
    x_a = torch.randn(4, 3, requires_grad=True)
    x_b = x_a.detach().clone().requires_grad_()
    loss = contrastive_loss(x_a, x_b, torch.tensor([True, False, True, False]), margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(2 * 1.0 / 8)
    assert torch.isfinite(x_a.grad).all() and torch.isfinite(x_b.grad).all()


def test_contrastive_bad_inputs_are_refused():
    x_a, x_b = random_pairs(3)
    with pytest.raises(InputError, match="same has 5 entries"):
        contrastive_loss(x_a, x_b, torch.ones(5))
    with pytest.raises(InputError, match="0/1"):
        contrastive_loss(x_a, x_b, torch.full((6,), 2.0))
    with pytest.raises(InputError, match="same shape"):
        contrastive_loss(x_a, x_b[:, :3], torch.ones(6))
    with pytest.raises(ConfigError, match="margin must be > 0"):
        ContrastiveLoss(margin=0.0)
    with pytest.raises(ConfigError, match="distance must be one of"):
        ContrastiveLoss(distance="squared_euclidean")
    x_a[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        contrastive_loss(x_a, x_b, torch.ones(6))


# -- N-pair -----------------------------------------------------------------------------------

@pytest.mark.parametrize("l2_reg", [0.0, 0.01])
@pytest.mark.parametrize("batch", [2, 7])
def test_n_pair_matches_float64_reference(l2_reg, batch):
    anchors, positives = random_pairs(4 + batch, batch=batch, scale=0.7)
    loss = NPairLoss(l2_reg)(anchors, positives)
    assert loss.item() == pytest.approx(reference_n_pair(anchors.numpy(), positives.numpy(), l2_reg),
                                        rel=1e-10, abs=1e-15)


def test_n_pair_gradcheck():
    anchors, positives = (t.requires_grad_() for t in random_pairs(5, batch=4, dim=3))
    assert torch.autograd.gradcheck(lambda a, p: n_pair_loss(a, p, l2_reg=0.1), (anchors, positives))


def test_n_pair_under_bf16_autocast_is_computed_in_float32():
    anchors, positives = (t.float() for t in random_pairs(6, batch=8, dim=32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = n_pair_loss(anchors, positives)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, n_pair_loss(anchors, positives))


def test_n_pair_bad_inputs_are_refused():
    with pytest.raises(InputError, match="anchors and positives must have the same shape"):
        n_pair_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(InputError, match="empty batch"):
        n_pair_loss(torch.randn(0, 3), torch.randn(0, 3))
    with pytest.raises(ConfigError, match="l2_reg must be >= 0"):
        NPairLoss(l2_reg=-1.0)


# -- logistic and SigLIP ----------------------------------------------------------------------

@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("temperature, bias", [(0.1, 0.0), (0.5, -2.0)])
@pytest.mark.parametrize("with_labels", [False, True])
def test_logistic_matches_float64_reference(similarity, temperature, bias, with_labels):
    x_a, x_b = random_pairs(7, scale=0.5)
    labels = torch.tensor([0, 1, 0, 2, 1, 3]) if with_labels else None
    loss = logistic_loss(x_a, x_b, temperature=temperature, bias=bias, similarity=similarity, labels=labels)
    expected = reference_logistic(x_a.numpy(), x_b.numpy(), temperature, bias, similarity,
                                  None if labels is None else labels.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_logistic_gradcheck(similarity):
    x_a, x_b = (t.requires_grad_() for t in random_pairs(8, batch=4, dim=3))
    labels = torch.tensor([0, 1, 1, 2])
    assert torch.autograd.gradcheck(
        lambda a, b: logistic_loss(a, b, temperature=0.3, bias=-1.0, similarity=similarity, labels=labels),
        (x_a, x_b))


@pytest.mark.parametrize("logit_scale, logit_bias", [(math.log(10.0), -10.0), (0.5, 1.0)])
def test_sigmoid_matches_float64_reference(logit_scale, logit_bias):
    x_a, x_b = random_pairs(9)
    loss = sigmoid_loss(x_a, x_b, torch.tensor(logit_scale, dtype=torch.float64), torch.tensor(logit_bias))
    assert loss.item() == pytest.approx(reference_sigmoid(x_a.numpy(), x_b.numpy(), logit_scale, logit_bias),
                                        rel=1e-10)


def test_sigmoid_gradcheck_including_scale_and_bias():
    x_a, x_b = (t.requires_grad_() for t in random_pairs(10, batch=4, dim=3))
    scale = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sigmoid_loss, (x_a, x_b, scale, bias))


def test_sigmoid_is_batch_size_times_logistic_with_cosine():
    x_a, x_b = random_pairs(11)
    sigmoid = sigmoid_loss(x_a, x_b, math.log(4.0), -3.0)
    logistic = logistic_loss(x_a, x_b, temperature=0.25, bias=-3.0, similarity="cosine")
    assert sigmoid.item() == pytest.approx(6 * logistic.item(), rel=1e-12)


def test_siglip_module_holds_log_scale_and_bias():
    loss_fn = SigLIPLoss(init_scale=10.0, init_bias=-10.0)
    assert {name for name, _ in loss_fn.named_parameters()} == {"logit_scale", "logit_bias"}
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10.0))
    x_a, x_b = (t.float() for t in random_pairs(12))
    loss = loss_fn(x_a, x_b)
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_bias.grad is not None
    torch.testing.assert_close(loss, sigmoid_loss(x_a, x_b, math.log(10.0), -10.0))
    frozen = SigLIPLoss(learnable=False)
    assert list(frozen.parameters()) == []
    assert {name for name, _ in frozen.named_buffers()} == {"logit_scale", "logit_bias"}


def test_logistic_module_matches_function():
    x_a, x_b = random_pairs(13)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    expected = logistic_loss(x_a, x_b, temperature=0.2, bias=-1.0, similarity="dot", labels=labels)
    assert LogisticLoss(0.2, -1.0, "dot")(x_a, x_b, labels) == expected


def test_bf16_inputs_are_computed_in_float32():
    x_a, x_b = (t.bfloat16() for t in random_pairs(14))
    loss = sigmoid_loss(x_a, x_b, 1.0, -1.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, sigmoid_loss(x_a.float(), x_b.float(), 1.0, -1.0))


def test_logistic_and_sigmoid_bad_inputs_are_refused():
    x_a, x_b = random_pairs(15)
    with pytest.raises(InputError, match="logit_scale must be a 0-dim tensor"):
        sigmoid_loss(x_a, x_b, torch.zeros(1), torch.tensor(0.0))
    with pytest.raises(InputError, match="labels has 4 entries"):
        logistic_loss(x_a, x_b, labels=torch.arange(4))
    with pytest.raises(InputError, match=r"shape \(batch, dim\)"):
        logistic_loss(x_a[None], x_b[None])
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        LogisticLoss(temperature=0.0)
    with pytest.raises(ConfigError, match="similarity must be one of"):
        LogisticLoss(similarity="euclidean")
    with pytest.raises(ConfigError, match="init_scale must be > 0"):
        SigLIPLoss(init_scale=0.0)
    x_b[3, 1] = float("inf")
    with pytest.raises(InputError, match="x_b holds 1 NaN/inf"):
        sigmoid_loss(x_a, x_b, 1.0, 0.0)


@pytest.mark.parametrize("as_tensor", [True, False])
def test_sigmoid_refuses_a_scale_given_where_its_log_belongs(as_tensor):
    # Before: SigLIP's initial scale 10 passed as t' gave exp(10) = 22026 and a loss of ~3e4, and
    # 100 an infinite loss. open_clip's SigLipLoss takes the scale itself, so its users pass these.
    x_a, x_b = (x.float() for x in random_pairs(16))
    for scale_not_its_log in (10.0, 100.0):
        logit_scale = torch.tensor(scale_not_its_log) if as_tensor else scale_not_its_log
        with pytest.raises(InputError, match=rf"sigmoid_loss got logit_scale = {scale_not_its_log:g}, .* the log "
                                             rf"of the scale .* pass math\.log\({scale_not_its_log:g}\)"):
            sigmoid_loss(x_a, x_b, logit_scale, -10.0)
    with pytest.raises(ConfigError, match=r"init_scale must be <= 1000 \(the scale itself, not its log\)"):
        SigLIPLoss(init_scale=1e4)


def test_sigmoid_at_the_largest_scale_taken_matches_float64():
    x_a, x_b = random_pairs(17)
    loss = sigmoid_loss(x_a.float(), x_b.float(), torch.tensor(math.log(1000.0)), torch.tensor(-10.0))
    expected = reference_sigmoid(x_a.numpy(), x_b.numpy(), math.log(1000.0), -10.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
