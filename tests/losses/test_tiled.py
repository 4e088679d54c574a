import math

import pytest
import torch

from contrastkit.errors import ConfigError
from contrastkit.losses import CLIPLoss, InfoNCELoss, clip_loss, info_nce, tiled
from contrastkit.losses.tiled import _Pairs, _TiledCrossEntropy, tiled_clip_loss, tiled_info_nce

from loss_helpers import assert_averaged_over_processes_equal, run_in_process_group


def float64_views(seed, num_views=2, n=6, d=5, requires_grad=True):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=generator, dtype=torch.float64).requires_grad_(requires_grad)
            for _ in range(num_views)]


def assert_same_loss_and_gradients(expected, actual, inputs):
    """Values to 1e-12 relative, gradients w.r.t. every input that requires one to 1e-10."""
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0.0)
    differentiable = [tensor for tensor in inputs if tensor.requires_grad]
    for expected_grad, actual_grad in zip(torch.autograd.grad(expected, differentiable),
                                          torch.autograd.grad(actual, differentiable)):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("num_views", [2, 3, 4])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matches_plain_info_nce(num_views, temperature, similarity):
    views = float64_views(num_views * 10 + int(temperature * 100), num_views, n=7)
    expected = info_nce(*views, temperature=temperature, similarity=similarity, tiled=False)
    actual = tiled_info_nce(*views, temperature=temperature, similarity=similarity, tile_size=4)
    assert_same_loss_and_gradients(expected, actual, views)


@pytest.mark.parametrize("num_views, n", [(2, 37), (3, 13)])  # M = 74 and 39 rows
@pytest.mark.parametrize("tile_size", [1, 8, 37, 100])
def test_uneven_tiles(num_views, n, tile_size):
    views = float64_views(n, num_views, n=n, d=4)
    expected = info_nce(*views, temperature=0.2, tiled=False)
    actual = tiled_info_nce(*views, temperature=0.2, tile_size=tile_size)
    assert_same_loss_and_gradients(expected, actual, views)


@pytest.mark.parametrize("negatives_require_grad", [False, True])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_extra_negatives(negatives_require_grad, similarity):
    views = float64_views(3, num_views=3, n=5)
    negatives = float64_views(4, num_views=1, n=11, requires_grad=negatives_require_grad)[0]
    expected = info_nce(*views, temperature=0.3, similarity=similarity, negatives=negatives, tiled=False)
    actual = tiled_info_nce(*views, temperature=0.3, similarity=similarity, negatives=negatives, tile_size=4)
    assert_same_loss_and_gradients(expected, actual, [*views, negatives])


def test_gradcheck_of_the_tiled_function():
    generator = torch.Generator().manual_seed(5)
    anchors = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    columns = torch.randn(9, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    # InfoNCE's layout: anchors are columns 2..7, self-pairs dropped, positives 3 rows away either
    # way (two views of 3), tiles of 2 that split the diagonals.
    info_nce_pairs = _Pairs(block_start=2, exclude_self=True, positive_shifts=(3, -3), positives_per_anchor=1)
    assert torch.autograd.gradcheck(lambda a, c, s: _TiledCrossEntropy.apply(a, c, s, info_nce_pairs, 2, False),
                                    (anchors, columns, scale))
    # CLIP's layout, both directions, tiles of 4 (uneven against 6).
    clip_pairs = _Pairs(block_start=0, exclude_self=False, positive_shifts=(0,), positives_per_anchor=1)
    assert torch.autograd.gradcheck(lambda a, c, s: _TiledCrossEntropy.apply(a, c, s, clip_pairs, 4, True),
                                    (anchors, columns[:6], scale))


@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), math.log(100.0)])
@pytest.mark.parametrize("tile_size", [1, 4, 64])
def test_clip_matches_plain_clip_loss_including_the_scale_gradient(logit_scale, tile_size):
    images, noise = float64_views(int(logit_scale * 10), n=9)
    texts = images.detach() + noise
    scale = torch.tensor(logit_scale, dtype=torch.float64, requires_grad=True)
    expected = clip_loss(images, texts, scale, tiled=False)
    actual = tiled_clip_loss(images, texts, scale, tile_size=tile_size)
    assert_same_loss_and_gradients(expected, actual, [images, noise, scale])


def test_clip_module_clamps_before_the_tiled_loss():
    images, texts = float64_views(6, n=5)
    loss_fn = CLIPLoss(max_scale=100.0, tiled=True).double()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(500.0))
    loss = loss_fn(images, texts)
    loss.backward()
    torch.testing.assert_close(loss, clip_loss(images, texts, torch.tensor(math.log(100.0), dtype=torch.float64)))
    assert loss_fn.logit_scale.grad == 0


class _Spy:
    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


