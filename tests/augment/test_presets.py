"""Named multi-view pipelines (contrastkit.augment.presets)."""

from __future__ import annotations

import pytest
import torch

from contrastkit.augment import (
    ColorJitter,
    Compose,
    GaussianBlur,
    MultiView,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomSolarize,
    list_presets,
    preset,
)
from contrastkit.errors import ConfigError, InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(b: int, c: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=gen())


def ops_of(mv: MultiView, view: int = 0) -> list:
    return list(mv.views[view].transforms)


def test_list_presets() -> None:
    assert {"simclr_cifar", "simclr_imagenet", "mnist", "digits"} <= set(list_presets())
    assert list_presets() == sorted(list_presets())


def test_simclr_cifar_on_uint8_batch() -> None:
    mv = preset("simclr_cifar")
    views = mv(uint8_images(8, 3, 32), generator=gen())
    assert len(views) == 2
    for v in views:
        assert v.shape == (8, 3, 32, 32) and v.dtype == torch.float32 and v.is_contiguous()
    assert not torch.equal(views[0], views[1])  # the two views draw different parameters


def test_simclr_cifar_recipe() -> None:
    ops = ops_of(preset("simclr_cifar"))
    jitter = next(o for o in ops if isinstance(o, ColorJitter))
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.p) == pytest.approx(
        (0.4, 0.4, 0.4, 0.1, 0.8))
    assert not any(isinstance(o, GaussianBlur) for o in ops)
    assert isinstance(ops[-1], Normalize)
    assert ops[-1].mean.tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    blur = [o for o in ops_of(preset("simclr_cifar", blur=True, jitter_strength=1.0)) if isinstance(o, GaussianBlur)]
    assert len(blur) == 1 and blur[0].kernel_size == 3 and blur[0].p == 0.5


def test_simclr_imagenet_recipe() -> None:
    mv = preset("simclr_imagenet")
    ops = ops_of(mv)
    assert ops[0].size == (224, 224) and ops[0].scale == (0.08, 1.0)
    blur = next(o for o in ops if isinstance(o, GaussianBlur))
    assert blur.kernel_size == 23
    jitter = next(o for o in ops if isinstance(o, ColorJitter))
    assert (jitter.brightness, jitter.hue) == pytest.approx((0.8, 0.2))
    # Small size keeps the test fast: the blur kernel scales with the size.
    views = preset("simclr_imagenet", size=48)(uint8_images(2, 3, 64), generator=gen())
    assert [tuple(v.shape) for v in views] == [(2, 3, 48, 48)] * 2


def test_mnist_on_single_channel_batch() -> None:
    mv = preset("mnist")
    ops = ops_of(mv)
    assert not any(isinstance(o, (RandomHorizontalFlip, ColorJitter)) for o in ops)
    assert ops[0].scale == (0.3, 1.0) and next(o for o in ops if isinstance(o, RandomRotation)).degrees == 15
    views = mv(uint8_images(8, 1, 28), generator=gen())
    assert [tuple(v.shape) for v in views] == [(8, 1, 28, 28)] * 2
    float_views = mv(torch.rand(8, 1, 28, 28), generator=gen())
    assert all(v.dtype == torch.float32 for v in float_views)


def test_digits_preset_and_options() -> None:
    mv = preset("digits", degrees=5, min_scale=0.8)
    ops = ops_of(mv)
    assert ops[0].size == (8, 8) and ops[0].scale == (0.8, 1.0) and ops[1].degrees == 5
    assert ops[-1].mean.tolist() == pytest.approx([0.3])
    views = mv(torch.rand(4, 1, 8, 8), generator=gen())
    assert [tuple(v.shape) for v in views] == [(4, 1, 8, 8)] * 2


def test_views_are_reproducible_under_seed() -> None:
    mv, x = preset("simclr_cifar"), uint8_images(4, 3, 32)
    a, b, c = mv(x, generator=gen(1)), mv(x, generator=gen(1)), mv(x, generator=gen(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_eval_view_is_only_normalize() -> None:
    mv = preset("simclr_cifar", mean=[0.5] * 3, std=[0.25] * 3)
    x = uint8_images(2, 3, 32)
    out = mv.eval_view(x)
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.25)


def test_channels_last() -> None:
    mv = preset("simclr_cifar")
    mv.channels_last = True
    views = mv(uint8_images(2, 3, 32))
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in views)
    assert mv.eval_view(uint8_images(2, 3, 32)).is_contiguous(memory_format=torch.channels_last)


def test_custom_multiview_asymmetric() -> None:
    norm = Normalize([0.5], [0.5])
    mv = MultiView([Compose([RandomResizedCrop(8), norm]), Compose([RandomResizedCrop(4), norm]),
                    Compose([RandomResizedCrop(4), norm])], Compose([norm]))
    shapes = [tuple(v.shape) for v in mv(torch.rand(3, 1, 16, 16))]
    assert shapes == [(3, 1, 8, 8), (3, 1, 4, 4), (3, 1, 4, 4)]
    with pytest.raises(ConfigError):
        MultiView([], Compose([norm]))


def test_unknown_preset_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match="did you mean 'simclr_cifar'") as info:
        preset("simclr_cifr")
    assert "mnist" in str(info.value)  # lists the known names


def test_unknown_option_names_accepted_options() -> None:
    with pytest.raises(ConfigError, match="accepted options: min_scale, degrees") as info:
        preset("mnist", degree=3)
    assert "did you mean 'degrees'" in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 0}, "size"),
    ({"mean": [0.5, 0.5, 0.5]}, "both mean and std"),
    ({"jitter_strength": -1.0}, "jitter_strength"),
])
def test_bad_preset_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        preset("simclr_cifar", **kwargs)


def test_bad_images_rejected() -> None:
    mv = preset("mnist")
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        mv(torch.rand(1, 28, 28))
    with pytest.raises(InputError, match="channel"):
        preset("simclr_cifar")(torch.rand(2, 1, 32, 32))  # 3 channel statistics, 1-channel images


def test_byol_imagenet_views_are_asymmetric() -> None:
    first, second = ops_of(preset("byol_imagenet"), 0), ops_of(preset("byol_imagenet"), 1)
    blur = [next(o for o in ops if isinstance(o, GaussianBlur)).p for ops in (first, second)]
    solarize = [next(o for o in ops if isinstance(o, RandomSolarize)).p for ops in (first, second)]
    assert blur == [1.0, 0.1] and solarize == [0.0, 0.2]
    views = preset("byol_imagenet", size=48)(uint8_images(2, 3, 64), generator=gen())
    assert [tuple(v.shape) for v in views] == [(2, 3, 48, 48)] * 2
