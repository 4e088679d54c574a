import math

import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses.clip import CLIPLoss, clip_loss


def reference_clip(image_features, text_features, logit_scale):
    """Independent float64 CLIP loss from the paper: loops over images and over texts."""
    x, y = (f.detach().numpy().astype(np.float64) for f in (image_features, text_features))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    scale = np.exp(float(logit_scale))
    n = x.shape[0]
    # -log(exp(l_ii) / sum_j exp(l_ij)) as logsumexp_j(l_ij) - l_ii: exp(1000 * cos) overflows float64.
    image_to_text = [np.logaddexp.reduce([scale * x[i] @ y[j] for j in range(n)]) - scale * x[i] @ y[i]
                     for i in range(n)]
    text_to_image = [np.logaddexp.reduce([scale * y[i] @ x[j] for j in range(n)]) - scale * y[i] @ x[i]
                     for i in range(n)]
    return (np.mean(image_to_text) + np.mean(text_to_image)) / 2


def pairs(seed, n=6, d=5, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, d, generator=generator, dtype=dtype)
    return images, images + torch.randn(n, d, generator=generator, dtype=dtype)


@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), math.log(100.0)])
def test_matches_float64_reference(logit_scale):
    images, texts = pairs(int(logit_scale * 10))
    scale = torch.tensor(logit_scale, dtype=torch.float64)
    assert clip_loss(images, texts, scale).item() == pytest.approx(reference_clip(images, texts, scale), rel=1e-10)


def test_gradcheck_includes_the_logit_scale():
    images, texts = (f.requires_grad_() for f in pairs(1, n=4, d=3))
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_loss, (images, texts, scale))


def test_module_initialises_and_clamps_the_log_scale():
    loss_fn = CLIPLoss(init_temperature=0.07, max_scale=100.0).double()
    assert isinstance(loss_fn.logit_scale, torch.nn.Parameter)
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-7)
    images, texts = pairs(2)
    loss_fn(images, texts).backward()
    assert loss_fn.logit_scale.grad != 0
    # Above the cap the scale is clamped to 100 and the parameter gets no gradient.
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(500.0))
    loss_fn.logit_scale.grad = None
    loss = loss_fn(images, texts)
    loss.backward()
    assert loss.item() == pytest.approx(reference_clip(images, texts, math.log(100.0)), rel=1e-10)
    assert loss_fn.logit_scale.grad == 0


def test_fixed_scale_is_a_buffer():
    loss_fn = CLIPLoss(init_temperature=0.1, learnable=False)
    assert list(loss_fn.parameters()) == [] and "logit_scale" in dict(loss_fn.named_buffers())
    images, texts = pairs(3, dtype=torch.float32)
    torch.testing.assert_close(loss_fn(images, texts), clip_loss(images, texts, torch.tensor(math.log(10.0))))


def test_autocast_does_not_lower_the_precision():
    images, texts = pairs(4, n=16, d=32, dtype=torch.float32)
    scale = torch.tensor(math.log(1 / 0.07))
    expected = clip_loss(images, texts, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = clip_loss(images, texts, scale)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_bad_inputs_are_refused():
    scale = torch.tensor(2.0)
    with pytest.raises(InputError, match="same shape"):
        clip_loss(torch.randn(4, 8), torch.randn(4, 6), scale)
    with pytest.raises(InputError, match=r"logit_scale must have shape \(\)"):
        clip_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([2.0]))
    texts = torch.randn(4, 8)
    texts[2, 2] = float("nan")
    with pytest.raises(InputError, match="text_features holds 1 NaN"):
        clip_loss(torch.randn(4, 8), texts, scale)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="init_temperature must be > 0"):
        CLIPLoss(init_temperature=0.0)
    with pytest.raises(ConfigError, match="max_scale must be >= 1/init_temperature"):
        CLIPLoss(init_temperature=0.07, max_scale=10.0)


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("scale_not_its_log", [100.0, 1 / 0.07, 10.0])
def test_a_scale_given_where_its_log_belongs_is_refused_not_nan(scale_not_its_log, tiled):
    # Before: exp(100) is inf in float32 and the loss NaN, silently; 14.3 and 10 gave losses of
    # about 1e5 and 1e3, finite but meaningless.
    # open_clip's ClipLoss takes the scale itself, so users coming from it pass these values.
    images, texts = pairs(5, dtype=torch.float32)
    log_of_it = f"{math.log(scale_not_its_log):.4f}"
    expected = (rf"clip_loss got logit_scale = {scale_not_its_log:g}, .* logit_scale is the log of the scale .* "
                rf"pass math\.log\({scale_not_its_log:g}\) = {log_of_it}")
    with pytest.raises(InputError, match=expected):
        clip_loss(images, texts, torch.tensor(scale_not_its_log), tiled=tiled)


def test_the_largest_log_scale_taken_matches_float64_and_keeps_its_gradient():
    # log(1000) is the cap; float32 rounds it up by one ulp, which must still pass. Unrelated
    # pairs, so that at this scale the loss is large rather than 0.
    generator = torch.Generator().manual_seed(6)
    images, texts = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    scale = torch.tensor(math.log(1000.0), requires_grad=True)
    loss = clip_loss(images, texts, scale)
    loss.backward()
    assert loss.item() == pytest.approx(reference_clip(images, texts, scale.item()), rel=1e-5)
    scale64 = torch.tensor(math.log(1000.0), dtype=torch.float64, requires_grad=True)
    clip_loss(images.double(), texts.double(), scale64).backward()
    assert scale.grad.item() == pytest.approx(scale64.grad.item(), rel=1e-4) and scale.grad.item() != 0


def test_the_module_cap_is_at_most_the_largest_scale_the_loss_takes():
    with pytest.raises(ConfigError, match=r"max_scale must be <= 1000 \(temperature 0.001\), got 5000.0"):
        CLIPLoss(max_scale=5000.0)
    loss_fn = CLIPLoss(init_temperature=0.001, max_scale=1000.0)
    assert torch.isfinite(loss_fn(*pairs(7, dtype=torch.float32)))
