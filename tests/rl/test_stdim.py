"""ST-DIM's loss against a float64 reference written with loops here (contrastkit.losses.stdim)."""

import math

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.stdim import STDIMLoss, stdim_loss, stdim_loss_terms
from contrastkit.models.atari import AtariEncoder


def _info_nce(scores):
    """-1/N sum_i log softmax_j(scores[i][j])[i] for an N x N list of lists."""
    total = 0.0
    for i, row in enumerate(scores):
        top = max(row)
        total += -(row[i] - top) + math.log(sum(math.exp(s - top) for s in row))
    return total / len(scores)


def _reference(g, la, lp, wg, wl, bg, bl):
    """Both terms cell by cell, element by element, in float64 Python floats."""
    g, la, lp, wg, wl = (t.detach().double().tolist() for t in (g, la, lp, wg, wl))
    bg = [0.0] * len(wg) if bg is None else bg.detach().double().tolist()
    bl = [0.0] * len(wl) if bl is None else bl.detach().double().tolist()
    n, c, h, w = len(la), len(la[0]), len(la[0][0]), len(la[0][0][0])
    d = len(g[0])
    pred_g = [[sum(wg[q][p] * g[i][p] for p in range(d)) + bg[q] for q in range(c)] for i in range(n)]
    global_local = local_local = 0.0
    for y in range(h):
        for x in range(w):
            positive = [[lp[j][q][y][x] for q in range(c)] for j in range(n)]
            anchor = [[la[i][q][y][x] for q in range(c)] for i in range(n)]
            pred_l = [[sum(wl[q][p] * anchor[i][p] for p in range(c)) + bl[q] for q in range(c)] for i in range(n)]
            global_local += _info_nce([[sum(pred_g[i][q] * positive[j][q] for q in range(c)) for j in range(n)]
                                       for i in range(n)])
            local_local += _info_nce([[sum(pred_l[i][q] * positive[j][q] for q in range(c)) for j in range(n)]
                                      for i in range(n)])
    return global_local / (h * w), local_local / (h * w)


def _inputs(n=5, d=6, c=4, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g), torch.randn(n, c, h, w, generator=g), torch.randn(n, c, h, w, generator=g),
            torch.randn(c, d, generator=g) * 0.5, torch.randn(c, c, generator=g) * 0.5, torch.randn(c, generator=g),
            torch.randn(c, generator=g))


@pytest.mark.parametrize("with_bias", [True, False])
def test_terms_match_float64_reference(with_bias):
    g, la, lp, wg, wl, bg, bl = _inputs()
    if not with_bias:
        bg = bl = None
    expected = _reference(g, la, lp, wg, wl, bg, bl)
    got = stdim_loss_terms(g.double(), la.double(), lp.double(), wg.double(), wl.double(),
                           None if bg is None else bg.double(), None if bl is None else bl.double())
    assert got[0].dtype == torch.float64
    assert got[0].item() == pytest.approx(expected[0], rel=1e-10)
    assert got[1].item() == pytest.approx(expected[1], rel=1e-10)
    # float32 inputs: the same value to float32 precision, and the loss is the sum of the terms.
    loss = stdim_loss(g, la, lp, wg, wl, bg, bl)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(sum(expected), rel=1e-5)


def test_module_holds_heads_and_matches_function():
    g, la, lp, *_ = _inputs(d=6, c=4)
    module = STDIMLoss(global_dim=6, local_dim=4)
    expected = stdim_loss(g, la, lp, module.global_head.weight, module.local_head.weight, module.global_head.bias,
                          module.local_head.bias)
    assert module(g, la, lp).item() == pytest.approx(expected.item(), rel=1e-6)
    assert sum(t.item() for t in module.terms(g, la, lp)) == pytest.approx(expected.item(), rel=1e-6)


def test_matching_pairs_score_lower_than_shuffled():
    # Positives equal to the anchors' maps: with identity heads the diagonal dominates.
    g, la, _, *_ = _inputs(n=8, d=4, c=4, seed=1)
    eye = torch.eye(4)
    aligned = stdim_loss(la.mean((2, 3)) * 0 + g, la * 3, la * 3, eye, eye)
    shuffled = stdim_loss(g, la * 3, (la * 3)[torch.randperm(8)], eye, eye)
    assert aligned < shuffled


def test_gradient_reaches_encoder_and_heads():
    torch.manual_seed(0)
    encoder = AtariEncoder()
    loss_fn = STDIMLoss(encoder.feature_dim, encoder.local_dim)
    frames = torch.randint(0, 256, (3, 1, 210, 160), dtype=torch.uint8)
    later = torch.randint(0, 256, (3, 1, 210, 160), dtype=torch.uint8)
    global_t, local_t = encoder.forward_maps(frames)
    _, local_later = encoder.forward_maps(later)
    loss_fn(global_t, local_t, local_later).backward()
    for name, param in [*encoder.named_parameters(), *loss_fn.named_parameters()]:
        assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_encoder_shapes_and_input_checks():
    encoder = AtariEncoder()
    frames = torch.randint(0, 256, (2, 1, 210, 160), dtype=torch.uint8)
    features, local = encoder.forward_maps(frames)
    assert features.shape == (2, 256) and local.shape == (2, 128, 11, 8)
    assert torch.allclose(encoder(frames), encoder(frames.float() / 255), atol=1e-5)
    with pytest.raises(InputError, match="210, 160"):
        encoder(torch.zeros(2, 1, 84, 84))
    with pytest.raises(InputError, match="uint8"):
        encoder(torch.zeros(2, 1, 210, 160, dtype=torch.int32))
    with pytest.raises(ConfigError, match="feature_dim"):
        AtariEncoder(feature_dim=0)


def test_clear_errors_for_bad_input():
    g, la, lp, wg, wl, bg, bl = _inputs()
    with pytest.raises(InputError, match="at least 2"):
        stdim_loss(g[:1], la[:1], lp[:1], wg, wl)
    with pytest.raises(InputError, match="same shape"):
        stdim_loss(g, la, lp[:, :, :1], wg, wl)
    with pytest.raises(InputError, match="rows"):
        stdim_loss(g[:3], la, lp, wg, wl)
    with pytest.raises(InputError, match="global_weight"):
        stdim_loss(g, la, lp, wg.T, wl)
    with pytest.raises(InputError, match="bias"):
        stdim_loss(g, la, lp, wg, wl, bg[:2], bl)
    with pytest.raises(InputError, match="floating"):
        stdim_loss(g, la.long(), lp, wg, wl)
    with pytest.raises(InputError, match="NaN"):
        stdim_loss(g, la, lp.clone().fill_(float("nan")), wg, wl)
    with pytest.raises(ConfigError, match="local_dim"):
        STDIMLoss(local_dim=0)


def test_module_validate_per_call_overrides_its_setting():
    torch.manual_seed(0)
    loss_fn = STDIMLoss(16, 8)  # validates by default
    g, la = torch.randn(4, 16), torch.randn(4, 8, 3, 2)
    lp = torch.full((4, 8, 3, 2), float("nan"))
    with pytest.raises(InputError, match="local_positive"):
        loss_fn(g, la, lp)
    assert math.isnan(loss_fn(g, la, lp, validate=False).item())  # the trainer's fast path skips the sync
    quiet = STDIMLoss(16, 8, validate=False)
    with pytest.raises(InputError, match="local_positive"):
        quiet.terms(g, la, lp, validate=True)
