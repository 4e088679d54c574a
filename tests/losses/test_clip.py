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
    image_to_text = [-np.log(np.exp(scale * x[i] @ y[i]) / sum(np.exp(scale * x[i] @ y[j]) for j in range(n)))
                     for i in range(n)]
    text_to_image = [-np.log(np.exp(scale * y[i] @ x[i]) / sum(np.exp(scale * y[i] @ x[j]) for j in range(n)))
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
