"""Named multi-view augmentation pipelines (SimCLR for CIFAR / ImageNet, MNIST, sklearn digits).

Example::

    aug = preset("simclr_cifar", jitter_strength=0.5)
    view1, view2 = aug(uint8_images)      # two float views, (B, 3, 32, 32)
    x_eval = aug.eval_view(uint8_images)  # just to_float + Normalize
    crops = multicrop(aug, num_local=6)   # 2 global 32x32 views, then 6 local 14x14 views
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from contrastkit.augment.image import (
    ColorJitter,
    Compose,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomSolarize,
    _check_images,
    _check_range,
    params_to,
    to_float,
)
from contrastkit._checks import check_ndim
from contrastkit.augment import fused
from contrastkit.errors import ConfigError, InputError
from contrastkit.registry import Registry

__all__ = ["MultiView", "multicrop", "preset", "list_presets", "register_preset"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
DIGITS_MEAN, DIGITS_STD = (0.3,), (0.38,)

# Arguments every preset takes; builders declare their extra options as keyword-only parameters.
_COMMON = ("size", "mean", "std")
BACKENDS = ("auto", "torch", "triton")
# How far (normalised units) a fused view may stray from the torch ops on its first batch: float
# rounding of source coordinates reaches about 1e-4 on large images; a real fault is off by 1e-2.
_FUSED_TOLERANCE = 1e-3


def _kernel_runs_on(device: torch.device) -> bool:
    """The fused kernel augments CUDA batches (on a CPU it needs Triton's interpreter: tests only)."""
    return device.type == "cuda" and fused.triton is not None


class MultiView(nn.Module):
    """One augmentation pipeline per view, plus the evaluation transform.

    ``forward`` converts the batch to float once and returns one augmented view per pipeline, each
    contiguous (channels_last when ``channels_last`` is True). It is ``apply(images,
    sample_params(images, generator))``: the random parameters of every view are drawn on the CPU
    (the same for a seed on any device), moved to the batch's device in a few non-blocking copies,
    and the views computed there without host syncs, so ``apply`` compiles with
    ``torch.compile(fullgraph=True)``. Move the module to the batch's device (``.to(device)``) as
    any other: its normalisation constants live in buffers.

    ``backend`` picks how a CUDA batch is augmented: ``"auto"`` runs the head of each pipeline
    (crop, flip, jitter, grey, solarize, normalise) in the fused Triton kernel of
    :mod:`contrastkit.augment.fused` where Triton is installed, and the torch ops otherwise;
    ``"torch"`` always runs the torch ops; ``"triton"`` insists on the kernel. A pipeline's first
    fused batch is checked against the torch ops, which ``"auto"`` falls back to (with a warning)
    should the kernel fail or disagree on this device. Under ``torch.compile`` the torch ops are
    traced, for inductor to fuse them itself.

    Example::

        mv = MultiView([pipeline, pipeline], Compose([Normalize(mean, std)]))
        v1, v2 = mv(images)
        params = mv.sample_params(images, torch.Generator().manual_seed(0))
        v1, v2 = mv.apply(images, params)   # the same views for the same seed, on any device
    """

    def __init__(self, views: Sequence[Compose], eval_transform: Compose, *, channels_last: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        views = list(views)
        if not views:
            raise ConfigError("MultiView needs at least one view pipeline.")
        for v in [*views, eval_transform]:
            if not isinstance(v, Compose):
                raise ConfigError(f"MultiView takes Compose pipelines, got {type(v).__name__}.")
        self.views = nn.ModuleList(views)
        self.eval_transform = eval_transform
        self.channels_last = bool(channels_last)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ConfigError(f"augmentation backend must be one of {', '.join(BACKENDS)}, got {value!r}.")
        self._backend = value
        # Per pipeline (by id): whether its first fused batch matched the torch ops.
        self._fused_ok: dict[int, bool] = {}

    def _layout(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """uint8 or float (B, C, H, W) -> one augmented float view per pipeline."""
        return self.apply(images, self.sample_params(images, generator))

    def sample_params(self, images: Tensor, generator: torch.Generator | None = None) -> list[list[Any]]:
        """Every view's random parameters for the batch ``images`` (on the generator's device, the
        CPU by default); only the batch's shape is read."""
        check_ndim("images", images, 4, "(B, C, H, W)")
        proxy = torch.zeros((), dtype=torch.float32).expand(images.shape)
        return [view.sample_params(proxy, generator) for view in self.views]

    def apply(self, images: Tensor, params: Sequence[Sequence[Any]]) -> list[Tensor]:
        """The views of ``images`` for fixed ``params`` (from :meth:`sample_params`); deterministic."""
        if len(params) != len(self.views):
            raise InputError(f"{len(self.views)} views got {len(params)} parameter sets; pass the list returned "
                             "by sample_params.")
        params = params_to(params, images.device)
        floats = None
        views = []
        for view, view_params in zip(self.views, params):
            out = self._fused_view(images, view, view_params)
            if out is None:
                if floats is None:
                    floats = to_float(images)
                    _check_images(floats)
                out = view.apply(floats, view_params)
            views.append(self._layout(out))
        return views

    def _fused_view(self, images: Tensor, view: Compose, params: list[Any]) -> Tensor | None:
        """The view from the fused kernel, or None where the torch ops are to run."""
        if self.backend == "torch" or torch.compiler.is_compiling():
            return None
        if not _kernel_runs_on(images.device) or not fused.fusable_prefix(view):
            if self.backend == "triton":
                raise ConfigError("augmentation backend 'triton' needs a CUDA batch, Triton (pip install triton) "
                                  "and a pipeline that starts with crop, flip, jitter, grey, solarize or normalise "
                                  f"ops; got a batch on {images.device}. Use augment_backend=auto or torch.")
            return None
        if self._fused_ok.get(id(view)) is False:
            return None
        if id(view) in self._fused_ok:
            return fused.fused_apply(images, view, params, channels_last=self.channels_last)
        # The kernel's tests run under Triton's interpreter; its first batch here checks the
        # compiled kernel on this very device (one host sync, once per pipeline).
        reference = view.apply(to_float(images), params)
        try:
            out = fused.fused_apply(images, view, params, channels_last=self.channels_last)
            error = (out - reference).abs().max().item()
            problem = None if error <= _FUSED_TOLERANCE else f"differs from the torch ops by {error:.3g}"
        except Exception as exception:  # a Triton compile or launch failure on this device
            out, problem = None, f"failed ({type(exception).__name__}: {exception})"
        self._fused_ok[id(view)] = problem is None
        if problem is None:
            return out
        message = f"the fused augmentation kernel {problem} on {images.device}"
        if self.backend == "triton":
            raise ConfigError(f"{message}; set augment_backend=torch (or auto) to use the torch ops.")
        warnings.warn(f"{message}; the torch ops augment this pipeline from now on.", RuntimeWarning, stacklevel=3)
        return reference

    def eval_view(self, images: Tensor) -> Tensor:
        """uint8 or float (B, C, H, W) -> normalised float images, no randomness."""
        x = to_float(images)
        return self._layout(self.eval_transform(x))

    def extra_repr(self) -> str:
        return f"num_views={len(self.views)}, channels_last={self.channels_last}, backend={self.backend!r}"


Builder = Callable[..., MultiView]
_PRESETS: Registry[Builder] = Registry("augmentation preset")


def register_preset(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(*, size, mean, std, **options) -> MultiView`` under ``name``."""
    return _PRESETS.register(name)


def list_presets() -> list[str]:
    """Names accepted by :func:`preset`, sorted."""
    return _PRESETS.names()


def _options_of(builder: Builder) -> list[str]:
    return [
        p.name for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON
    ]


def preset(name: str, *, size: int | None = None, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None, **options: object) -> MultiView:
    """Build the named multi-view pipeline; ``size``/``mean``/``std`` default per preset.

    Example::

        aug = preset("mnist", degrees=10)
        v1, v2 = aug(images)    # images: (B, 1, 28, 28) uint8 or float
    """
    builder = _PRESETS.get(name)  # ConfigError with a close-match suggestion for unknown names
    accepted = _options_of(builder)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = [f"{u!r} (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(u, accepted, n=1)) else repr(u)
                 for u in unknown]
        raise ConfigError(
            f"unknown option(s) {', '.join(hints)} for preset {name!r}; accepted options: "
            f"{', '.join(accepted) or 'none'} (plus size, mean, std)."
        )
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std (or neither, for the preset's defaults).")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ConfigError(f"size must be a positive integer, got {size!r}.")
    return builder(size=size, mean=mean, std=std, **options)


def _default(value: Sequence[float] | None, default: Sequence[float]) -> Sequence[float]:
    return default if value is None else value


def _blur_kernel(size: int) -> int:
    """Odd kernel of about 10% of the image side (SimCLR's recipe), at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _simclr(size: int, mean: Sequence[float], std: Sequence[float], strength: float, blur: bool,
            min_scale: float = 0.08) -> MultiView:
    s = float(strength)
    if s < 0:
        raise ConfigError(f"jitter_strength must be non-negative, got {strength!r}.")
    if not 0 < float(min_scale) <= 1:
        raise ConfigError(f"min_scale must lie in (0, 1], got {min_scale!r}; SimCLR crops from 0.08, "
                          "MoCo and SimSiam from 0.2.")
    ops = [
        RandomResizedCrop(size, scale=(float(min_scale), 1.0)),
        RandomHorizontalFlip(0.5),
        ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=0.8),
        RandomGrayscale(0.2),
    ]
    if blur:
        ops.append(GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0), p=0.5))
    ops.append(Normalize(mean, std))
    # SimCLR's views are symmetric: the same pipeline (and module) draws both.
    pipeline = Compose(ops)
    return MultiView([pipeline, pipeline], Compose([Normalize(mean, std)]))


def _digit_views(size: int, mean: Sequence[float], std: Sequence[float], min_scale: float,
                 degrees: float) -> MultiView:
    # No flip (digits are not mirror-symmetric) and no colour ops (single channel).
    pipeline = Compose([
        RandomResizedCrop(size, scale=(float(min_scale), 1.0), ratio=(3 / 4, 4 / 3)),
        RandomRotation(degrees),
        Normalize(mean, std),
    ])
    return MultiView([pipeline, pipeline], Compose([Normalize(mean, std)]))


@register_preset("simclr_cifar")
def _simclr_cifar(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
                  jitter_strength: float = 0.5, blur: bool = False, min_scale: float = 0.08) -> MultiView:
    """SimCLR for 32x32 CIFAR: lightly's recipe (jitter strength 0.5, no blur by default); crops
    from ``min_scale`` of the image (SimCLR's 0.08; MoCo's and SimSiam's code crop from 0.2)."""
    return _simclr(size or 32, _default(mean, CIFAR10_MEAN), _default(std, CIFAR10_STD), jitter_strength, blur,
                   min_scale)


@register_preset("simclr_imagenet")
def _simclr_imagenet(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
                     jitter_strength: float = 1.0, blur: bool = True) -> MultiView:
    """SimCLR for ImageNet-size images (224, blur kernel 23)."""
    return _simclr(size or 224, _default(mean, IMAGENET_MEAN), _default(std, IMAGENET_STD), jitter_strength, blur)


@register_preset("byol_imagenet")
def _byol_imagenet(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None) -> MultiView:
    """BYOL's asymmetric views (Grill et al. 2020, table 6), which Barlow Twins and VICReg reuse: the
    first view is always blurred and never solarized, the second blurred with p=0.1 and solarized
    with p=0.2; both crop with scale (0.08, 1), flip, jitter (0.4, 0.4, 0.2, 0.1) with p=0.8 and
    turn grey with p=0.2."""
    size = size or 224
    mean, std = _default(mean, IMAGENET_MEAN), _default(std, IMAGENET_STD)

    def view(blur_p: float, solarize_p: float) -> Compose:
        return Compose([
            RandomResizedCrop(size, scale=(0.08, 1.0)),
            RandomHorizontalFlip(0.5),
            ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            RandomGrayscale(0.2),
            GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0), p=blur_p),
            RandomSolarize(0.5, p=solarize_p),
            Normalize(mean, std),
        ])

    return MultiView([view(1.0, 0.0), view(0.1, 0.2)], Compose([Normalize(mean, std)]))


