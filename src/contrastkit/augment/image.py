"""Batched image augmentations: every op runs on the whole (B, C, H, W) batch on its own device.

Each op draws independent random parameters per sample with vectorised torch calls (no loop over
the samples), so a GPU pipeline is not held back by per-image Python work. Semantics follow
torchvision's transforms, which is what published recipes use.

Every op splits randomness from computation: ``sample_params`` draws a dict of per-sample tensors
and ``apply`` is deterministic given them. ``sample_params`` reads only the shape and dtype of its
input, which lets :class:`Compose` draw the parameters of a whole pipeline up front, and draws on
the CPU (from the given generator, else torch's default CPU generator) whatever device the batch
is on: the same seed gives the same augmentations on a laptop and on a GPU. ``apply`` runs on the
batch's device without host syncs or data-dependent shapes, so it compiles with
``torch.compile(fullgraph=True)`` and can be captured in a CUDA graph.

Example::

    aug = Compose([RandomResizedCrop(32), RandomHorizontalFlip(), ColorJitter()])
    views = aug(images)                      # images: float (B, 3, H, W) in [0, 1]
    params = aug.sample_params(images, torch.Generator().manual_seed(0))   # CPU tensors
    same = aug.apply(images, params_to(params, images.device))             # reproducible, on any device
"""

from __future__ import annotations

import math
from collections import defaultdict
from numbers import Real
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_ndim
from contrastkit.errors import ConfigError, InputError

__all__ = [
    "BatchTransform",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "ColorJitter",
    "RandomGrayscale",
    "GaussianBlur",
    "RandomSolarize",
    "Cutout",
    "Normalize",
    "Compose",
    "params_to",
    "to_float",
]

Params = dict[str, Tensor]

LAYOUT = "(B, C, H, W)"
# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma, with torchvision's 0.2989 for red),
# kept identical so grayscale / contrast / saturation match torchvision to float precision.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# RandomResizedCrop and RandomErasing both try this many random rectangles before giving up.
_ATTEMPTS = 10


# ----------------------------------------------------------------------------- validation helpers


def _check_images(x: Tensor, name: str = "images") -> None:
    check_ndim(name, x, 4, LAYOUT)
    if not x.is_floating_point():
        raise InputError(
            f"{name} must be a floating-point tensor {LAYOUT} in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with contrastkit.augment.to_float first."
        )


def _check_prob(name: str, p: float) -> float:
    if not isinstance(p, Real) or not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {p!r}.")
    return float(p)


def _check_range(name: str, value: Sequence[float], *, low: float = 0.0, high: float = math.inf,
                 low_inclusive: bool = False) -> tuple[float, float]:
    """A (min, max) pair with low < min <= max <= high (low <= min if ``low_inclusive``)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (min, max) pair of numbers, got {value!r}.") from None
    above_low = lo >= low if low_inclusive else lo > low
    if not (above_low and lo <= hi <= high):
        bound = "[" if low_inclusive else "("
        raise ConfigError(
            f"{name} must be a (min, max) pair with min <= max inside {bound}{low}, {high}], got {value!r}."
        )
    return lo, hi


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(f"size must be an int or an (height, width) pair, got {size!r}.") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ConfigError(f"size must hold positive integers, got {size!r}.")
    return int(h), int(w)


def _check_rgb_or_gray(op: str, x: Tensor) -> int:
    c = x.shape[1]
    if c not in (1, 3):
        raise InputError(f"{op} needs 1 (grayscale) or 3 (RGB) channels, got images of shape {tuple(x.shape)}.")
    return c


# ----------------------------------------------------------------------------- random helpers


def _rand(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) float32 on the generator's device (the CPU without one), never on x's: one seed gives
    the same parameters whether the batch lives on the CPU or a GPU (their generators differ)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device)


def _uniform(shape: tuple[int, ...], low: float, high: float, x: Tensor,
             generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * _rand(shape, x, generator)


def _bernoulli(p: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    # rand in [0, 1): p = 0 never fires, p = 1 always does.
    return _rand((x.shape[0],), x, generator) < p


def _randint_below(n: Tensor, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-sample integer uniform in [0, n) for a float tensor n >= 1."""
    u = _rand(tuple(n.shape), x, generator)
    # min() guards against float rounding of u * n up to n.
    return torch.minimum(torch.floor(u * n), n - 1)


