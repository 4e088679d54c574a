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
    multicrop,
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
    crops = [o for o in ops if isinstance(o, RandomResizedCrop)]
    assert len(crops) == 1 and tuple(crops[0].scale) == pytest.approx((0.08, 1.0))  # SimCLR's
    moco_crop = next(o for o in ops_of(preset("simclr_cifar", min_scale=0.2)) if isinstance(o, RandomResizedCrop))
    assert tuple(moco_crop.scale) == pytest.approx((0.2, 1.0))  # MoCo's and SimSiam's code


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
    ({"min_scale": 0.0}, "min_scale must lie in"),
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


# ----------------------------------------------------------------------------- compiled, on any device

# (preset options, channels, source side) small enough for a CPU; one entry per preset.
PRESET_INPUTS = {"simclr_cifar": ({}, 3, 32), "simclr_imagenet": ({"size": 16}, 3, 24),
                 "byol_imagenet": ({"size": 16}, 3, 24), "mnist": ({}, 1, 28), "digits": ({}, 1, 8),
                 "crop_flip": ({"size": 16}, 3, 24)}


def test_every_preset_has_inputs_for_the_compile_test() -> None:
    assert sorted(PRESET_INPUTS) == list_presets()


# Inductor generates C++ on a CPU: slower to compile, so only for the GPU's hot path.
COMPILE_CASES = [pytest.param(name, *inputs, "aot_eager", id=f"{name}-aot_eager")
                 for name, inputs in sorted(PRESET_INPUTS.items())]
COMPILE_CASES.append(pytest.param("simclr_cifar", {}, 3, 32, "inductor", id="simclr_cifar-inductor"))


@pytest.mark.parametrize("name, options, channels, side, backend", COMPILE_CASES)
def test_every_preset_compiles_as_one_graph_with_the_eager_output(name, options, channels, side, backend) -> None:
    # fullgraph=True fails on any host sync (.item(), .tolist()) or data-dependent shape, the two
    # things that also break CUDA-graph capture.
    torch._dynamo.reset()  # every case compiles MultiView.apply: a clean cache each, not recompiles
    mv = preset(name, **options)
    images = uint8_images(6, channels, side)
    params = mv.sample_params(images, gen(1))
    compiled = torch.compile(mv.apply, fullgraph=True, backend=backend)
    for actual, expected in zip(compiled(images, params), mv.apply(images, params)):
        torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)


def test_multicrop_views_compile_as_one_graph() -> None:
    torch._dynamo.reset()
    mv = multicrop(preset("simclr_imagenet", size=16), num_local=2, local_size=8)
    images = uint8_images(4, 3, 24)
    params = mv.sample_params(images, gen(1))
    compiled = torch.compile(mv.apply, fullgraph=True, backend="aot_eager")
    # Not bit-equal: the decomposed graph may sum in another order (8e-7 apart on the 16-core
    # H100 machine, equal on 2 cores), so the same bound as the single-crop presets.
    for actual, expected in zip(compiled(images, params), mv.apply(images, params)):
        torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)


def test_parameters_are_drawn_on_the_cpu_whatever_the_batch_device() -> None:
    # The meta device stands in for a GPU: only the batch's shape is read, so the draws are the
    # CPU generator's, identical to those for a CPU batch.
    mv = preset("simclr_cifar")
    on_cpu = mv.sample_params(uint8_images(8, 3, 32), gen(3))
    elsewhere = mv.sample_params(torch.empty(8, 3, 32, 32, dtype=torch.uint8, device="meta"), gen(3))
    for view_cpu, view_other in zip(on_cpu, elsewhere):
        for ops_cpu, ops_other in zip(view_cpu, view_other):
            assert ops_cpu.keys() == ops_other.keys()
            for key in ops_cpu:
                assert ops_other[key].device.type == "cpu"
                assert torch.equal(ops_cpu[key], ops_other[key]), key


def test_forward_is_apply_of_sample_params() -> None:
    mv = preset("simclr_cifar")
    images = uint8_images(8, 3, 32)
    direct = mv(images, generator=gen(4))
    split = mv.apply(images, mv.sample_params(images, gen(4)))
    for a, b in zip(direct, split):
        assert torch.equal(a, b)


def test_an_unknown_backend_is_refused_and_multicrop_keeps_the_backend() -> None:
    mv = preset("simclr_imagenet", size=16)
    with pytest.raises(ConfigError, match="backend must be one of auto, torch, triton"):
        mv.backend = "cuda"
    mv.backend = "torch"
    assert multicrop(mv, num_local=2).backend == "torch"


@pytest.fixture
def kernel_everywhere(monkeypatch):
    """Lets MultiView take its fused path for CPU batches, through a stand-in for the kernel."""
    from contrastkit.augment import fused, presets

    monkeypatch.setattr(presets, "_kernel_runs_on", lambda device: True)
    calls = []

    def use(kernel):
        def fake(images, pipeline, params, **kwargs):
            calls.append(pipeline)
            return kernel(images, pipeline, params)
        monkeypatch.setattr(fused, "fused_apply", fake)
        return calls

    return use


def torch_views(mv, images, params):
    from contrastkit.augment import to_float

    return [view.apply(to_float(images), view_params) for view, view_params in zip(mv.views, params)]


def test_a_kernel_that_agrees_on_its_first_batch_serves_the_later_ones(kernel_everywhere) -> None:
    from contrastkit.augment import to_float

    calls = kernel_everywhere(lambda images, pipeline, params: pipeline.apply(to_float(images), params))
    mv = preset("simclr_cifar")
    images = uint8_images(4, 3, 32)
    for seed in (1, 2):
        params = mv.sample_params(images, gen(seed))
        assert all(torch.equal(a, b) for a, b in zip(mv.apply(images, params), torch_views(mv, images, params)))
    assert len(calls) == 4  # two views, two batches (the pipeline is shared by both views)
    assert list(mv._fused_ok.values()) == [True]


@pytest.mark.parametrize("fault", ["wrong", "raises"])
def test_a_kernel_that_fails_its_first_batch_hands_over_to_the_torch_ops(kernel_everywhere, fault) -> None:
    def broken(images, pipeline, params):
        if fault == "raises":
            raise RuntimeError("no kernel image for this device")
        return torch.zeros(images.shape[0], 3, 32, 32)

    calls = kernel_everywhere(broken)
    mv = preset("simclr_cifar")
    images = uint8_images(4, 3, 32)
    params = mv.sample_params(images, gen(1))
    with pytest.warns(RuntimeWarning, match="fused augmentation kernel .* the torch ops augment this pipeline"):
        views = mv.apply(images, params)
    assert all(torch.equal(a, b) for a, b in zip(views, torch_views(mv, images, params)))
    mv.apply(images, mv.sample_params(images, gen(2)))
    assert len(calls) == 1  # tried once, never again
    mv.backend = "triton"
    with pytest.raises(ConfigError, match="set augment_backend=torch"):
        mv.apply(images, params)


def test_the_triton_backend_refuses_a_batch_the_kernel_cannot_take() -> None:
    mv = preset("digits")
    mv.backend = "triton"
    with pytest.raises(ConfigError, match="needs a CUDA batch"):
        mv(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