@register_preset("mnist")
def _mnist(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
           min_scale: float = 0.3, degrees: float = 15.0) -> MultiView:
    """Single-channel 28x28 digits: crop + small rotation."""
    return _digit_views(size or 28, _default(mean, MNIST_MEAN), _default(std, MNIST_STD), min_scale, degrees)


@register_preset("digits")
def _digits(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
            min_scale: float = 0.5, degrees: float = 10.0) -> MultiView:
    """sklearn's 8x8 digits (fast tests): milder crop and rotation than mnist."""
    return _digit_views(size or 8, _default(mean, DIGITS_MEAN), _default(std, DIGITS_STD), min_scale, degrees)


@register_preset("crop_flip")
def _crop_flip(*, size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
               min_scale: float = 0.35, flip: bool = True) -> MultiView:
    """One light view: the random resized crop and flip of supervised training, which image-text
    methods train their image tower on (CLIP's own augmentation is a random crop)."""
    mean, std = _default(mean, IMAGENET_MEAN), _default(std, IMAGENET_STD)
    ops = [RandomResizedCrop(size or 224, scale=(float(min_scale), 1.0))]
    if flip:
        ops.append(RandomHorizontalFlip(0.5))
    return MultiView([Compose([*ops, Normalize(mean, std)])], Compose([Normalize(mean, std)]))