def _rectangles(x: Tensor, generator: torch.Generator | None, scale: tuple[float, float],
                ratio: tuple[float, float], *, area_scale: float) -> tuple[Tensor, Tensor]:
    """Draw _ATTEMPTS candidate rectangles per sample like torchvision: (B, _ATTEMPTS) target
    areas ~ area_scale * U(scale) and aspect ratios with log-uniform distribution over ``ratio``."""
    b = x.shape[0]
    area = area_scale * _uniform((b, _ATTEMPTS), scale[0], scale[1], x, generator)
    log_ratio = _uniform((b, _ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]), x, generator)
    return area, torch.exp(log_ratio)


def _first_true(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the first True per row (0 if none) and whether any was True."""
    return mask.to(torch.uint8).argmax(dim=1), mask.any(dim=1)


def _pick(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(1, index[:, None]).squeeze(1)


def params_to(params: Any, device: torch.device | str) -> Any:
    """``params`` (tensors nested in dicts and lists, as ``sample_params`` returns them) on ``device``.

    All tensors of one dtype travel in one copy, from pinned memory and without blocking on CUDA,
    so moving a pipeline's parameters costs a few transfers and never waits for the GPU.

    Example:
        >>> params = Compose([RandomHorizontalFlip()]).sample_params(torch.zeros(4, 3, 8, 8))
        >>> params_to(params, "cpu")[0]["apply"].shape
        torch.Size([4])
    """
    device = torch.device(device)
    leaves: list[Tensor] = []

    def collect(node: Any) -> None:
        if isinstance(node, Tensor):
            leaves.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    collect(params)
    if all(leaf.device == device for leaf in leaves):
        return params
    groups: dict[torch.dtype, list[Tensor]] = defaultdict(list)
    for leaf in leaves:
        groups[leaf.dtype].append(leaf)
    moved: dict[int, Tensor] = {}
    for group in groups.values():
        flat = torch.cat([leaf.reshape(-1) for leaf in group])
        if device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(device, non_blocking=True)
        for leaf, piece in zip(group, flat.split([leaf.numel() for leaf in group])):
            moved[id(leaf)] = piece.view(leaf.shape)

    def rebuild(node: Any) -> Any:
        if isinstance(node, Tensor):
            return moved[id(node)]
        if isinstance(node, dict):
            return {key: rebuild(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(value) for value in node)
        return node

    return rebuild(params)


# ----------------------------------------------------------------------------- base classes


class BatchTransform(nn.Module):
    """Base of the batched augmentations.

    Subclasses implement ``sample_params`` (random, per sample, reading only the shape / device of
    ``x``) and ``apply`` (deterministic); ``forward`` is ``apply(x, sample_params(x, generator))``.
    """

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        """Draw the per-sample random parameters for the batch ``x`` (tensors of leading dim B, on the
        generator's device: the CPU unless a generator on another device is given)."""
        return {}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """Transform ``x`` with fixed ``params``; deterministic."""
        raise NotImplementedError

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial (H, W) of the output for an input of spatial size ``size``."""
        return size

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        return self.apply(x, params_to(self.sample_params(x, generator), x.device))


class _RandomApply(BatchTransform):
    """An op applied to each sample independently with probability ``p``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = _check_prob("p", p)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        return {"apply": _bernoulli(self.p, x, generator)}

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ----------------------------------------------------------------------------- geometric ops


class RandomResizedCrop(BatchTransform):
    """Crop a random area / aspect-ratio rectangle per sample and resize it to ``size`` (bilinear).

    Same sampling as ``torchvision.transforms.RandomResizedCrop`` (10 attempts, then a centre crop
    clamped to the ratio range); the resampling is one bilinear ``grid_sample`` for the whole batch,
    equal to torchvision's ``resized_crop`` without antialiasing.

    Example::

        crop = RandomResizedCrop(32, scale=(0.2, 1.0))
        out = crop(images)    # (B, C, 32, 32)
    """

    def __init__(self, size: int | tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.scale = _check_range("scale", scale)
        self.ratio = _check_range("ratio", ratio)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.size

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        _, _, height, width = x.shape
        area, aspect = _rectangles(x, generator, self.scale, self.ratio, area_scale=float(height * width))
        w = torch.round(torch.sqrt(area * aspect))
        h = torch.round(torch.sqrt(area / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first, found = _first_true(fits)
        # torchvision's fallback: the largest centred crop whose ratio lies in the allowed range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(height * self.ratio[1])), height
        else:
            fw, fh = width, height
        w = torch.where(found, _pick(w, first), torch.full_like(w[:, 0], fw))
        h = torch.where(found, _pick(h, first), torch.full_like(h[:, 0], fh))
        top = _randint_below(height - h + 1, x, generator)
        left = _randint_below(width - w + 1, x, generator)
        # The fallback is centred, not random.
        top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
        left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
        return {"top": top, "left": left, "height": h, "width": w}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        b, c, height, width = x.shape
        top, left, h, w = (params[k].to(x.dtype) for k in ("top", "left", "height", "width"))
        out_h, out_w = self.size
        # Source pixel of each output pixel centre (align_corners=False), clamped to the crop's
        # outer pixel centres like F.interpolate on the cropped image, so no pixel outside the crop
        # leaks in. Separable: one coordinate row per sample for x and one for y.
        gx = self._coords(left, w, out_w, width, x)
        gy = self._coords(top, h, out_h, height, x)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @staticmethod
    def _coords(start: Tensor, length: Tensor, out: int, full: int, x: Tensor) -> Tensor:
        """(B, out) normalised grid coordinates covering [start, start + length) of a ``full`` axis."""
        j = torch.arange(out, dtype=x.dtype, device=x.device)[None, :] + 0.5
        src = start[:, None] + j * (length / out)[:, None] - 0.5
        src = torch.minimum(torch.maximum(src, start[:, None]), (start + length - 1)[:, None])
        return (2 * src + 1) / full - 1

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}"


class RandomHorizontalFlip(_RandomApply):
    """Mirror each sample left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        return torch.where(params["apply"][:, None, None, None], x.flip(-1), x)


class RandomRotation(BatchTransform):
    """Rotate each sample about its centre by an angle ~ U(-degrees, degrees) (counter-clockwise
    for positive angles, as torchvision), bilinear, zero fill; applied with probability ``p``."""

    def __init__(self, degrees: float, p: float = 1.0) -> None:
        super().__init__()
        if not isinstance(degrees, Real) or degrees < 0:
            raise ConfigError(f"degrees must be a non-negative number, got {degrees!r}.")
        self.degrees = float(degrees)
        self.p = _check_prob("p", p)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        angle = _uniform((x.shape[0],), -self.degrees, self.degrees, x, generator)
        apply = _bernoulli(self.p, x, generator)
        return {"angle": torch.where(apply, angle, torch.zeros_like(angle))}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        b, _, height, width = x.shape
        rad = torch.deg2rad(params["angle"].to(x.dtype))
        cos, sin = torch.cos(rad), torch.sin(rad)
        # Rotation in pixel space expressed in normalised coordinates: the H/W factors undo the
        # different scaling of x and y so non-square images rotate rigidly.
        theta = x.new_zeros(b, 2, 3)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * (height / width)
        theta[:, 1, 0] = sin * (width / height)
        theta[:, 1, 1] = cos
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Resampling at angle 0 is only identity up to float error; keep unrotated samples exact.
        return torch.where((params["angle"] == 0)[:, None, None, None], x, out)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, p={self.p}"


# ----------------------------------------------------------------------------- colour ops


def _grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, same arithmetic as torchvision."""
    r, g, b = x.unbind(dim=1)
    return r.mul(_GRAY_WEIGHTS[0]).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.to(x.dtype)[:, None, None, None]
    return (x * f + other * (1 - f)).clamp_(0, 1)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    gray = delta == 0
    # Where max == min hue and saturation are 0; the where() keeps the divisions finite.
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(gray, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    # Branch-free form: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
    # [5, 3, 1] made on the device: a tensor copied from the host would stall the stream.
    n = torch.arange(5.0, 0.0, -2.0, dtype=h.dtype, device=h.device)[None, :, None, None]
    k = torch.remainder(n + 6.0 * h[:, None], 6.0)
    return v[:, None] - (v * s)[:, None] * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + shift.to(x.dtype)[:, None, None], 1.0)
    return _hsv_to_rgb(h, s, v).clamp_(0, 1)


class ColorJitter(BatchTransform):
    """Random brightness, contrast, saturation and hue, in a random order per sample.

    Factors as torchvision: brightness/contrast/saturation ~ U(max(0, 1 - s), 1 + s), hue shift
    ~ U(-h, h); the jitter is applied to a sample with probability ``p`` (like
    ``RandomApply([ColorJitter(...)], p)``). Saturation and hue leave 1-channel images unchanged.

    Example::

        jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
        out = jitter(images)    # (B, 3, H, W), still in [0, 1]
    """

    _OPS = ("brightness", "contrast", "saturation", "hue")

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8) -> None:
        super().__init__()
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not isinstance(value, Real) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}.")
        if not isinstance(hue, Real) or not 0 <= hue <= 0.5:
            raise ConfigError(f"hue must be a number in [0, 0.5], got {hue!r}.")
        self.brightness, self.contrast, self.saturation, self.hue = (
            float(brightness), float(contrast), float(saturation), float(hue))
        self.p = _check_prob("p", p)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        b = x.shape[0]
        params = {"apply": _bernoulli(self.p, x, generator)}
        for name in self._OPS[:3]:
            s = getattr(self, name)
            params[name] = _uniform((b,), max(0.0, 1.0 - s), 1.0 + s, x, generator)
        params["hue"] = _uniform((b,), -self.hue, self.hue, x, generator)
        # A random permutation of the 4 ops per sample (torchvision draws one per image).
        params["order"] = _rand((b, 4), x, generator).argsort(dim=1)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        rgb = _check_rgb_or_gray("ColorJitter", x) == 3
        # Op id per (sample, position); -1 for samples the jitter skips.
        key = torch.where(params["apply"][:, None], params["order"], torch.full_like(params["order"], -1))
        # Every sample takes one step per position, with no subsets: subsets would need a host sync
        # and data-dependent shapes. Brightness, contrast and saturation are one blend
        # x * f + other * (1 - f) whose "other" is 0, the mean grey level or the grey image; a
        # factor of 1 leaves a sample exactly as it is.
        for position in range(4):
            op = key[:, position]
            brightness, contrast = op == 0, op == 1
            saturation = (op == 2) & rgb
            factor = torch.where(brightness, params["brightness"],
                                 torch.where(contrast, params["contrast"],
                                             torch.where(saturation, params["saturation"],
                                                         torch.ones_like(params["brightness"]))))
            gray = _grayscale(x) if rgb else x
            other = torch.where(contrast[:, None, None, None], gray.mean(dim=(1, 2, 3), keepdim=True),
                                torch.where(saturation[:, None, None, None], gray, torch.zeros_like(gray)))
            blended = _blend(x, other, factor)
            if rgb and self.hue > 0:  # hue=0 is torchvision's "no hue jitter", not a round trip through HSV
                x = torch.where((op == 3)[:, None, None, None], _adjust_hue(x, params["hue"]), blended)
            else:
                x = blended
        return x

    def extra_repr(self) -> str:
        return (f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, "
                f"hue={self.hue}, p={self.p}")


class RandomGrayscale(_RandomApply):
    """Convert each sample to grayscale with probability ``p``; keeps C channels (1 or 3)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__(p)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        if _check_rgb_or_gray("RandomGrayscale", x) == 1:
            return x
        return torch.where(params["apply"][:, None, None, None], _grayscale(x).expand_as(x), x)


class GaussianBlur(BatchTransform):
    """Gaussian blur with a per-sample sigma ~ U(sigma), applied with probability ``p``.

    Same kernel and reflect padding as torchvision's ``gaussian_blur``; separable, run for the whole
    batch as two grouped convolutions (batch folded into channels).
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.kernel_size = kernel_size
        self.sigma = _check_range("sigma", sigma)
        self.p = _check_prob("p", p)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        sigma = _uniform((x.shape[0],), self.sigma[0], self.sigma[1], x, generator)
        return {"apply": _bernoulli(self.p, x, generator), "sigma": sigma}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        b, c, height, width = x.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        if pad >= min(height, width):
            raise InputError(
                f"GaussianBlur kernel_size {k} needs images larger than {pad} pixels per side for reflect "
                f"padding, got shape {tuple(x.shape)}; use a smaller kernel."
            )
        half = (k - 1) * 0.5
        grid = torch.linspace(-half, half, k, dtype=x.dtype, device=x.device)
        pdf = torch.exp(-0.5 * (grid[None, :] / params["sigma"].to(x.dtype)[:, None]) ** 2)
        kernel = pdf / pdf.sum(dim=1, keepdim=True)
        # Skipped samples get a delta kernel: exact identity, and no data-dependent indexing.
        delta = torch.zeros_like(grid)
        delta[pad] = 1.0
        kernel = torch.where(params["apply"][:, None], kernel, delta[None, :])
        weight = kernel.repeat_interleave(c, dim=0)  # (B*C, k): one kernel per (sample, channel)
        y = F.pad(x.reshape(1, b * c, height, width), (pad, pad, pad, pad), mode="reflect")
        y = F.conv2d(y, weight.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(y, weight.view(b * c, 1, k, 1), groups=b * c)
        return y.view(b, c, height, width)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p}"


class RandomSolarize(_RandomApply):
    """With probability ``p``, invert the pixels >= ``threshold`` (x -> 1 - x)."""

    def __init__(self, threshold: float = 0.5, p: float = 0.2) -> None:
        super().__init__(p)
        if not isinstance(threshold, Real):
            raise ConfigError(f"threshold must be a number, got {threshold!r}.")
        self.threshold = float(threshold)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        invert = (x >= self.threshold) & params["apply"][:, None, None, None]
        return torch.where(invert, 1 - x, x)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, p={self.p}"


class Cutout(BatchTransform):
    """Erase one random rectangle per sample with probability ``p`` (torchvision RandomErasing).

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); up to 10 attempts per sample, and a
    sample whose attempts all fail is left unchanged, as in torchvision.
    """

    def __init__(self, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                 p: float = 0.5, value: float = 0.0) -> None:
        super().__init__()
        self.scale = _check_range("scale", scale, high=1.0)
        self.ratio = _check_range("ratio", ratio)
        self.p = _check_prob("p", p)
        if not isinstance(value, Real):
            raise ConfigError(f"value must be a number, got {value!r}.")
        self.value = float(value)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        _check_images(x)
        _, _, height, width = x.shape
        apply = _bernoulli(self.p, x, generator)
        area, aspect = _rectangles(x, generator, self.scale, self.ratio, area_scale=float(height * width))
        h = torch.round(torch.sqrt(area * aspect))
        w = torch.round(torch.sqrt(area / aspect))
        first, found = _first_true((h < height) & (w < width))
        h, w = _pick(h, first), _pick(w, first)
        top = _randint_below(height - h + 1, x, generator)
        left = _randint_below(width - w + 1, x, generator)
        zero = torch.zeros_like(h)
        # An empty rectangle encodes "not erased" (skipped by p, or no attempt fitted).
        keep = apply & found
        return {"top": top, "left": left, "height": torch.where(keep, h, zero), "width": torch.where(keep, w, zero)}

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        _, _, height, width = x.shape
        rows = torch.arange(height, device=x.device, dtype=params["top"].dtype)[None, :]
        cols = torch.arange(width, device=x.device, dtype=params["left"].dtype)[None, :]
        top, left = params["top"][:, None], params["left"][:, None]
        in_rows = (rows >= top) & (rows < top + params["height"][:, None])
        in_cols = (cols >= left) & (cols < left + params["width"][:, None])
        mask = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
        return x.masked_fill(mask[:, None], self.value)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, ratio={self.ratio}, p={self.p}, value={self.value}"


# ----------------------------------------------------------------------------- deterministic ops


class Normalize(BatchTransform):
    """Per-channel ``(x - mean) / std``; no randomness. A length-1 mean/std applies to every channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        if mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ConfigError(
                f"mean and std must be non-empty and of the same length, got {len(mean_t)} and {len(std_t)}."
            )
        if not bool((std_t > 0).all()):
            raise ConfigError(f"std must be positive, got {list(std)}.")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        _check_images(x)
        n = self.mean.numel()
        if n not in (1, x.shape[1]):
            raise InputError(
                f"Normalize has {n} channel statistics but the images have shape {tuple(x.shape)} "
                f"({x.shape[1]} channels); give one mean/std per channel."
            )
        mean = self.mean.to(x.device, x.dtype)[None, :, None, None]
        std = self.std.to(x.device, x.dtype)[None, :, None, None]
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={[round(v, 6) for v in self.mean.tolist()]}, std={[round(v, 6) for v in self.std.tolist()]}"


class Compose(BatchTransform):
    """Apply transforms in order. ``sample_params`` returns one params dict per child (a list), so
    ``apply(x, params)`` reproduces a pipeline run exactly.

    Example::

        pipeline = Compose([RandomResizedCrop(32), RandomHorizontalFlip(), Normalize([0.5] * 3, [0.5] * 3)])
        params = pipeline.sample_params(images)
        assert torch.equal(pipeline.apply(images, params), pipeline.apply(images, params))
    """

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        super().__init__()
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, BatchTransform):
                raise ConfigError(f"Compose takes BatchTransform instances, got {type(t).__name__}.")
        self.transforms = nn.ModuleList(transforms)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        for t in self.transforms:
            size = t.output_size(size)
        return size

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> list[Any]:  # type: ignore[override]
        _check_images(x)
        b, c, height, width = x.shape
        size = (height, width)
        params = []
        for t in self.transforms:
            # Children read only shape and dtype, so a 1-element expanded stand-in of the
            # intermediate shape avoids computing the pipeline twice.
            proxy = torch.zeros((), dtype=x.dtype).expand(b, c, *size)
            params.append(t.sample_params(proxy, generator))
            size = t.output_size(size)
        return params

    def apply(self, x: Tensor, params: list[Any]) -> Tensor:  # type: ignore[override]
        _check_images(x)
        if len(params) != len(self.transforms):
            raise InputError(
                f"Compose of {len(self.transforms)} transforms got {len(params)} parameter sets; "
                "pass the list returned by its sample_params."
            )
        for t, p in zip(self.transforms, params):
            x = t.apply(x, p)
        return x


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 in [0, 1]; floating-point input is returned as is."""
    check_ndim("images", images, 4, LAYOUT)
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise InputError(
            f"images must be uint8 in [0, 255] or floating point in [0, 1], got dtype {images.dtype}."
        )
    return images.to(torch.float32).div_(255.0)
