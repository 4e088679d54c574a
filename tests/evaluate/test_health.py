import math

import numpy as np
import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import (alignment, collapse_state, embedding_std, health_metrics,
                                  positive_negative_gap, rankme, rankme_fraction, uniformity)

N, D = 48, 32


def unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def reference_std(z):
    return unit(z).std(axis=0, ddof=1).mean()


def reference_rankme(z, eps=1e-7):
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def reference_alignment(a, b, alpha):
    a, b = unit(a), unit(b)
    return np.mean([np.linalg.norm(a[i] - b[i]) ** alpha for i in range(len(a))])


def reference_uniformity(z, t):
    z = unit(z)
    terms = [np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(len(z)) for j in range(i + 1, len(z))]
    return math.log(np.mean(terms))


def reference_gap(a, b):
    a, b = unit(a), unit(b)
    positives = [a[i] @ b[i] for i in range(len(a))]
    negatives = [a[i] @ b[j] for i in range(len(a)) for j in range(len(b)) if i != j]
    return np.mean(positives) - np.mean(negatives)


@pytest.fixture
def pair():
    gen = torch.Generator().manual_seed(0)
    z_a = torch.randn(N, D, generator=gen, dtype=torch.float64)
    z_b = z_a + 0.5 * torch.randn(N, D, generator=gen, dtype=torch.float64) + 0.3  # shared offset: gap != alignment
    return z_a, z_b


def check_scalar(value, want, rel=1e-5, abs=1e-6):
    assert value.shape == () and value.dtype == torch.float32
    assert float(value) == pytest.approx(want, rel=rel, abs=abs)


def test_embedding_std_matches_numpy(pair):
    z_a, _ = pair
    check_scalar(embedding_std(z_a), reference_std(z_a.numpy()))
    # reference values: ~1/sqrt(D) for spread rows, 0 for identical ones
    assert float(embedding_std(torch.randn(2000, 64))) * 8 == pytest.approx(1, abs=0.02)
    assert float(embedding_std(torch.ones(5, 64) * 3)) == 0


@pytest.mark.parametrize("k", [1, 3, 8])
def test_rankme_of_exact_rank_k(k):
    gen = torch.Generator().manual_seed(k)
    low = torch.randn(N, k, generator=gen, dtype=torch.float64) @ torch.randn(k, D, generator=gen, dtype=torch.float64)
    value = float(rankme(low))
    assert 1 - 1e-4 <= value <= k + 1e-3  # unequal singular values: at most k
    assert value == pytest.approx(reference_rankme(low.numpy()), rel=1e-3)
    # k equal singular values: exactly k (rows +-e_i of an orthonormal basis)
    basis = torch.linalg.qr(torch.randn(D, k, generator=gen, dtype=torch.float64)).Q.T
    equal = torch.cat([basis, -basis, 2 * basis]).float()
    assert float(rankme(equal)) == pytest.approx(k, rel=1e-3)
    assert float(rankme_fraction(equal)) == pytest.approx(k / min(equal.shape), rel=1e-3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_rankme_of_diverged_embeddings_is_nan_not_an_error(bad):
    # A loss that overflowed leaves non-finite embeddings, on which torch's SVD raises: the
    # metric reads NaN instead, which the collapse monitor leaves unjudged.
    z = torch.randn(16, 8)
    z[3, 2] = bad
    assert math.isnan(float(rankme(z))) and math.isnan(float(rankme_fraction(z)))
    assert float(rankme(torch.nan_to_num(z, posinf=0.0))) > 1


def test_rankme_matches_numpy_and_is_bounded_by_batch(pair):
    z_a, _ = pair
    check_scalar(rankme(z_a), reference_rankme(z_a.numpy()), rel=1e-4)
    wide = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))  # N <= D: bounded by N, not D
    assert 6 < float(rankme(wide)) <= 8
    check_scalar(rankme_fraction(wide), float(rankme(wide)) / 8, rel=1e-6)
    assert float(rankme(torch.zeros(4, 3))) == pytest.approx(1, abs=1e-4)  # no 0/0


@pytest.mark.parametrize("alpha", [2, 1, 0.5])
def test_alignment_matches_numpy_loop(pair, alpha):
    z_a, z_b = pair
    check_scalar(alignment(z_a, z_b, alpha=alpha), reference_alignment(z_a.numpy(), z_b.numpy(), alpha))


@pytest.mark.parametrize("t", [2, 0.5, 50])
def test_uniformity_matches_numpy_loop(pair, t):
    z_a, _ = pair
    check_scalar(uniformity(z_a, t=t), reference_uniformity(z_a.numpy(), t), rel=1e-5, abs=1e-5)
    assert float(uniformity(torch.ones(6, 4), t=t)) == pytest.approx(0, abs=1e-6)


def test_gap_matches_numpy(pair):
    z_a, z_b = pair
    check_scalar(positive_negative_gap(z_a, z_b), reference_gap(z_a.numpy(), z_b.numpy()))


def test_health_metrics_uses_view_zero_and_pairs_zero_one(pair):
    z_a, z_b = pair
    third = torch.randn(N, D, dtype=torch.float64)  # checked, not used
    got = health_metrics([z_a, z_b, third])
    assert sorted(got) == sorted(["embedding_std", "rankme", "rankme_fraction", "alignment", "uniformity",
                                  "positive_negative_gap"])
    a, b = z_a.numpy(), z_b.numpy()
    want = {"embedding_std": reference_std(a), "rankme": reference_rankme(a),
            "rankme_fraction": reference_rankme(a) / min(N, D), "alignment": reference_alignment(a, b, 2),
            "uniformity": reference_uniformity(a, 2), "positive_negative_gap": reference_gap(a, b)}
    for key, value in got.items():
        check_scalar(value, want[key], rel=1e-4, abs=1e-5)
    assert sorted(health_metrics([z_a, z_b], include_rankme=False)) == sorted(set(want) - {"rankme", "rankme_fraction"})