# Caron et al.'s local crops are 96 px for 224 px global crops.
_LOCAL_FRACTION = 96 / 224


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _crop_index(pipeline: Compose) -> int:
    index = next((i for i, op in enumerate(pipeline.transforms) if isinstance(op, RandomResizedCrop)), None)
    if index is None:
        raise ConfigError("multicrop needs a base preset whose view pipelines contain a RandomResizedCrop, "
                          f"got {[type(op).__name__ for op in pipeline.transforms]}.")
    return index


def _with_crop(pipeline: Compose, size: tuple[int, int], scale: tuple[float, float],
               cache: dict[int, Compose]) -> Compose:
    """``pipeline`` with its RandomResizedCrop replaced; the other ops are shared, not copied."""
    if id(pipeline) not in cache:
        ops = list(pipeline.transforms)
        index = _crop_index(pipeline)
        ops[index] = RandomResizedCrop(size, scale=scale, ratio=ops[index].ratio)
        for op in ops[index + 1:]:
            # Fail now rather than at the first batch: reflect padding needs pad < image side.
            if isinstance(op, GaussianBlur) and op.kernel_size // 2 >= min(size):
                raise ConfigError(f"crops of {size} are too small for the base pipeline's GaussianBlur "
                                  f"(kernel_size={op.kernel_size}); use larger crops or a base without blur.")
        cache[id(pipeline)] = Compose(ops)
    return cache[id(pipeline)]


