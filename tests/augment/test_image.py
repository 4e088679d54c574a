"""Behaviour of the batched augmentation ops (contrastkit.augment.image)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from contrastkit.augment import (
    BatchTransform,
    ColorJitter,
    Compose,
    Cutout,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomSolarize,
    to_float,
)
from contrastkit.errors import ConfigError, InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed), dtype=dtype)


# Every random op at p=1 (where it has p), with a constructor for each.
RANDOM_OPS = {
    "crop": lambda: RandomResizedCrop(12),
    "flip": lambda: RandomHorizontalFlip(p=1.0),
    "rotation": lambda: RandomRotation(30.0),
    "jitter": lambda: ColorJitter(p=1.0),
    "gray": lambda: RandomGrayscale(p=1.0),
    "blur": lambda: GaussianBlur(5, p=1.0),
    "solarize": lambda: RandomSolarize(p=1.0),
    "cutout": lambda: Cutout(p=1.0),
}
ALL_OPS = {**RANDOM_OPS, "normalize": lambda: Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])}


# ----------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name", sorted(ALL_OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device(name: str, dtype: torch.dtype) -> None:
    x = images(dtype=dtype)
    out = ALL_OPS[name]()(x, generator=gen())
    expected = (8, 3, 12, 12) if name == "crop" else tuple(x.shape)
    assert tuple(out.shape) == expected
    assert out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_values_stay_in_unit_range(name: str) -> None:
    out = RANDOM_OPS[name]()(images(), generator=gen())
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_seeded_reproducible_and_seed_dependent(name: str) -> None:
    op, x = RANDOM_OPS[name](), images()
    a, b = op(x, generator=gen(1)), op(x, generator=gen(1))
    c = op(x, generator=gen(2))
    assert torch.equal(a, b)
    if name not in ("flip", "gray", "solarize"):  # at p=1 these have no other randomness
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_apply_is_deterministic_and_leaves_input_alone(name: str) -> None:
    op, x = ALL_OPS[name](), images()
    x0 = x.clone()
    params = op.sample_params(x, gen())
    assert all(t.shape[0] == x.shape[0] for t in params.values())
    assert torch.equal(op.apply(x, params), op.apply(x, params))
    assert torch.equal(x, x0)


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_samples_get_independent_params(name: str) -> None:
    # Eight copies of one image: any per-batch (instead of per-sample) randomness gives equal outputs.
    x = images(b=1).expand(8, -1, -1, -1).contiguous()
    if name in ("flip", "gray", "solarize"):
        op = {"flip": RandomHorizontalFlip, "gray": RandomGrayscale, "solarize": RandomSolarize}[name](p=0.5)
    else:
        op = RANDOM_OPS[name]()
    out = op(x, generator=gen(3))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 1


@pytest.mark.parametrize(
    "make",
    [
        lambda p: RandomHorizontalFlip(p), lambda p: RandomGrayscale(p), lambda p: RandomSolarize(p=p),
        lambda p: ColorJitter(p=p), lambda p: GaussianBlur(5, p=p), lambda p: Cutout(p=p),
        lambda p: RandomRotation(30, p=p),
    ],
)
def test_p_zero_is_identity_and_p_one_always_applies(make) -> None:
    x = images()
    assert torch.equal(make(0.0)(x, generator=gen()), x)
    out = make(1.0)(x, generator=gen())
    changed = (out - x).flatten(1).abs().amax(dim=1) > 0
    assert bool(changed.all())


def test_generator_device_draws_same_params_as_default_rng() -> None:
    torch.manual_seed(5)
    a = ColorJitter().sample_params(images())
    b = ColorJitter().sample_params(images(), gen(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_cpu_and_cuda_agree_for_fixed_params(name: str) -> None:
    op, x = ALL_OPS[name](), images()
    params = op.sample_params(x, gen())
    cpu = op.apply(x, params)
    cuda = op.to("cuda").apply(x.cuda(), {k: v.cuda() for k, v in params.items()})
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-5, rtol=0)
    # A CPU generator also works for a CUDA batch and gives the same draws.
    cuda_params = op.sample_params(x.cuda(), gen())
    assert all(torch.equal(cuda_params[k].cpu(), params[k]) for k in params)


# ----------------------------------------------------------------------------- RandomResizedCrop


def test_crop_full_scale_square_ratio_is_identity() -> None:
    x = images(h=16, w=16)
    out = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, generator=gen())
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_matches_torchvision_resized_crop() -> None:
    x = images(b=6, h=20, w=24)
    op = RandomResizedCrop((10, 14), scale=(0.2, 1.0))
    params = op.sample_params(x, gen(4))
    out = op.apply(x, params)
    for i in range(x.shape[0]):
        t, l, h, w = (int(params[k][i]) for k in ("top", "left", "height", "width"))
        assert 0 <= t <= 20 - h and 0 <= l <= 24 - w
        ref = TF.resized_crop(x[i], t, l, h, w, [10, 14], antialias=False)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_crop_params_respect_scale_and_ratio() -> None:
    x = images(b=64, h=64, w=64)
    p = RandomResizedCrop(32, scale=(0.2, 0.5), ratio=(0.5, 2.0)).sample_params(x, gen())
    area = p["height"] * p["width"] / (64 * 64)
    assert bool((area > 0.15).all() and (area < 0.56).all())
    assert len(set(zip(p["top"].tolist(), p["left"].tolist()))) > 1


def test_crop_falls_back_to_centre_crop() -> None:
    # A 4x40 strip cannot hold a crop of ratio in [0.9, 1.1] with area >= 90%: centre crop 4x4.
    x = images(b=3, h=4, w=40)
    p = RandomResizedCrop(4, scale=(0.9, 1.0), ratio=(0.9, 1.1)).sample_params(x, gen())
    assert p["height"].tolist() == [4.0] * 3 and p["width"].tolist() == [4.0] * 3
    assert p["top"].tolist() == [0.0] * 3 and p["left"].tolist() == [18.0] * 3


# ----------------------------------------------------------------------------- flip / rotation


def test_flip_p1_equals_flip() -> None:
    x = images()
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))


@pytest.mark.parametrize("shape", [(16, 16), (12, 20)])
def test_rotation_matches_torchvision_rotate(shape: tuple[int, int]) -> None:
    x = images(b=3, h=shape[0], w=shape[1])
    op = RandomRotation(45.0)
    params = op.sample_params(x, gen())
    out = op.apply(x, params)
    for i, angle in enumerate(params["angle"].tolist()):
        ref = TF.rotate(x[i], angle, interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- colour


def jitter_params(b: int, op: str, factor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Params applying only ``op`` (identity factors elsewhere), with ``op`` first."""
    ones = torch.ones(b)
    params = {"apply": torch.ones(b, dtype=torch.bool), "brightness": ones, "contrast": ones,
              "saturation": ones, "hue": torch.zeros(b), "order": torch.arange(4).repeat(b, 1)}
    params[op] = factor
    return params


