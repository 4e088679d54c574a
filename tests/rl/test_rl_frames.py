"""Invariants of the frame-stack shifts and crops (contrastkit.augment.frames)."""

import pytest
import torch
import torch.nn.functional as F

from contrastkit.augment.frames import RandomCrop, RandomShift, center_crop, crop_at
from contrastkit.errors import ConfigError, InputError


def _frames(dtype=torch.uint8, n=6, c=9, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shift_zero_is_identity(dtype):
    frames = _frames(dtype)
    assert RandomShift(pad=0)(frames, torch.Generator().manual_seed(1)).equal(frames)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_shift_keeps_shape_and_dtype(dtype):
    frames = _frames(dtype)
    out = RandomShift(pad=4)(frames, torch.Generator().manual_seed(1))
    assert out.shape == frames.shape and out.dtype == dtype


def test_shift_equals_replicate_pad_then_crop():
    """The reference definition (DrQ): pad with the border, crop (H, W) at top + pad, left + pad."""
    frames, pad = _frames(torch.float32), 3
    shift = RandomShift(pad=pad)
    params = shift.sample_params(frames, torch.Generator().manual_seed(2))
    out = shift.apply(frames, params)
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    h, w = frames.shape[2:]
    for i in range(frames.shape[0]):
        top, left = int(params["top"][i]) + pad, int(params["left"][i]) + pad
        assert out[i].equal(padded[i, :, top:top + h, left:left + w])
    assert params["top"].abs().max() <= pad and params["left"].abs().max() <= pad


def test_every_shifted_pixel_comes_from_within_pad():
    """Distinct pixel values (their flat index) reveal where each output pixel was read from."""
    n, c, h, w, pad = 5, 3, 12, 10, 2
    index = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w).expand(n, c, h, w).contiguous()
    out = RandomShift(pad=pad)(index, torch.Generator().manual_seed(3))
    src_row, src_col = out.long() // w, out.long() % w
    rows = torch.arange(h).view(1, 1, h, 1)
    cols = torch.arange(w).view(1, 1, 1, w)
    assert (src_row - rows).abs().max() <= pad and (src_col - cols).abs().max() <= pad
    # One shift per sample: every channel of a stack moves together.
    assert out.equal(out[:, :1].expand_as(out))


def test_same_seed_same_views_and_samples_differ():
    frames = _frames()
    shift = RandomShift(pad=4)
    a = shift(frames, torch.Generator().manual_seed(7))
    b = shift(frames, torch.Generator().manual_seed(7))
    assert a.equal(b)
    params = shift.sample_params(frames, torch.Generator().manual_seed(7))
    assert len(set(zip(params["top"].tolist(), params["left"].tolist()))) > 1


def test_crop_is_a_window_of_the_input():
    frames = _frames(torch.uint8, h=30, w=28)
    crop = RandomCrop((20, 16))
    params = crop.sample_params(frames, torch.Generator().manual_seed(4))
    out = crop.apply(frames, params)
    assert out.shape == (6, 9, 20, 16) and out.dtype == torch.uint8
    for i in range(frames.shape[0]):
        top, left = int(params["top"][i]), int(params["left"][i])
        assert 0 <= top <= 10 and 0 <= left <= 12
        assert out[i].equal(frames[i, :, top:top + 20, left:left + 16])
    assert crop(frames, torch.Generator().manual_seed(4)).equal(out)


def test_full_size_crop_and_center_crop():
    frames = _frames(torch.float32)
    assert RandomCrop(frames.shape[2:])(frames).equal(frames)
    assert center_crop(frames, (10, 12)).equal(frames[:, :, 5:15, 6:18])


def test_crop_at_replicates_the_border():
    frames = torch.arange(12.0).view(1, 1, 3, 4)
    out = crop_at(frames, torch.tensor([1]), torch.tensor([-2]), 3, 2)
    assert out.equal(torch.tensor([[[[4.0, 4.0], [8.0, 8.0], [8.0, 8.0]]]]))


def test_refusals():
    with pytest.raises(ConfigError, match="pad"):
        RandomShift(pad=-1)
    with pytest.raises(ConfigError, match="size"):
        RandomCrop(0)
    with pytest.raises(InputError, match="does not fit"):
        RandomCrop(40)(_frames())
    with pytest.raises(InputError, match="shape"):
        RandomShift()(torch.zeros(3, 8, 8))
    with pytest.raises(InputError, match="dtype"):
        RandomShift()(torch.zeros(2, 3, 8, 8, dtype=torch.int64))


@pytest.mark.parametrize("size", [2.5, (3,), (4, True), None])
def test_bad_sizes_are_config_errors(size):
    with pytest.raises(ConfigError, match="size"):
        RandomCrop(size)
