import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.swav import SwAVLoss, sinkhorn_knopp, swav_loss

from loss_helpers import run_in_process_group


def reference_sinkhorn(scores, epsilon, iterations):
    """Independent float64 SwAV Sinkhorn-Knopp as the paper states it, in the exponential domain:
    Q = exp(S/eps)^T / total, then per iteration rows (prototypes) to 1/K, columns (samples) to
    1/B, and finally times B."""
    s = scores.detach().numpy().astype(np.float64)
    batch, num_prototypes = s.shape
    q = np.exp(s / epsilon).T
    q /= q.sum()
    for _ in range(iterations):
        for k in range(num_prototypes):
            q[k, :] /= q[k, :].sum() * num_prototypes
        for b in range(batch):
            q[:, b] /= q[:, b].sum() * batch
    return (q * batch).T


def reference_swav(scores, temperature, epsilon, iterations, num_assignment_views, codes=None):
    """Independent float64 SwAV loss: loops over assignment views, predicting views and samples.
    ``codes`` fixes the codes (to differentiate with them held constant, as the stop-gradient does)."""
    views = [s.detach().numpy().astype(np.float64) for s in scores]
    if codes is None:
        codes = [reference_sinkhorn(scores[v], epsilon, iterations) for v in range(num_assignment_views)]
    total = 0.0
    for v in range(num_assignment_views):
        swapped = 0.0
        for w in range(len(views)):
            if w == v:
                continue
            for b in range(views[w].shape[0]):
                exps = np.exp(views[w][b] / temperature)
                swapped -= sum(codes[v][b, k] * np.log(exps[k] / exps.sum()) for k in range(len(exps)))
        total += swapped / views[0].shape[0] / (len(views) - 1)
    return total / num_assignment_views


