"""Multi-crop views derived from a preset (contrastkit.augment.presets.multicrop)."""

import pytest
import torch

from contrastkit.augment import (
    Compose,
    GaussianBlur,
    MultiView,
    Normalize,
    RandomResizedCrop,
    RandomSolarize,
    multicrop,
    preset,
)
from contrastkit.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(b: int, c: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=gen())


def crop_of(pipeline: Compose) -> RandomResizedCrop:
    crops = [op for op in pipeline.transforms if isinstance(op, RandomResizedCrop)]
    assert len(crops) == 1
    return crops[0]


def test_mnist_views_are_global_first_then_local():
    mv = multicrop(preset("mnist"))
    views = mv(uint8_images(4, 1, 28), generator=gen())
    assert [tuple(v.shape) for v in views] == [(4, 1, 28, 28)] * 2 + [(4, 1, 12, 12)] * 6
    crops = [crop_of(p) for p in mv.views]
    assert [(c.size, c.scale) for c in crops] == [((28, 28), (0.14, 1.0))] * 2 + [((12, 12), (0.05, 0.14))] * 6
    assert all(c.ratio == (3 / 4, 4 / 3) for c in crops)


def test_simclr_cifar_views_with_chosen_sizes_keep_the_other_ops():
    base = preset("simclr_cifar", blur=True)
    mv = multicrop(base, num_global=3, num_local=2, local_size=16, global_scale=(0.3, 1.0))
    views = mv(uint8_images(3, 3, 32), generator=gen())
    assert [tuple(v.shape) for v in views] == [(3, 3, 32, 32)] * 3 + [(3, 3, 16, 16)] * 2
    assert crop_of(mv.views[0]).scale == (0.3, 1.0)
    base_ops = list(base.views[0].transforms)
    for pipeline in mv.views:
        ops = list(pipeline.transforms)
        assert isinstance(ops[0], RandomResizedCrop) and ops[0] is not base_ops[0]
        assert ops[1:] == base_ops[1:] and all(a is b for a, b in zip(ops[1:], base_ops[1:]))
    # The base preset is left as it was.
    assert crop_of(base.views[0]).scale == (0.08, 1.0) and crop_of(base.views[0]).size == (32, 32)
    assert mv.eval_transform is base.eval_transform


def test_each_view_and_each_sample_draws_its_own_crop():
    mv = multicrop(preset("mnist"), num_local=2)
    image = uint8_images(1, 1, 28).expand(6, 1, 28, 28)  # the same image six times
    views = mv(image, generator=gen())
    for v in views:
        assert not all(torch.equal(v[0], v[i]) for i in range(1, 6))
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])


def test_reproducible_under_a_seeded_generator():
    mv = multicrop(preset("simclr_cifar"), num_local=3, local_size=16)
    images = uint8_images(4, 3, 32)
    first, again = mv(images, generator=gen(7)), mv(images, generator=gen(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = mv(images, generator=gen(8))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))


def area_bounds(params: dict, image_area: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the sampled (unrounded) area fraction: the crop's sides are rounded to the nearest
    pixel, so sqrt(area * ratio) lies within 0.5 of the width and sqrt(area / ratio) of the height."""
    h, w = params["height"], params["width"]
    return (h - 0.5) * (w - 0.5) / image_area, (h + 0.5) * (w + 0.5) / image_area


def test_local_crops_sample_their_area_from_local_scale():
    mv = multicrop(preset("simclr_imagenet", size=224), num_local=1)
    local, global_ = crop_of(mv.views[2]), crop_of(mv.views[0])
    assert local.size == (96, 96)
    # Crop parameters read only the shape, so a large expanded stand-in batch costs no memory.
    proxy = torch.zeros(()).expand(4000, 3, 224, 224)
    low, high = area_bounds(local.sample_params(proxy, gen(1)), 224 * 224)
    assert bool((low <= 0.14).all()) and bool((high >= 0.05).all())
    # The range is used fully: some crops lie near each end.
    assert float(high.min()) < 0.06 and float(low.max()) > 0.13
    low, high = area_bounds(global_.sample_params(proxy, gen(1)), 224 * 224)
    assert bool((high >= 0.14).all()) and float(low.max()) > 0.9


def test_asymmetric_bases_keep_one_pipeline_per_global_view():
    first = Compose([RandomResizedCrop(16), GaussianBlur(3, p=1.0)])
    second = Compose([RandomResizedCrop(16), RandomSolarize(p=0.2)])
    base = MultiView([first, second], Compose([Normalize([0.5], [0.5])]), channels_last=True)
    mv = multicrop(base, num_global=3, num_local=2)
    extra = [type(p.transforms[1]) for p in mv.views]
    assert extra == [GaussianBlur, RandomSolarize, GaussianBlur, GaussianBlur, GaussianBlur]
    assert mv.views[0] is mv.views[2]  # a base pipeline becomes one global pipeline, drawn afresh per view
    assert mv.channels_last
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in mv(torch.rand(2, 3, 16, 16)))
    assert crop_of(mv.views[-1]).size == (7, 7)  # round(16 * 96 / 224)


@pytest.mark.parametrize("options, message", [
    ({"num_global": 0}, "num_global must be an integer >= 1"),
    ({"num_local": -1}, "num_local must be an integer >= 0"),
    ({"local_size": 0}, "local_size must be an integer >= 1"),
    ({"global_size": 2.5}, "global_size must be an integer >= 1"),
    ({"local_size": 30, "global_size": 24}, r"local crops \(30, 30\) must not be larger than the global crops"),
    ({"local_scale": (0.2, 0.1)}, "local_scale must be a .min, max. pair"),
    ({"global_scale": (0.5, 1.5)}, "global_scale must be a .min, max. pair"),
    ({"local_scale": (0.0, 0.1)}, "local_scale must be a .min, max. pair"),
])
def test_bad_settings_raise_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        multicrop(preset("mnist"), **options)


def test_bases_that_cannot_be_cropped_are_rejected():
    no_crop = MultiView([Compose([Normalize([0.5], [0.5])])], Compose([Normalize([0.5], [0.5])]))
    with pytest.raises(ConfigError, match="contain a RandomResizedCrop"):
        multicrop(no_crop)
    with pytest.raises(ConfigError, match="too small for the base pipeline's GaussianBlur"):
        multicrop(preset("simclr_imagenet"), local_size=11)
