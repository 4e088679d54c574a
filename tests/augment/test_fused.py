"""The fused Triton augmentation kernel (contrastkit.augment.fused) against the torch ops.

The kernel runs under Triton's interpreter on the CPU, on small batches (the interpreter executes
every program in Python), and must give ``pipeline.apply(to_float(images), params)`` for the same
params to float32 rounding.

The interpreter has to be on before triton is imported: triton decorates its own library functions
(tl.sum, tl.cdiv) at import, and fused.py its kernel. Other tests of the suite import triton first
(torch.compile does), so the kernel runs in a worker process started with TRITON_INTERPRET=1, and
each test sends it (images, pipeline, params) and gets the output or the exception back.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

import contrastkit
import contrastkit._triton
from contrastkit.augment import (
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
    preset,
    to_float,
)
from contrastkit.augment import fused
from contrastkit.augment.fused import fusable_prefix, fused_apply
from contrastkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from contrastkit.errors import ConfigError, InputError

# Whether this process would run the kernel compiled (Triton installed, TRITON_INTERPRET unset).
COMPILED = fused.triton is not None and isinstance(fused._augment_kernel, fused.triton.runtime.JITFunction)

# Max abs error allowed on normalised float32 outputs of small sources (sides <= 64), whose source
# coordinates come out (nearly) exact on both paths; a wrong op, order or pixel is off by 1e-2 or more.
ATOL = 1e-4


def rounding_atol(height: int, width: int, *, compiled: bool) -> float:
    """The largest gap float32 rounding can open between the kernel and the torch ops, per element of
    full_chain's normalised output (or a preset with no stronger jitter and no smaller std), for a
    height x width uint8 source. In units of u = 2^-24: one rounding moves x by at most u |x|.

    (1) Source point, per axis of L px. Both paths form src = left + (j + 0.5) step - 0.5 with
        step = crop / out; torch then goes to g = (2 src + 1) / L - 1 and grid_sample back to
        ((g + 1) L - 1) / 2. Every rounding on the way moves the point by <= u L px:
          compiled kernel: step by Triton's `/`, div.full.f32 (2 ulp <= 4u, times j + 0.5 <= out),
                           then one fused multiply-add; - 0.5 is exact                      5    u L
          torch, CUDA:     step = crop * fl(1/out) (2), j * step (1), + left (1), 2 src + 1 (1),
                           * fl(1/L) (2), - 1 (1/4), g + 1 (1), fma((g + 1), L, -1) (1)     9.25 u L
        so COORD = 14.25 (every crop of 500 px -> 224, step 2 ulp off either way: at most 7.2).
        Under the interpreter (IEEE division, no fma) the kernel's point is torch's src bit for bit
        and only torch's round trip (2 src + 1, / L, - 1, g + 1, * L / 2) is left: COORD = 4.25
        (seen: at most 0.85).
    (2) Bilinear value: moving the point by (dx, dy) moves the value by <= STEP (dx + dy), STEP the
        largest difference of neighbouring pixels: 1 for random uint8 images.
    (3) Colour ops, max-norm Lipschitz constants at the jitter's extreme factors 1 +- 0.4:
        brightness 1.4, contrast and saturation f + |1 - f| = 1.8 (blends with a mean of pixels),
        hue 3 (affine per hue sector, each row summing to <= 3 in absolute value; seen: 2.997):
        GAIN = 1.4 * 1.8 * 1.8 * 3 = 13.6. Grey (weights sum to 0.9999), solarize at 0.5 (continuous
        there) and the presets' blur (a mean) add no gain.
    (4) Value roundings, both paths: ~100u each (hue's 75u: h off by ~9u, times 6 in k = 5 + 6h, plus
        k's own 8u; loads, interpolation, the blends, grey and normalise 25u) and the two contrast
        means (<= 65u each: sums 48 tiles deep per lane plus 10 tree levels, then the division),
        times |1 - c| <= 0.4: VALUE = 256.
    (5) Normalise divides by std >= MIN_STD = 0.224 (ImageNet's green; CIFAR's are larger).

    Bound = GAIN / MIN_STD * u * (COORD * (H + W) * STEP + VALUE): 4.6e-2 compiled on 375 x 500
    (where 6.2e-4 was seen on an H200), 9.5e-3 interpreted on 256 x 300. Real faults are far larger
    (torch ops on those sources): a crop shifted by one or half a pixel, or an output pixel taken
    from its neighbour, 2.4 to 4.5; another sample's brightness, contrast, saturation or hue factor,
    1.2 to 4.5; brightness 5% off, 0.22 to 0.26. Subtler ones, brightness 1% off (4.5e-2 to 5.5e-2)
    or the contrast mean over the first tile only (1.9e-2 to 2.8e-2), only the interpreted bound catches.
    """
    coord = 14.25 if compiled else 4.25
    step, gain, min_std, value = 1.0, 1.4 * 1.8 * 1.8 * 3, 0.224, 256
    return gain / min_std * 2.0**-24 * (coord * (height + width) * step + value)


# The worker: reads length-prefixed pickled (args, kwargs) on stdin, answers ("ok", output) or
# ("error", exception, traceback) on a private copy of stdout (fd 1 itself goes to stderr, so
# nothing printed can corrupt the replies), until stdin closes.
WORKER = """
import os, pickle, sys, traceback
replies = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
from triton_interpreter import patch_loop_bounds
patch_loop_bounds()
from contrastkit.augment.fused import fused_apply
requests = sys.stdin.buffer
while header := requests.read(8):
    args, kwargs = pickle.loads(requests.read(int.from_bytes(header, "little")))
    try:
        reply = ("ok", fused_apply(*args, **kwargs))
    except Exception as error:
        reply = ("error", error, traceback.format_exc())
    try:
        data = pickle.dumps(reply)
    except Exception:
        data = pickle.dumps(("error", RuntimeError(reply[2]), reply[2]))
    replies.write(len(data).to_bytes(8, "little") + data)
    replies.flush()
"""


@pytest.fixture(scope="module")
def interpreted() -> Iterator[Callable[..., Any]]:
    """``fused_apply`` run by Triton's interpreter in the worker process."""
    if fused.triton is None:
        pytest.skip("the fused kernel needs Triton (pip install triton)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    # The worker imports the contrastkit under test, whatever is installed, and tests/triton_interpreter.py.
    src = str(Path(contrastkit.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, tests, *filter(None, [env.get("PYTHONPATH")])])
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=env)

    def run(*args: Any, **kwargs: Any) -> Any:
        data = pickle.dumps((args, kwargs))
        worker.stdin.write(len(data).to_bytes(8, "little") + data)
        worker.stdin.flush()
        header = worker.stdout.read(8)
        if not header:
            raise RuntimeError(f"the interpreter worker died (exit code {worker.wait()}); see its stderr above")
        reply = pickle.loads(worker.stdout.read(int.from_bytes(header, "little")))
        if reply[0] == "error":
            raise reply[1] from RuntimeError(f"raised in the interpreter worker:\n{reply[2]}")
        return reply[1]

    yield run
    worker.stdin.close()
    worker.wait(timeout=60)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)