def prototype_scores(seed, num_views=2, batch=6, num_prototypes=4, dim=5):
    """Cosine similarities of normalised embeddings to normalised prototypes, as SwAV feeds them."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.nn.functional.normalize(torch.randn(num_prototypes, dim, generator=generator,
                                                           dtype=torch.float64), dim=1)
    return [torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64),
                                          dim=1) @ prototypes.T for _ in range(num_views)]


@pytest.mark.parametrize("iterations", [1, 3, 10])
@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_sinkhorn_matches_float64_reference(iterations, epsilon):
    scores = prototype_scores(iterations)[0]
    expected = torch.from_numpy(reference_sinkhorn(scores, epsilon, iterations))
    torch.testing.assert_close(sinkhorn_knopp(scores, epsilon=epsilon, iterations=iterations), expected,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_rows_sum_to_one_after_any_number_of_iterations(iterations):
    codes = sinkhorn_knopp(prototype_scores(1, batch=16)[0], iterations=iterations)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-12)


def test_sinkhorn_converges_to_equipartition():
    scores = prototype_scores(2, batch=16, num_prototypes=4)[0]
    few, many = (sinkhorn_knopp(scores, iterations=n) for n in (3, 500))
    equal_share = torch.full((4,), 16 / 4, dtype=torch.float64)
    torch.testing.assert_close(many.sum(dim=0), equal_share, rtol=1e-6, atol=0)
    torch.testing.assert_close(many.sum(dim=1), torch.ones(16, dtype=torch.float64), rtol=1e-6, atol=0)
    # Three iterations only approach the prototype marginals; they get closer than one iteration.
    one = sinkhorn_knopp(scores, iterations=1)
    assert (few.sum(dim=0) - equal_share).abs().max() < (one.sum(dim=0) - equal_share).abs().max()


def test_sinkhorn_is_invariant_to_score_offsets():
    scores = prototype_scores(3)[0]
    codes = sinkhorn_knopp(scores)
    per_prototype = torch.tensor([[0.3, -2.0, 5.0, 0.1]], dtype=torch.float64)
    per_sample = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)[:, None]
    # A constant per prototype (and so a global one) cancels exactly in the first normalisation;
    # huge offsets show that the exponent cannot overflow.
    torch.testing.assert_close(sinkhorn_knopp(scores + per_prototype), codes, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(sinkhorn_knopp(scores + 1e4), codes, rtol=1e-8, atol=1e-12)
    # A constant per sample changes the early iterates but not the converged transport plan.
    torch.testing.assert_close(sinkhorn_knopp(scores + per_sample, iterations=500),
                               sinkhorn_knopp(scores, iterations=500), rtol=1e-8, atol=1e-12)


def test_sinkhorn_carries_no_gradient():
    scores = prototype_scores(4)[0].requires_grad_()
    assert not sinkhorn_knopp(scores).requires_grad


@pytest.mark.parametrize("num_views, num_assignment_views", [(2, 2), (2, 1), (4, 2), (3, 3)])
def test_swav_loss_matches_float64_reference(num_views, num_assignment_views):
    scores = prototype_scores(num_views * 10 + num_assignment_views, num_views=num_views)
    loss = swav_loss(scores, temperature=0.1, epsilon=0.05, sinkhorn_iterations=3,
                     num_assignment_views=num_assignment_views)
    expected = reference_swav(scores, 0.1, 0.05, 3, num_assignment_views)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_gradient_treats_the_codes_as_constants():
    scores = [s.requires_grad_() for s in prototype_scores(5, num_views=3, batch=3, num_prototypes=3)]
    swav_loss(scores, temperature=0.2, num_assignment_views=2).backward()
    codes = [reference_sinkhorn(scores[v], 0.05, 3) for v in range(2)]
    step = 1e-6
    for tensor in scores:
        numeric = torch.zeros_like(tensor)
        for index in np.ndindex(*tensor.shape):
            with torch.no_grad():
                tensor[index] += step
                upper = reference_swav(scores, 0.2, 0.05, 3, 2, codes)
                tensor[index] -= 2 * step
                lower = reference_swav(scores, 0.2, 0.05, 3, 2, codes)
                tensor[index] += step
            numeric[index] = (upper - lower) / (2 * step)
        torch.testing.assert_close(tensor.grad, numeric, rtol=1e-6, atol=1e-8)


def test_gradcheck_through_the_predicting_views():
    # Views past the assignment views never produce codes, so the loss is smooth in them.
    assignment, *predicting = prototype_scores(6, num_views=3, batch=3, num_prototypes=3)
    predicting = [s.requires_grad_() for s in predicting]
    assert torch.autograd.gradcheck(lambda *p: swav_loss([assignment, *p], num_assignment_views=1), predicting)


def test_module_matches_the_function():
    scores = [s.float() for s in prototype_scores(7, num_views=3)]
    torch.testing.assert_close(SwAVLoss(temperature=0.2, epsilon=0.1, sinkhorn_iterations=5)(scores),
                               swav_loss(scores, temperature=0.2, epsilon=0.1, sinkhorn_iterations=5))


def test_bf16_scores_are_computed_in_float32():
    scores = [s.bfloat16() for s in prototype_scores(8)]
    loss = swav_loss(scores)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, swav_loss([s.float() for s in scores]))


def _distributed_worker(rank, world, scores, expected):
    shard = slice(rank * scores.shape[0] // world, (rank + 1) * scores.shape[0] // world)
    torch.testing.assert_close(sinkhorn_knopp(scores[shard]), expected[shard], rtol=1e-12, atol=1e-15)


def test_sinkhorn_spans_all_processes(tmp_path):
    scores = prototype_scores(9, batch=8)[0]
    run_in_process_group(tmp_path, _distributed_worker, scores, sinkhorn_knopp(scores))


def test_bad_inputs_are_refused():
    two = [torch.randn(4, 3), torch.randn(4, 3)]
    with pytest.raises(InputError, match="at least 2 views"):
        swav_loss(two[:1], num_assignment_views=1)
    with pytest.raises(InputError, match="num_assignment_views=3 but only 2 views"):
        swav_loss(two, num_assignment_views=3)
    with pytest.raises(InputError, match="same shape"):
        swav_loss([torch.randn(4, 3), torch.randn(4, 5)])
    with pytest.raises(InputError, match=r"scores must have shape \(batch, num_prototypes\)"):
        sinkhorn_knopp(torch.randn(4))
    bad = torch.randn(4, 3)
    bad[0, 0] = float("inf")
    with pytest.raises(InputError, match=r"scores\[1\] holds 1 NaN/inf"):
        swav_loss([torch.randn(4, 3), bad])


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        SwAVLoss(temperature=0.0)
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        sinkhorn_knopp(torch.randn(4, 3), epsilon=-0.05)
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        sinkhorn_knopp(torch.randn(4, 3), iterations=0)
    with pytest.raises(ConfigError, match="sinkhorn_iterations must be >= 1"):
        SwAVLoss(sinkhorn_iterations=0)
    with pytest.raises(ConfigError, match="num_assignment_views must be >= 1"):
        SwAVLoss(num_assignment_views=0)