@pytest.mark.parametrize("op, ref_fn", [
    ("brightness", TF.adjust_brightness),
    ("contrast", TF.adjust_contrast),
    ("saturation", TF.adjust_saturation),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_matches_torchvision_float64(op: str, ref_fn, channels: int) -> None:
    x = images(b=4, c=channels, dtype=torch.float64)
    factor = torch.tensor([0.3, 0.9, 1.4, 1.8], dtype=torch.float64)
    out = ColorJitter().apply(x, jitter_params(4, op, factor))
    for i in range(4):
        torch.testing.assert_close(out[i], ref_fn(x[i], float(factor[i])), atol=1e-5, rtol=0)


def test_hue_matches_torchvision() -> None:
    x = images(b=4)
    x[0, :, :2] = 0.5  # gray pixels: hue is undefined there and must stay put
    shift = torch.tensor([-0.4, -0.05, 0.1, 0.5])
    out = ColorJitter().apply(x, jitter_params(4, "hue", shift))
    for i in range(4):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], float(shift[i])), atol=1e-5, rtol=0)
    # float64 input: computed in float64, torchvision computes hue in float32.
    x64 = x.double()
    out64 = ColorJitter().apply(x64, jitter_params(4, "hue", shift.double()))
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-5, rtol=0)


def test_jitter_order_is_per_sample() -> None:
    # brightness then contrast differs from contrast then brightness once clamping kicks in.
    x = images(b=2)
    params = jitter_params(2, "brightness", torch.tensor([1.8, 1.8]))
    params["contrast"] = torch.tensor([0.3, 0.3])
    params["order"] = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])
    out = ColorJitter().apply(x, params)
    x1 = x[1:2]
    expected_1 = TF.adjust_brightness(TF.adjust_contrast(x1[0], 0.3), 1.8)
    expected_0 = TF.adjust_contrast(TF.adjust_brightness(x[0], 1.8), 0.3)
    torch.testing.assert_close(out[0], expected_0, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], expected_1, atol=1e-6, rtol=0)
    # The sampled orders are permutations and vary across the batch.
    order = ColorJitter().sample_params(images(b=32), gen())["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).repeat(32, 1))
    assert len({tuple(o) for o in order.tolist()}) > 1


def test_jitter_factor_ranges() -> None:
    p = ColorJitter(0.4, 1.5, 0.2, 0.1).sample_params(images(b=256), gen())
    assert p["brightness"].min() >= 0.6 and p["brightness"].max() <= 1.4
    assert p["contrast"].min() >= 0.0 and p["contrast"].max() <= 2.5
    assert p["hue"].abs().max() <= 0.1


def test_grayscale_matches_torchvision() -> None:
    x = images()
    out = RandomGrayscale(p=1.0)(x)
    torch.testing.assert_close(out, TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)
    gray = images(c=1)
    assert torch.equal(RandomGrayscale(p=1.0)(gray), gray)


def test_colour_ops_reject_other_channel_counts() -> None:
    with pytest.raises(InputError, match="1 .*or 3"):
        ColorJitter()(images(c=4))


# ----------------------------------------------------------------------------- blur / solarize / cutout


def test_blur_preserves_constant_image() -> None:
    x = torch.full((4, 3, 16, 16), 0.37)
    torch.testing.assert_close(GaussianBlur(7, p=1.0)(x, generator=gen()), x, atol=1e-6, rtol=0)


def test_blur_matches_torchvision_gaussian_blur() -> None:
    x = images(b=3)
    op = GaussianBlur(5, sigma=(0.5, 2.0), p=1.0)
    params = op.sample_params(x, gen())
    out = op.apply(x, params)
    for i, sigma in enumerate(params["sigma"].tolist()):
        ref = TF.gaussian_blur(x[i], [5, 5], [sigma, sigma])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_blur_kernel_too_big_for_image() -> None:
    with pytest.raises(InputError, match="smaller kernel"):
        GaussianBlur(9, p=1.0)(images(h=4, w=4))


def test_solarize() -> None:
    x = images()
    expected = torch.where(x >= 0.5, 1 - x, x)
    assert torch.equal(RandomSolarize(0.5, p=1.0)(x), expected)


def test_cutout_area_within_scale() -> None:
    x = torch.rand(32, 3, 64, 64, generator=gen()) * 0.9 + 0.1  # no zeros before erasing
    op = Cutout(scale=(0.05, 0.2), p=1.0)
    out = op(x, generator=gen(1))
    erased = (out == 0).all(dim=1)  # (B, H, W)
    frac = erased.flatten(1).float().mean(dim=1)
    # Rounding the side lengths moves the area by at most about half a row + column.
    assert bool((frac > 0.05 - 0.02).all() and (frac < 0.2 + 0.02).all())
    for e in erased:  # a filled rectangle
        rows, cols = e.any(dim=1), e.any(dim=0)
        assert int(e.sum()) == int(rows.sum()) * int(cols.sum())
    assert torch.equal(out[~erased[:, None].expand_as(out)], x[~erased[:, None].expand_as(x)])


# ----------------------------------------------------------------------------- normalize / compose / to_float


def test_normalize() -> None:
    x = images()
    out = Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])(x)
    mean = torch.tensor([0.5, 0.4, 0.3])[:, None, None]
    std = torch.tensor([0.2, 0.25, 0.5])[:, None, None]
    torch.testing.assert_close(out, (x - mean) / std)
    assert Normalize([0.5], [0.5]).sample_params(x) == {}
    with pytest.raises(InputError, match="channel"):
        Normalize([0.5, 0.5], [0.5, 0.5])(x)


