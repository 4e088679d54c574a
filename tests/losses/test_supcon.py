import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.info_nce import info_nce
from contrastkit.losses.supcon import SupConLoss, supcon_loss


def reference_supcon(views, labels, temperature, similarity="cosine"):
    """Independent float64 SupCon L_out from the paper's formula: loops over anchors and positives."""
    z = np.concatenate([v.detach().numpy().astype(np.float64) for v in views])
    if similarity == "cosine":
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    row_labels = list(labels.numpy()) * len(views)
    m = z.shape[0]
    total = 0.0
    for i in range(m):
        denominator = sum(np.exp(z[i] @ z[a] / temperature) for a in range(m) if a != i)
        positives = [p for p in range(m) if p != i and row_labels[p] == row_labels[i]]
        total += -np.mean([np.log(np.exp(z[i] @ z[p] / temperature) / denominator) for p in positives])
    return total / m


@pytest.mark.parametrize("num_views", [2, 3])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matches_float64_reference(num_views, temperature, similarity):
    generator = torch.Generator().manual_seed(num_views * 10 + int(temperature * 100))
    views = [torch.randn(7, 5, generator=generator, dtype=torch.float64) * 0.5 for _ in range(num_views)]
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    loss = supcon_loss(*views, labels=labels, temperature=temperature, similarity=similarity)
    assert loss.item() == pytest.approx(reference_supcon(views, labels, temperature, similarity), rel=1e-10)


def test_gradcheck():
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    labels = torch.tensor([1, 0, 1, 1])
    assert torch.autograd.gradcheck(lambda *v: supcon_loss(*v, labels=labels, temperature=0.3), views)


def test_distinct_labels_reduce_to_info_nce():
    generator = torch.Generator().manual_seed(2)
    z_a, z_b = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    torch.testing.assert_close(SupConLoss(temperature=0.2)(z_a, z_b, labels=torch.arange(6)),
                               info_nce(z_a, z_b, temperature=0.2))


def test_bf16_inputs_are_computed_in_float32():
    z_a, z_b, labels = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16(), torch.tensor([0, 0, 1, 1])
    loss = supcon_loss(z_a, z_b, labels=labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, supcon_loss(z_a.float(), z_b.float(), labels=labels))


def test_autocast_does_not_lower_the_precision():
    z_a, z_b = torch.randn(16, 32), torch.randn(16, 32)
    labels = torch.arange(16) % 4
    expected = supcon_loss(z_a, z_b, labels=labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = supcon_loss(z_a, z_b, labels=labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("labels, message", [
    (None, "use info_nce for the self-supervised case"),
    (torch.tensor([0, 1, 2]), "labels has 3 entries but the views have batch 4"),
    (torch.zeros(4, 1, dtype=torch.long), "labels must have shape"),
    (torch.tensor([0.0, 1.0, 0.0, 1.0]), "integer class ids"),
])
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(InputError, match=message):
        supcon_loss(torch.randn(4, 8), torch.randn(4, 8), labels=labels)


def test_bad_views_and_options_are_refused():
    labels = torch.arange(4)
    with pytest.raises(InputError, match="same shape"):
        supcon_loss(torch.randn(4, 8), torch.randn(4, 7), labels=labels)
    z_a = torch.randn(4, 8)
    z_a[0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN/inf"):
        supcon_loss(z_a, torch.randn(4, 8), labels=labels)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        SupConLoss(temperature=-1.0)
    with pytest.raises(ConfigError, match="similarity"):
        SupConLoss(similarity="l2")