def test_automatic_choice_follows_the_threshold(monkeypatch):
    info_nce_spy = _Spy(tiled._info_nce_from_rows)
    clip_spy = _Spy(tiled._clip_from_normalised)
    monkeypatch.setattr(tiled, "_info_nce_from_rows", info_nce_spy)
    monkeypatch.setattr(tiled, "_clip_from_normalised", clip_spy)
    views = float64_views(7, n=4)  # InfoNCE: 8 x 8 logits, CLIP: 4 x 4
    scale = torch.tensor(2.0, dtype=torch.float64)
    monkeypatch.setattr(tiled, "AUTO_TILED_LOGITS", 64)  # tiled only above it
    plain = info_nce(*views), clip_loss(*views, scale)
    assert (info_nce_spy.calls, clip_spy.calls) == (0, 0)
    monkeypatch.setattr(tiled, "AUTO_TILED_LOGITS", 15)
    automatic = info_nce(*views), clip_loss(*views, scale)
    assert (info_nce_spy.calls, clip_spy.calls) == (1, 1)
    info_nce(*views, tiled=False), clip_loss(*views, scale, tiled=False)
    assert (info_nce_spy.calls, clip_spy.calls) == (1, 1)
    monkeypatch.setattr(tiled, "AUTO_TILED_LOGITS", 10**9)
    forced = InfoNCELoss(tiled=True)(*views), CLIPLoss(init_temperature=1 / math.exp(2.0), tiled=True)(*views)
    assert (info_nce_spy.calls, clip_spy.calls) == (2, 2)
    for expected, actual in zip(plain, automatic):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0.0)
    for expected, actual in zip(plain, forced):
        torch.testing.assert_close(actual.double(), expected, rtol=1e-6, atol=0.0)


def test_bf16_autocast_still_computes_in_float32():
    generator = torch.Generator().manual_seed(8)
    views = [torch.randn(40, 32, generator=generator) for _ in range(2)]
    scale = torch.tensor(math.log(1 / 0.07))
    expected = tiled_info_nce(*views, temperature=0.1, tile_size=16), tiled_clip_loss(*views, scale, tile_size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = tiled_info_nce(*views, temperature=0.1, tile_size=16), tiled_clip_loss(*views, scale, tile_size=16)
    for expected_loss, loss in zip(expected, actual):
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0.0)


def test_bf16_inputs_are_computed_in_float32():
    views = [view.detach().bfloat16() for view in float64_views(9, n=6)]
    loss = tiled_info_nce(*views, tile_size=5)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(*(view.float() for view in views)))


def _saved_tensor_sizes(loss_fn):
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn()
    return sizes


def test_forward_saves_nothing_larger_than_the_inputs_or_a_tile():
    generator = torch.Generator().manual_seed(10)
    num_rows, dim, tile_size = 512, 8, 16
    views = [torch.randn(num_rows // 2, dim, generator=generator, requires_grad=True) for _ in range(2)]
    tiled_sizes = _saved_tensor_sizes(lambda: tiled_info_nce(*views, tile_size=tile_size))
    plain_sizes = _saved_tensor_sizes(lambda: info_nce(*views, tiled=False))
    assert max(tiled_sizes) <= max(num_rows * dim, tile_size ** 2)
    assert max(plain_sizes) >= num_rows ** 2  # the hook does see the matrix the plain path keeps


def test_gather_in_a_single_process_changes_nothing():
    views = float64_views(11, n=5)
    for gathered in (info_nce(*views, tiled=False, gather_across_processes=True),
                     tiled_info_nce(*views, tile_size=3, gather_across_processes=True)):
        assert_same_loss_and_gradients(info_nce(*views, tiled=False), gathered, views)


def test_bad_tile_size_is_refused():
    with pytest.raises(ConfigError, match="tile_size must be a positive int"):
        tiled_info_nce(torch.randn(4, 8), torch.randn(4, 8), tile_size=0)
    with pytest.raises(ConfigError, match="tile_size must be a positive int"):
        tiled_clip_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor(1.0), tile_size=2.5)


LOSSES = {
    "plain": lambda a, b: info_nce(a, b, temperature=0.3, tiled=False, gather_across_processes=True),
    "tiled": lambda a, b: tiled_info_nce(a, b, temperature=0.3, tile_size=3, gather_across_processes=True),
}


def _projection(weight, bias):
    projection = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    return projection


def _distributed_worker(rank, world, inputs_a, inputs_b, weight, bias, expected):
    shard = slice(rank * inputs_a.shape[0] // world, (rank + 1) * inputs_a.shape[0] // world)
    for name, loss_fn in LOSSES.items():
        projection = _projection(weight, bias)
        loss = loss_fn(projection(inputs_a[shard]), projection(inputs_b[shard]))
        loss.backward()
        assert_averaged_over_processes_equal([loss.detach(), projection.weight.grad, projection.bias.grad],
                                             expected, world, rtol=1e-12, atol=1e-12, msg=name)


def test_gathered_loss_and_averaged_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    generator = torch.Generator().manual_seed(12)
    inputs_a, inputs_b = (torch.randn(8, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    weight, bias = torch.randn(4, 6, generator=generator, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    projection = _projection(weight, bias)
    loss = info_nce(projection(inputs_a), projection(inputs_b), temperature=0.3, tiled=False)
    expected = [loss.detach(), *torch.autograd.grad(loss, [projection.weight, projection.bias])]
    run_in_process_group(tmp_path, _distributed_worker, inputs_a, inputs_b, weight, bias, expected)