def multicrop(base: MultiView, *, num_global: int = 2, num_local: int = 6, global_size: int | None = None,
              local_size: int | None = None, global_scale: tuple[float, float] = (0.14, 1.0),
              local_scale: tuple[float, float] = (0.05, 0.14)) -> MultiView:
    """Caron et al.'s multi-crop views (SwAV, DINO) derived from any preset's pipelines.

    Each base view pipeline keeps all its ops but its RandomResizedCrop, which becomes a global
    crop (``global_size``, ``global_scale``) or a small local crop (``local_size``, ``local_scale``),
    with the base crop's aspect-ratio range. Global view i is derived from base view i (cycling
    through them, so asymmetric recipes such as BYOL's keep their two pipelines); the local views
    from base view 0. The result returns the global views first, then the local ones, and keeps the
    base's evaluation transform and memory layout.

    Args:
        base: a multi-view preset, e.g. ``preset("simclr_imagenet")``.
        num_global: number of global views, >= 1.
        num_local: number of local views, >= 0.
        global_size: side of the global crops; defaults to the base crop size.
        local_size: side of the local crops; defaults to 96/224 of the base crop size.
        global_scale: (min, max) area fraction of the global crops, inside (0, 1].
        local_scale: (min, max) area fraction of the local crops, inside (0, 1].

    Example:
        >>> aug = multicrop(preset("simclr_cifar"), num_local=4, local_size=16)
        >>> [tuple(v.shape) for v in aug(torch.zeros(2, 3, 32, 32))][-1]
        (2, 3, 16, 16)
    """
    if not isinstance(base, MultiView):
        raise ConfigError(f"multicrop derives its views from a MultiView preset, got {type(base).__name__}.")
    _check_count("num_global", num_global, 1)
    _check_count("num_local", num_local, 0)
    global_scale = _check_range("global_scale", global_scale, high=1.0)
    local_scale = _check_range("local_scale", local_scale, high=1.0)
    first = base.views[0]
    base_h, base_w = first.transforms[_crop_index(first)].size
    if global_size is not None:
        _check_count("global_size", global_size, 1)
    if local_size is not None:
        _check_count("local_size", local_size, 1)
    global_hw = (global_size, global_size) if global_size else (base_h, base_w)
    local_hw = (local_size, local_size) if local_size else (max(1, round(base_h * _LOCAL_FRACTION)),
                                                           max(1, round(base_w * _LOCAL_FRACTION)))
    if local_hw[0] > global_hw[0] or local_hw[1] > global_hw[1]:
        raise ConfigError(f"local crops {local_hw} must not be larger than the global crops {global_hw}; "
                          "lower local_size or raise global_size.")
    global_cache: dict[int, Compose] = {}
    global_views = [_with_crop(base.views[i % len(base.views)], global_hw, global_scale, global_cache)
                    for i in range(num_global)]
    local_view = _with_crop(first, local_hw, local_scale, {}) if num_local else None
    return MultiView([*global_views, *[local_view] * num_local], base.eval_transform,
                     channels_last=base.channels_last, backend=base.backend)