def test_compose_params_reproduce_forward() -> None:
    pipe = Compose([RandomResizedCrop(10), RandomHorizontalFlip(), ColorJitter(), Cutout(p=1.0),
                    Normalize([0.5] * 3, [0.5] * 3)])
    x = images()
    params = pipe.sample_params(x, gen(7))
    assert isinstance(params, list) and len(params) == 5
    assert params[3]["top"].max() < 10  # Cutout drew for the 10x10 crop, not the 16x16 input
    out = pipe.apply(x, params)
    assert tuple(out.shape) == (8, 3, 10, 10)
    assert torch.equal(out, pipe(x, generator=gen(7)))
    assert pipe.output_size((16, 16)) == (10, 10)


def test_to_float() -> None:
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=gen())
    f = to_float(u)
    assert f.dtype == torch.float32 and torch.equal(f, u.float() / 255)
    x = images()
    assert to_float(x) is x
    with pytest.raises(InputError):
        to_float(torch.zeros(2, 3, 4, 4, dtype=torch.int64))


# ----------------------------------------------------------------------------- errors


def test_three_dim_input_is_rejected() -> None:
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        RandomHorizontalFlip()(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match="to_float"):
        RandomHorizontalFlip()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("make, match", [
    (lambda: RandomHorizontalFlip(p=1.5), "probability"),
    (lambda: ColorJitter(p=-0.1), "probability"),
    (lambda: RandomResizedCrop(0), "size"),
    (lambda: RandomResizedCrop(8, scale=(0.5, 0.1)), "scale"),
    (lambda: GaussianBlur(4), "odd"),
    (lambda: GaussianBlur(3, sigma=(0.0, 1.0)), "sigma"),
    (lambda: ColorJitter(hue=0.7), "hue"),
    (lambda: RandomRotation(-1), "degrees"),
    (lambda: Cutout(scale=(0.1, 1.5)), "scale"),
    (lambda: Normalize([0.5, 0.5], [0.5]), "same length"),
    (lambda: Normalize([0.5], [0.0]), "positive"),
    (lambda: Compose([torch.nn.Identity()]), "BatchTransform"),
])
def test_bad_config_raises(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_base_class_contract() -> None:
    class Invert(BatchTransform):
        def apply(self, x, params):
            return 1 - x

    x = images()
    assert torch.equal(Invert()(x), 1 - x)
