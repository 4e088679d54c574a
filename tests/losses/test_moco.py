import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.moco import MoCoLoss, moco_info_nce


def reference_moco(queries, keys, temperature, negatives=None):
    """Float64 loop from the papers: query i against key i, and the batch's keys or the queue."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    q, k = unit(queries.detach().numpy()), unit(keys.detach().numpy())
    total = 0.0
    for i in range(q.shape[0]):
        positive = q[i] @ k[i] / temperature
        if negatives is None:
            candidates = [q[i] @ k[j] / temperature for j in range(k.shape[0])]
        else:
            queue = unit(negatives.detach().numpy())
            candidates = [positive] + [q[i] @ n / temperature for n in queue]
        total += np.log(np.sum(np.exp(candidates))) - positive
    return total / q.shape[0]


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("with_queue", [False, True])
def test_matches_float64_reference(temperature, with_queue):
    generator = torch.Generator().manual_seed(int(temperature * 100) + with_queue)
    q, k = (torch.randn(6, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    queue = torch.randn(9, 5, generator=generator, dtype=torch.float64) if with_queue else None
    loss = moco_info_nce(q, k, negatives=queue, temperature=temperature)
    assert loss.item() == pytest.approx(reference_moco(q, k, temperature, queue), rel=1e-10)


@pytest.mark.parametrize("with_queue", [False, True])
def test_gradcheck(with_queue):
    generator = torch.Generator().manual_seed(7)
    tensors = [torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    if with_queue:
        tensors.append(torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(
        lambda q, k, *n: moco_info_nce(q, k, negatives=n[0] if n else None, temperature=0.3), tensors)


def test_with_a_queue_each_query_sees_only_its_key_and_the_queue():
    # MoCo v2 keeps in-batch keys out of the denominator: the loss is the mean of per-query losses.
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    queue = torch.randn(6, 3, generator=generator)
    per_query = [moco_info_nce(q[i:i + 1], k[i:i + 1], negatives=queue) for i in range(4)]
    assert moco_info_nce(q, k, negatives=queue).item() == pytest.approx(torch.stack(per_query).mean().item(), rel=1e-6)


def test_module_matches_function_and_errors():
    q, k = torch.randn(3, 4), torch.randn(3, 4)
    assert MoCoLoss(0.5)(q, k).item() == pytest.approx(moco_info_nce(q, k, temperature=0.5).item())
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        MoCoLoss(0.0)
    with pytest.raises(InputError, match="same shape"):
        moco_info_nce(q, k[:2])
    with pytest.raises(InputError, match="same projection head"):
        moco_info_nce(q, k, negatives=torch.randn(5, 3))
    with pytest.raises(InputError, match="NaN"):
        moco_info_nce(q, torch.full_like(k, float("nan")))