def check(run: Callable[..., Any], images: torch.Tensor, pipeline: Compose, params: list,
          atol: float = ATOL, **kwargs: Any) -> torch.Tensor:
    """The kernel's output, asserted equal to the torch path's to ``atol`` (float32 outputs)."""
    ref = pipeline.apply(to_float(images), params)
    out = run(images, pipeline, params, **kwargs)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    return out


def full_chain(size: int | tuple[int, int] = 16, channels: int = 3, *, jitter_p: float = 0.8,
               hue: float = 0.1) -> Compose:
    """Every fusable op, in order."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.45,), (0.25,))
    return Compose([
        RandomResizedCrop(size, scale=(0.08, 1.0)),
        RandomHorizontalFlip(0.5),
        ColorJitter(0.4, 0.4, 0.4, hue, p=jitter_p),
        RandomGrayscale(0.5),
        RandomSolarize(0.5, p=0.5),
        Normalize(mean, std),
    ])


def alternate(params: list, b: int) -> list:
    """full_chain's params with flip, grey and solarize on every other sample and the jitter on all
    but every third, so that one batch takes both sides of every per-sample switch."""
    even = torch.arange(b) % 2 == 0
    params[1]["apply"], params[3]["apply"], params[4]["apply"] = even, ~even, even
    params[2]["apply"] = torch.arange(b) % 3 != 2
    return params


# ----------------------------------------------------------------------------- fusable_prefix


@pytest.mark.parametrize(("ops", "expected"), [
    ([], 0),
    ([RandomResizedCrop(8)], 1),
    ([Normalize([0.5], [0.5])], 1),
    ([RandomHorizontalFlip(), ColorJitter(), RandomSolarize()], 3),
    ([RandomResizedCrop(8), RandomHorizontalFlip(), ColorJitter(), RandomGrayscale(), RandomSolarize(),
      Normalize([0.5], [0.5])], 6),
    ([RandomResizedCrop(8), RandomGrayscale(), GaussianBlur(3), Normalize([0.5], [0.5])], 2),
    ([RandomResizedCrop(8), RandomRotation(10), Normalize([0.5], [0.5])], 1),
    ([RandomResizedCrop(8), Cutout(), Normalize([0.5], [0.5])], 1),
    ([GaussianBlur(3), RandomResizedCrop(8)], 0),
    ([RandomHorizontalFlip(), RandomResizedCrop(8)], 1),    # out of order
    ([RandomGrayscale(), ColorJitter()], 1),                 # out of order
    ([RandomHorizontalFlip(), RandomHorizontalFlip()], 1),   # each op at most once
    ([Normalize([0.5], [0.5]), Normalize([0.5], [0.5])], 1),
])
def test_fusable_prefix(ops: list, expected: int) -> None:
    assert fusable_prefix(Compose(ops)) == expected


def test_fusable_prefix_of_presets() -> None:
    assert fusable_prefix(preset("simclr_cifar").views[0]) == 5             # the whole pipeline
    assert fusable_prefix(preset("simclr_imagenet", size=24).views[0]) == 4  # up to GaussianBlur
    assert [fusable_prefix(v) for v in preset("byol_imagenet", size=24).views] == [4, 4]
    assert fusable_prefix(preset("mnist").views[0]) == 1                    # up to RandomRotation
    assert fusable_prefix(preset("digits").views[0]) == 1


def test_subclasses_are_not_fused() -> None:
    class MyFlip(RandomHorizontalFlip):
        pass

    assert fusable_prefix(Compose([RandomResizedCrop(8), MyFlip()])) == 1


# ----------------------------------------------------------------------------- against the torch path


@pytest.mark.parametrize(("name", "options", "shape"), [
    ("simclr_cifar", {}, (5, 3, 32, 32)),
    ("simclr_cifar", {}, (1, 3, 32, 32)),
    ("simclr_imagenet", {"size": 24}, (7, 3, 40, 36)),   # crop .. grayscale fused; blur, normalize in torch
    ("byol_imagenet", {"size": 24}, (7, 3, 30, 30)),     # blur, solarize, normalize in torch
    ("mnist", {}, (5, 1, 28, 28)),                       # crop fused; rotation, normalize in torch
    ("digits", {}, (7, 1, 8, 8)),
])
def test_preset_views_match_torch(interpreted, name: str, options: dict, shape: tuple[int, ...]) -> None:
    images = uint8_images(*shape, seed=len(name))
    for i, view in enumerate(preset(name, **options).views):
        params = view.sample_params(to_float(images), gen(i))
        out = check(interpreted, images, view, params)
        assert out.dtype == torch.float32 and out.is_contiguous()


@pytest.mark.parametrize("batch", [1, 5, 7])
def test_every_op_on_an_uneven_crop(interpreted, batch: int) -> None:
    # 20x28 source -> 16x12 output: a different scale on each axis.
    pipeline = full_chain((16, 12))
    images = uint8_images(batch, 3, 20, 28, seed=batch)
    params = alternate(pipeline.sample_params(to_float(images), gen(batch)), batch)
    assert check(interpreted, images, pipeline, params).shape == (batch, 3, 16, 12)


@pytest.mark.parametrize("channels", [3, 1])
def test_every_jitter_order(interpreted, channels: int) -> None:
    # One sample per order of (brightness, contrast, saturation, hue): contrast blends with the mean
    # of the image as the ops before it left it, so the kernel's mean pass depends on the order.
    orders = torch.tensor(list(itertools.permutations(range(4))))
    pipeline = full_chain(12, channels, jitter_p=1.0)
    images = uint8_images(len(orders), channels, 16, 14, seed=channels)
    params = pipeline.sample_params(to_float(images), gen(channels))
    params[2]["order"] = orders
    # Strong factors, so that an op applied out of order would show.
    params[2]["brightness"] = torch.linspace(0.5, 1.5, len(orders))
    params[2]["contrast"] = torch.linspace(1.6, 0.4, len(orders))
    check(interpreted, images, pipeline, params)


@pytest.mark.parametrize(("jitter_p", "hue"), [(0.0, 0.1), (1.0, 0.1), (1.0, 0.0)])
def test_jitter_probability_and_zero_hue(interpreted, jitter_p: float, hue: float) -> None:
    pipeline = full_chain(16, jitter_p=jitter_p, hue=hue)
    images = uint8_images(5, 3, 24, 20, seed=3)
    params = pipeline.sample_params(to_float(images), gen(3))
    assert bool((params[2]["apply"] == bool(jitter_p)).all())
    check(interpreted, images, pipeline, params)


def test_large_images_span_many_tiles(interpreted) -> None:
    # 224x224 outputs: 49 tiles of 1024 pixels, the contrast mean accumulated across all of them.
    pipeline = full_chain(224, jitter_p=1.0)
    images = uint8_images(2, 3, 256, 300, seed=4)
    check(interpreted, images, pipeline, alternate(pipeline.sample_params(to_float(images), gen(4)), 2),
          atol=rounding_atol(256, 300, compiled=False))


def test_pipeline_without_crop(interpreted) -> None:
    # Flip and jitter straight on the source pixels; one mean/std for all three channels.
    pipeline = Compose([RandomHorizontalFlip(0.5), ColorJitter(p=1.0), Normalize([0.5], [0.25])])
    images = uint8_images(4, 3, 10, 13, seed=5)
    params = pipeline.sample_params(to_float(images), gen(5))
    params[0]["apply"] = torch.tensor([True, False, True, False])
    check(interpreted, images, pipeline, params)


@pytest.mark.parametrize("source", ["float", "channels_last", "strided"])
def test_input_formats(interpreted, source: str) -> None:
    pipeline = full_chain(12)
    base = uint8_images(5, 3, 30, 40, seed=6)
    images = {
        "float": to_float(base),
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "strided": base[:, :, 3:27:2, ::3],   # a non-contiguous 12x14 view
    }[source]
    params = alternate(pipeline.sample_params(to_float(images), gen(6)), 5)
    check(interpreted, images, pipeline, params)


@pytest.mark.parametrize(("name", "options"), [("simclr_cifar", {}), ("simclr_imagenet", {"size": 24})])
@pytest.mark.parametrize(("out_dtype", "channels_last"), [
    (torch.bfloat16, True), (torch.float16, False), (torch.float32, True),
])
def test_output_dtype_and_memory_format(interpreted, name: str, options: dict, out_dtype: torch.dtype,
                                        channels_last: bool) -> None:
    # simclr_cifar's view is written by the kernel; simclr_imagenet's is cast after the blur tail.
    view = preset(name, **options).views[0]
    images = uint8_images(3, 3, 32, 32, seed=7)
    params = view.sample_params(to_float(images), gen(7))
    out = interpreted(images, view, params, out_dtype=out_dtype, channels_last=channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.dtype == out_dtype and out.is_contiguous(memory_format=layout)
    # float32 values within ATOL of each other, rounded once to out_dtype: at most one ulp more apart.
    ref = view.apply(to_float(images), params)
    torch.testing.assert_close(out.float(), ref, atol=ATOL, rtol=torch.finfo(out_dtype).eps)


def test_nothing_to_fuse_runs_the_torch_ops() -> None:
    pipeline = Compose([GaussianBlur(3, p=1.0), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = uint8_images(3, 3, 12, 12, seed=8)
    params = pipeline.sample_params(to_float(images), gen(8))
    out = fused_apply(images, pipeline, params, channels_last=True)
    assert torch.equal(out, pipeline.apply(to_float(images), params))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_empty_batch(interpreted) -> None:
    pipeline = full_chain(8)
    images = uint8_images(0, 3, 12, 12)
    assert interpreted(images, pipeline, pipeline.sample_params(to_float(images), gen())).shape == (0, 3, 8, 8)


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors(interpreted) -> None:
    pipeline = full_chain(8)
    images = uint8_images(2, 3, 12, 12)
    params = pipeline.sample_params(to_float(images), gen())
    with pytest.raises(ConfigError, match="out_dtype"):
        interpreted(images, pipeline, params, out_dtype=torch.int32)
    with pytest.raises(InputError, match="1 \\(grayscale\\) or 3 \\(RGB\\) channels"):
        interpreted(uint8_images(2, 2, 12, 12), Compose([RandomResizedCrop(8)]), [{}])
    with pytest.raises(InputError, match="uint8"):
        interpreted(images.int(), pipeline, params)
    with pytest.raises(InputError, match="parameter sets"):
        interpreted(images, pipeline, params[:-1])
    with pytest.raises(InputError, match="shape \\(2,\\)"):
        interpreted(images, pipeline, [params[0], {"apply": torch.ones(3, dtype=torch.bool)}, *params[2:]])
    without_order = {k: v for k, v in params[2].items() if k != "order"}
    with pytest.raises(InputError, match="lack 'order'"):
        interpreted(images, pipeline, [*params[:2], without_order, *params[3:]])
    two_stats = Compose([RandomResizedCrop(8), Normalize([0.5, 0.5], [0.2, 0.2])])
    with pytest.raises(InputError, match="channel statistics"):
        interpreted(images, two_stats, two_stats.sample_params(to_float(images), gen()))


@pytest.mark.skipif(not COMPILED, reason="needs Triton, and this process not under TRITON_INTERPRET=1")
def test_cpu_images_need_the_interpreter() -> None:
    pipeline = full_chain(8)
    images = uint8_images(2, 3, 12, 12)
    with pytest.raises(InputError, match="TRITON_INTERPRET=1"):
        fused_apply(images, pipeline, pipeline.sample_params(to_float(images), gen()))


def fresh_module(module: Any) -> Any:
    """A new copy of ``module``, executed now (under whatever sys.modules holds)."""
    spec = importlib.util.spec_from_file_location(f"{module.__name__}_fresh", module.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def test_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh copy of the module, imported while triton cannot be: it imports, fusable_prefix works
    # and fused_apply names the fix.
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    monkeypatch.setitem(sys.modules, "contrastkit._triton", fresh_module(contrastkit._triton))
    module = fresh_module(fused)
    assert module.triton is None
    pipeline = full_chain(8)
    assert module.fusable_prefix(pipeline) == 6
    images = uint8_images(2, 3, 12, 12)
    with pytest.raises(ConfigError, match="pip install triton"):
        module.fused_apply(images, pipeline, pipeline.sample_params(to_float(images), gen()))


# ----------------------------------------------------------------------------- compiled, on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.skipif(not COMPILED, reason="needs Triton, and this process not under TRITON_INTERPRET=1")
@pytest.mark.parametrize(("size", "source"), [(32, (32, 32)), (224, (375, 500))])
def test_compiled_kernel_matches_torch_on_cuda(size: int, source: tuple[int, int]) -> None:
    pipeline = full_chain(size).cuda()
    images = uint8_images(64, 3, *source, seed=9).cuda()
    params = [{k: v.cuda() for k, v in p.items()} for p in pipeline.sample_params(to_float(images), gen(9))]
    atol = ATOL if max(source) <= 64 else rounding_atol(*source, compiled=True)
    check(fused_apply, images, pipeline, params, atol=atol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.skipif(not COMPILED, reason="needs Triton, and this process not under TRITON_INTERPRET=1")
@pytest.mark.parametrize(("name", "side"), [("simclr_cifar", 32), ("byol_imagenet", 256)])
def test_presets_on_cuda_take_the_kernel_and_agree_with_the_torch_ops(name: str, side: int) -> None:
    views = preset(name).cuda()
    images = uint8_images(32, 3, side, side, seed=10).cuda()
    params = views.sample_params(images, gen(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a kernel failing its first-batch check would warn
        fused_views = views.apply(images, params)
    assert views._fused_ok and all(views._fused_ok.values())
    views.backend = "torch"
    for actual, expected in zip(fused_views, views.apply(images, params)):
        atol = ATOL if side <= 64 else rounding_atol(side, side, compiled=True)
        torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
