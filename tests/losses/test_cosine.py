import numpy as np
import pytest
import torch

from contrastkit.errors import InputError
from contrastkit.losses.cosine import NegativeCosineSimilarity, negative_cosine_similarity


def reference_negative_cosine(prediction, target):
    """Independent float64 -mean cos(p_i, z_i): a loop over samples."""
    p, z = (t.detach().numpy().astype(np.float64) for t in (prediction, target))
    return -np.mean([p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(p.shape[0])])


def test_matches_float64_reference():
    generator = torch.Generator().manual_seed(0)
    p, z = (torch.randn(7, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    assert negative_cosine_similarity(p, z).item() == pytest.approx(reference_negative_cosine(p, z), rel=1e-10)


def test_gradcheck_on_the_prediction():
    generator = torch.Generator().manual_seed(1)
    p = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: negative_cosine_similarity(x, z), (p,))


def test_no_gradient_reaches_the_target():
    encoder = torch.nn.Linear(5, 5)
    prediction = torch.randn(6, 5, requires_grad=True)
    target = torch.randn(6, 5, requires_grad=True)
    NegativeCosineSimilarity()(prediction, encoder(target)).backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert target.grad is None
    assert all(parameter.grad is None for parameter in encoder.parameters())


def test_byol_loss_is_two_plus_twice_this():
    generator = torch.Generator().manual_seed(2)
    p, z = (torch.randn(8, 16, generator=generator, dtype=torch.float64) for _ in range(2))
    byol = (torch.nn.functional.normalize(p, dim=1) - torch.nn.functional.normalize(z, dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(byol, 2 + 2 * negative_cosine_similarity(p, z))


def test_identical_and_opposite_vectors_give_the_extremes():
    z = torch.randn(4, 8, dtype=torch.float64)
    assert negative_cosine_similarity(z, 3 * z).item() == pytest.approx(-1.0, rel=1e-12)
    assert negative_cosine_similarity(z, -z).item() == pytest.approx(1.0, rel=1e-12)


def test_bf16_inputs_are_computed_in_float32():
    p, z = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    loss = negative_cosine_similarity(p, z)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, negative_cosine_similarity(p.float(), z.float()))


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="same shape"):
        negative_cosine_similarity(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(InputError, match=r"prediction must have shape \(batch, dim\)"):
        negative_cosine_similarity(torch.randn(8), torch.randn(8))
    target = torch.randn(4, 8)
    target[0, 0] = float("nan")
    with pytest.raises(InputError, match="target holds 1 NaN"):
        negative_cosine_similarity(torch.randn(4, 8), target)