def test_bfloat16_and_float16_are_upcast(pair):
    z_a, z_b = (z.float() for z in pair)
    want = health_metrics([z_a, z_b])
    for dtype in (torch.bfloat16, torch.float16):
        got = health_metrics([z_a.to(dtype), z_b.to(dtype)])
        for key in want:
            assert got[key].dtype == torch.float32
            # bfloat16 rounds each input to 3 significant digits; the metric then moves by about as much
            assert float(got[key]) == pytest.approx(float(want[key]), rel=2e-2, abs=5e-3), key


def test_autocast_does_not_lower_the_precision(pair):
    z_a, z_b = (z.float() for z in pair)
    want = health_metrics([z_a, z_b])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = health_metrics([z_a, z_b])
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-6), key


def test_single_metrics_stay_differentiable(pair):
    z_a, z_b = (z.float().requires_grad_() for z in pair)
    (alignment(z_a, z_b) + uniformity(z_a)).backward()
    assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()
    assert not any(v.requires_grad for v in health_metrics([z_a, z_b]).values())  # monitoring: detached


@pytest.mark.parametrize("call, match", [
    (lambda: embedding_std(torch.randn(8)), r"shape \(N, D\).*flatten"),
    (lambda: rankme(torch.randn(2, 3, 4)), r"shape \(N, D\)"),
    (lambda: uniformity(torch.randn(1, 4)), r"at least 2"),
    (lambda: embedding_std(torch.ones(4, 3, dtype=torch.long)), r"\.float\(\)"),
    (lambda: embedding_std([[1.0, 2.0]]), r"torch.Tensor"),
    (lambda: alignment(torch.randn(4, 3), torch.randn(5, 3)), r"same shape"),
    (lambda: positive_negative_gap(torch.randn(4, 3), torch.randn(4, 2)), r"same shape"),
    (lambda: alignment(torch.randn(4, 3), torch.randn(4, 3), alpha=0), r"alpha.*> 0"),
    (lambda: uniformity(torch.randn(4, 3), t=-1), r"t must"),
    (lambda: rankme(torch.randn(4, 3), eps=0), r"eps"),
    (lambda: health_metrics([torch.randn(4, 3)]), r"at least 2 views"),
    (lambda: health_metrics(torch.randn(2, 4, 3)), r"list or tuple"),
    (lambda: health_metrics([torch.randn(4, 3), torch.randn(4, 3), torch.randn(3, 3)]), r"views\[2\]"),
    (lambda: collapse_state({"alignment": 0.1}, dim=8), r"embedding_std' or 'rankme'"),
    (lambda: collapse_state({"embedding_std": 0.1}, dim=0), r"dim"),
    (lambda: collapse_state({"embedding_std": float("nan")}, dim=8), r"NaN"),
])
def test_bad_input_raises_config_error(call, match):
    with pytest.raises(ContrastkitError, match=match):
        call()


def test_fullgraph_compile_matches_eager(pair):
    z_a, z_b = (z.float() for z in pair)
    torch._dynamo.reset()
    compiled = torch.compile(health_metrics, fullgraph=True, backend="aot_eager")
    got, want = compiled([z_a, z_b]), health_metrics([z_a, z_b])
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-6), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda(pair):
    z_a, z_b = (z.float().cuda() for z in pair)
    health_metrics([z_a, z_b])  # warm-up: first calls may allocate or load kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = health_metrics([z_a, z_b], include_rankme=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device == z_a.device and v.shape == () for v in got.values())


def synthetic_cases():
    gen = torch.Generator().manual_seed(0)
    n, d = 256, 128
    row = torch.randn(1, d, generator=gen)
    rank2 = torch.randn(n, 2, generator=gen) @ torch.randn(2, d, generator=gen)
    return d, {
        "gaussian": torch.randn(n, d, generator=gen),
        "collapsed": row + 1e-3 * torch.randn(n, d, generator=gen),
        "collapsed, noisier": row + 1e-2 * torch.randn(n, d, generator=gen),  # rankme 2.3: the std catches it
        "rank 2 of 128": rank2,
    }


def test_collapse_state_on_synthetic_cases():
    d, cases = synthetic_cases()
    states = {name: collapse_state({k: float(v) for k, v in health_metrics([z, z]).items()}, dim=d)
              for name, z in cases.items()}
    assert states == {"gaussian": "healthy", "collapsed": "collapsed", "collapsed, noisier": "collapsed",
                      "rank 2 of 128": "collapsing"}
    # each rule alone
    assert collapse_state({"embedding_std": 0.5 / math.sqrt(d)}, dim=d) == "healthy"
    assert collapse_state({"embedding_std": 0.2 / math.sqrt(d)}, dim=d) == "collapsing"
    assert collapse_state({"embedding_std": 0.05 / math.sqrt(d)}, dim=d) == "collapsed"
    assert collapse_state({"rankme": 1.2}, dim=d) == "collapsed"
    assert collapse_state({"rankme": 3.0, "rankme_fraction": 0.02}, dim=d) == "collapsing"
    assert collapse_state({"embedding_std": torch.tensor(0.09), "rankme": 40.0, "rankme_fraction": 0.3},
                          dim=d) == "healthy"
