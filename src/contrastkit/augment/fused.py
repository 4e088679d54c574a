"""One fused Triton kernel for the colour-and-crop head of an augmentation pipeline.

The torch ops of :mod:`contrastkit.augment.image` run the batch through one kernel launch per
elementary operation (hundreds per call for a SimCLR view, most of them tiny), so on a GPU the
augmentation is bound by launch overhead and by re-reading the whole batch at every step. The
kernel here does the usual head of a pipeline,

    RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter -> RandomGrayscale -> RandomSolarize
    -> Normalize

(each op optional, in this order), in one pass from the uint8 (or float) source batch to the
normalised view: every output pixel reads its bilinear neighbours from the source once, runs the
colour ops in registers and is written once, in the requested dtype and memory format. Ops after
the fusable head (GaussianBlur, RandomRotation, Cutout, ...) run through their torch ``apply``.

The kernel reproduces ``pipeline.apply(to_float(images), params)`` with the same ``params``, to
float32 rounding. ColorJitter's contrast blends every pixel with the mean grey level of the image
as it is at that point of the sample's random op order, so each program owns one image and, when
the jitter is on, makes a first pass over the image that recomputes the ops before contrast to
accumulate that mean, then a second pass that finishes every pixel and stores it.

Example::

    pipeline = preset("simclr_cifar").views[0]
    params = [{k: v.cuda() for k, v in p.items()} for p in pipeline.sample_params(to_float(images))]
    view = fused_apply(images.cuda(), pipeline, params, out_dtype=torch.bfloat16, channels_last=True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit._triton import jit, tl, triton  # None without Triton: fused_apply says how to install it
from contrastkit.augment.image import (
    LAYOUT,
    ColorJitter,
    Compose,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
    to_float,
)
from contrastkit.errors import ConfigError, InputError

__all__ = ["fusable_prefix", "fused_apply"]

# The ops the kernel implements, in the only order it applies them.
_SEQUENCE = (RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale, RandomSolarize, Normalize)
_OUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Pixels per tile: each program loops over its image in tiles of this many output pixels.
_BLOCK = 1024
# 8 warps keep the registers per thread low enough for the hue conversion on 3 channels.
_NUM_WARPS = 8


def fusable_prefix(pipeline: Compose) -> int:
    """How many leading ops of ``pipeline.transforms`` :func:`fused_apply` runs in its kernel.

    The kernel covers RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
    RandomSolarize and Normalize, each optional but in that order; the prefix stops at the first
    op that is none of them or comes out of order. Subclasses are not fused: they may change what
    ``apply`` does.
    """
    if not isinstance(pipeline, Compose):
        raise ConfigError(f"fusable_prefix takes a Compose pipeline, got {type(pipeline).__name__}.")
    slot = 0
    for count, op in enumerate(pipeline.transforms):
        while slot < len(_SEQUENCE) and type(op) is not _SEQUENCE[slot]:
            slot += 1
        if slot == len(_SEQUENCE):
            return count
        slot += 1
    return len(pipeline.transforms)


def fused_apply(images: Tensor, pipeline: Compose, params: list[dict[str, Tensor]], *,
                out_dtype: torch.dtype = torch.float32, channels_last: bool = False) -> Tensor:
    """``pipeline.apply(to_float(images), params)`` with the fusable head of the pipeline in one kernel.

    Args:
        images: uint8 in [0, 255] or float in [0, 1], (B, C, H, W) with C = 1 or 3, any memory
            format, on the device the kernel runs on: a GPU, or the CPU when Python was started with
            TRITON_INTERPRET=1 (Triton's interpreter; slow, for tests).
        pipeline: the augmentation pipeline; its first :func:`fusable_prefix` ops are fused.
        params: ``pipeline.sample_params(images, generator)``, moved to the images' device.
        out_dtype: float32, bfloat16 or float16.
        channels_last: return the view in channels_last memory format (contiguous otherwise).

    Returns:
        The augmented float view, (B, C, out_h, out_w), as ``out_dtype``.
    """
    if out_dtype not in _OUT_DTYPES:
        raise ConfigError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}.")
    check_ndim("images", images, 4, LAYOUT)
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise InputError(
            f"images must be uint8 in [0, 255] or floating point in [0, 1], got dtype {images.dtype}."
        )
    if images.shape[1] not in (1, 3):
        raise InputError(
            f"fused_apply needs 1 (grayscale) or 3 (RGB) channels, got images of shape {tuple(images.shape)}."
        )
    if not isinstance(pipeline, Compose):
        raise ConfigError(f"fused_apply takes a Compose pipeline, got {type(pipeline).__name__}.")
    ops = list(pipeline.transforms)
    if len(params) != len(ops):
        raise InputError(
            f"the pipeline has {len(ops)} transforms but got {len(params)} parameter sets; "
            "pass the list returned by its sample_params."
        )
    layout = torch.channels_last if channels_last else torch.contiguous_format
    prefix = fusable_prefix(pipeline)
    if prefix == 0:
        out = pipeline.apply(to_float(images), params)
    else:
        # A torch tail works on float32 contiguous images; without one the kernel writes the result.
        whole = prefix == len(ops)
        out = _run_kernel(images, ops[:prefix], params[:prefix],
                          out_dtype if whole else torch.float32, layout if whole else torch.contiguous_format)
        for op, op_params in zip(ops[prefix:], params[prefix:]):
            out = op.apply(out, op_params)
    return out.to(out_dtype).contiguous(memory_format=layout)


def _kernel() -> Any:
    if triton is None:
        raise ConfigError(
            "fused_apply needs Triton, which is not installed: pip install triton "
            "(or run the torch ops with pipeline.apply(to_float(images), params))."
        )
    return _augment_kernel


def _param(op: object, op_params: dict[str, Tensor], key: str, shape: tuple[int, ...],
           device: torch.device) -> Tensor:
    """One per-sample parameter tensor, checked (a wrong shape would make the kernel read out of
    bounds) and contiguous, as the kernel indexes it densely."""
    name = type(op).__name__
    try:
        value = op_params[key]
    except KeyError:
        raise InputError(f"{name} parameters lack {key!r}; pass the dict its sample_params returned.") from None
    if not isinstance(value, Tensor) or tuple(value.shape) != shape or value.device != device:
        got = f"shape {tuple(value.shape)} on {value.device}" if isinstance(value, Tensor) else type(value).__name__
        raise InputError(
            f"{name} parameter {key!r} must be a tensor of shape {shape} on {device} (the images' device), "
            f"got {got}; move the output of sample_params to the images' device."
        )
    return value.contiguous()


def _run_kernel(images: Tensor, ops: list[Any], params: list[dict[str, Tensor]], out_dtype: torch.dtype,
                layout: torch.memory_format) -> Tensor:
    kernel = _kernel()
    if images.device.type == "cpu" and isinstance(kernel, triton.runtime.JITFunction):
        raise InputError(
            "fused_apply runs its Triton kernel on a GPU but the images are on the CPU; move the batch "
            "(and its params) to the GPU, or set TRITON_INTERPRET=1 before Python starts to run the kernel "
            "on the CPU with Triton's interpreter."
        )
    b, c, height, width = images.shape
    device = images.device
    found = {type(op): (op, p) for op, p in zip(ops, params)}

    def per_sample(op_type: type, key: str, shape: tuple[int, ...] = (b,)) -> Tensor:
        # Absent ops get a placeholder pointer; their constexpr flag compiles the loads away.
        if op_type not in found:
            return images
        return _param(*found[op_type], key, shape, device)

    crop = found.get(RandomResizedCrop)
    out_h, out_w = crop[0].size if crop else (height, width)
    out = torch.empty((b, c, out_h, out_w), dtype=out_dtype, device=device, memory_format=layout)
    if b == 0:
        return out
    jitter = found.get(ColorJitter)
    solarize = found.get(RandomSolarize)
    normalize = found.get(Normalize)
    mean = std = images
    stat_stride = 0
    if normalize:
        n_stats = normalize[0].mean.numel()
        if n_stats not in (1, c):
            raise InputError(
                f"Normalize has {n_stats} channel statistics but the images have shape {tuple(images.shape)} "
                f"({c} channels); give one mean/std per channel."
            )
        mean = normalize[0].mean.to(device, torch.float32)
        std = normalize[0].std.to(device, torch.float32)
        stat_stride = 1 if n_stats > 1 else 0
    kernel[(b,)](
        images, out,
        per_sample(RandomResizedCrop, "top"), per_sample(RandomResizedCrop, "left"),
        per_sample(RandomResizedCrop, "height"), per_sample(RandomResizedCrop, "width"),
        per_sample(RandomHorizontalFlip, "apply"),
        per_sample(ColorJitter, "apply"), per_sample(ColorJitter, "brightness"),
        per_sample(ColorJitter, "contrast"), per_sample(ColorJitter, "saturation"),
        per_sample(ColorJitter, "hue"), per_sample(ColorJitter, "order", (b, 4)),
        per_sample(RandomGrayscale, "apply"),
        per_sample(RandomSolarize, "apply"), solarize[0].threshold if solarize else 0.0,
        mean, std, stat_stride,
        height, width, out_h, out_w,
        1.0 / 255.0 if images.dtype == torch.uint8 else 1.0, float(out_h), float(out_w),
        *images.stride(), *out.stride(),
        # ColorJitter.apply leaves hue alone on 1 channel and for hue=0 (no round trip through HSV).
        IS_RGB=c == 3, HUE=c == 3 and jitter is not None and jitter[0].hue > 0,
        CROP=crop is not None, FLIP=RandomHorizontalFlip in found, JITTER=jitter is not None,
        GRAY=RandomGrayscale in found, SOLARIZE=solarize is not None, NORMALIZE=normalize is not None,
        BLOCK=_BLOCK, num_warps=_NUM_WARPS,
    )
    return out


# The kernel computes each output pixel's source coordinate directly, where the torch path goes
# through grid_sample's normalised coordinates and back: equal in exact arithmetic, a few float32
# ulps apart otherwise. An ulp of a coordinate near 500 px is 3e-5 px, and an edge between two
# pixels turns it into the same error in the value, so outputs agree to about 1e-4 on large
# images and to float rounding on small ones.
#
# Integer arguments equal to 1 become compile-time constants when compiled, so none of them is
# used with tensor-only methods.
@jit
def _augment_kernel(
    src_ptr, out_ptr,
    top_ptr, left_ptr, crop_h_ptr, crop_w_ptr,
    flip_ptr,
    jitter_ptr, brightness_ptr, contrast_ptr, saturation_ptr, hue_ptr, order_ptr,
    gray_ptr,
    solarize_ptr, threshold,
    mean_ptr, std_ptr, stat_stride,
    H, W, OUT_H, OUT_W,
    unit_scale, out_h_f, out_w_f,
    src_sb, src_sc, src_sh, src_sw,
    out_sb, out_sc, out_sh, out_sw,
    IS_RGB: tl.constexpr, HUE: tl.constexpr,
    CROP: tl.constexpr, FLIP: tl.constexpr, JITTER: tl.constexpr, GRAY: tl.constexpr,
    SOLARIZE: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per image; int64 image offsets so large batches cannot overflow int32.
    n = tl.program_id(0).to(tl.int64)
    src = src_ptr + n * src_sb
    out = out_ptr + n * out_sb
    n_pix = OUT_H * OUT_W
    n_tiles = tl.cdiv(n_pix, BLOCK)

    if CROP:
        top = tl.load(top_ptr + n).to(tl.float32)
        left = tl.load(left_ptr + n).to(tl.float32)
        crop_h = tl.load(crop_h_ptr + n).to(tl.float32)
        crop_w = tl.load(crop_w_ptr + n).to(tl.float32)
        step_y = crop_h / out_h_f
        step_x = crop_w / out_w_f
    if FLIP:
        flipped = tl.load(flip_ptr + n) != 0

    # Tiles [0, n_tiles) are the mean pass, [n_tiles, 2 n_tiles) the pass that stores; without
    # jitter (or for a sample the jitter skips) there is no contrast, so the mean pass is skipped.
    first_tile = n_tiles
    if JITTER:
        jitter_on = tl.load(jitter_ptr + n) != 0
        first_tile = tl.where(jitter_on, 0, n_tiles)
        n_ops = tl.where(jitter_on, 4, 0)
        brightness = tl.load(brightness_ptr + n).to(tl.float32)
        contrast = tl.load(contrast_ptr + n).to(tl.float32)
        saturation = tl.load(saturation_ptr + n).to(tl.float32)
        hue = tl.load(hue_ptr + n).to(tl.float32)
        order = order_ptr + n * 4
        # The mean pass runs the ops before contrast in this sample's order.
        contrast_pos = tl.where(tl.load(order) == 1, 0,
                                tl.where(tl.load(order + 1) == 1, 1, tl.where(tl.load(order + 2) == 1, 2, 3)))
    if GRAY:
        gray_on = tl.load(gray_ptr + n) != 0
    if SOLARIZE:
        solarize_on = tl.load(solarize_ptr + n) != 0
    if NORMALIZE:
        # stat_stride is 0 for one mean/std shared by every channel.
        mean_r = tl.load(mean_ptr)
        mean_g = tl.load(mean_ptr + stat_stride)
        mean_b = tl.load(mean_ptr + 2 * stat_stride)
        std_r = tl.load(std_ptr)
        std_g = tl.load(std_ptr + stat_stride)
        std_b = tl.load(std_ptr + 2 * stat_stride)

    # Per-lane sums of the grey level over the mean pass; complete once the storing pass starts.
    gray_sum = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(first_tile, 2 * n_tiles):
        storing = t >= n_tiles
        pix = (t % n_tiles) * BLOCK + tl.arange(0, BLOCK)
        mask = pix < n_pix
        oy = pix // OUT_W
        ox = pix % OUT_W
        # A flipped sample's output column j is column OUT_W - 1 - j of its crop.
        sx = ox
        if FLIP:
            sx = tl.where(flipped, OUT_W - 1 - ox, ox)

        # Pixels are loaded as float32 times unit_scale: to_float's 1/255 for uint8 sources, 1 for float.
        if CROP:
            # RandomResizedCrop.apply: the source point of each output pixel centre, clamped to the
            # crop's outer pixel centres and, as grid_sample's border padding does, to the image.
            fx = left + (sx.to(tl.float32) + 0.5) * step_x - 0.5
            fy = top + (oy.to(tl.float32) + 0.5) * step_y - 0.5
            fx = tl.minimum(tl.maximum(fx, left), left + crop_w - 1.0)
            fy = tl.minimum(tl.maximum(fy, top), top + crop_h - 1.0)
            fx = tl.minimum(tl.maximum(fx, 0.0), W - 1.0)
            fy = tl.minimum(tl.maximum(fy, 0.0), H - 1.0)
            x0f = tl.floor(fx)
            y0f = tl.floor(fy)
            # Bilinear weights as grid_sample forms them; the far neighbour is clamped to the image
            # (its weight is 0 exactly when it would fall outside).
            wx0 = x0f + 1.0 - fx
            wx1 = fx - x0f
            wy0 = y0f + 1.0 - fy
            wy1 = fy - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            x1 = tl.minimum(x0 + 1, W - 1)
            y1 = tl.minimum(y0 + 1, H - 1)
            w00 = wx0 * wy0
            w01 = wx1 * wy0
            w10 = wx0 * wy1
            w11 = wx1 * wy1
            p00 = src + y0 * src_sh + x0 * src_sw
            p01 = src + y0 * src_sh + x1 * src_sw
            p10 = src + y1 * src_sh + x0 * src_sw
            p11 = src + y1 * src_sh + x1 * src_sw
            r = (tl.load(p00, mask=mask, other=0).to(tl.float32) * unit_scale * w00
                 + tl.load(p01, mask=mask, other=0).to(tl.float32) * unit_scale * w01
                 + tl.load(p10, mask=mask, other=0).to(tl.float32) * unit_scale * w10
                 + tl.load(p11, mask=mask, other=0).to(tl.float32) * unit_scale * w11)
            # On 1 channel g and b just alias r: only r is stored, the compiler drops their ops.
            g = r
            b = r
            if IS_RGB:
                g = (tl.load(p00 + src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w00
                     + tl.load(p01 + src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w01
                     + tl.load(p10 + src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w10
                     + tl.load(p11 + src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w11)
                b = (tl.load(p00 + 2 * src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w00
                     + tl.load(p01 + 2 * src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w01
                     + tl.load(p10 + 2 * src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w10
                     + tl.load(p11 + 2 * src_sc, mask=mask, other=0).to(tl.float32) * unit_scale * w11)
        else:
            p = src + oy * src_sh + sx * src_sw
            r = tl.load(p, mask=mask, other=0).to(tl.float32) * unit_scale
            g = r
            b = r
            if IS_RGB:
                g = tl.load(p + src_sc, mask=mask, other=0).to(tl.float32) * unit_scale
                b = tl.load(p + 2 * src_sc, mask=mask, other=0).to(tl.float32) * unit_scale

        if JITTER:
            gray_mean = tl.sum(gray_sum) / n_pix
            for pos in range(0, tl.where(storing, n_ops, contrast_pos)):
                op = tl.load(order + pos)
                if op == 0:  # brightness
                    r = tl.minimum(tl.maximum(r * brightness, 0.0), 1.0)
                    g = tl.minimum(tl.maximum(g * brightness, 0.0), 1.0)
                    b = tl.minimum(tl.maximum(b * brightness, 0.0), 1.0)
                elif op == 1:  # contrast: blend with the image's mean grey level
                    r = tl.minimum(tl.maximum(r * contrast + gray_mean * (1.0 - contrast), 0.0), 1.0)
                    g = tl.minimum(tl.maximum(g * contrast + gray_mean * (1.0 - contrast), 0.0), 1.0)
                    b = tl.minimum(tl.maximum(b * contrast + gray_mean * (1.0 - contrast), 0.0), 1.0)
                elif op == 2:  # saturation: blend with the pixel's grey level (a no-op on 1 channel)
                    if IS_RGB:
                        gray = 0.2989 * r + 0.587 * g + 0.114 * b
                        r = tl.minimum(tl.maximum(r * saturation + gray * (1.0 - saturation), 0.0), 1.0)
                        g = tl.minimum(tl.maximum(g * saturation + gray * (1.0 - saturation), 0.0), 1.0)
                        b = tl.minimum(tl.maximum(b * saturation + gray * (1.0 - saturation), 0.0), 1.0)
                else:  # hue: rotate in HSV as _rgb_to_hsv / _hsv_to_rgb (see HUE)
                    if HUE:
                        maxc = tl.maximum(tl.maximum(r, g), b)
                        minc = tl.minimum(tl.minimum(r, g), b)
                        delta = maxc - minc
                        flat = delta == 0
                        sat = delta / tl.where(maxc == 0, 1.0, maxc)
                        d = tl.where(flat, 1.0, delta)
                        rc = (maxc - r) / d
                        gc = (maxc - g) / d
                        bc = (maxc - b) / d
                        h = tl.where(maxc == r, bc - gc, tl.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
                        h = tl.where(flat, 0.0, h) / 6.0
                        # torch.remainder(., 1) as x - floor(x), which rounds the same.
                        h = h - tl.floor(h)
                        h = h + hue
                        h = h - tl.floor(h)
                        vs = maxc * sat
                        # k = (n + 6 h) mod 6 for n = 5, 3, 1; with h in [0, 1] one subtraction does it.
                        kr = 5.0 + 6.0 * h
                        kg = 3.0 + 6.0 * h
                        kb = 1.0 + 6.0 * h
                        kr = tl.where(kr >= 6.0, kr - 6.0, kr)
                        kg = tl.where(kg >= 6.0, kg - 6.0, kg)
                        kb = tl.where(kb >= 6.0, kb - 6.0, kb)
                        r = maxc - vs * tl.minimum(tl.maximum(tl.minimum(kr, 4.0 - kr), 0.0), 1.0)
                        g = maxc - vs * tl.minimum(tl.maximum(tl.minimum(kg, 4.0 - kg), 0.0), 1.0)
                        b = maxc - vs * tl.minimum(tl.maximum(tl.minimum(kb, 4.0 - kb), 0.0), 1.0)
                        r = tl.minimum(tl.maximum(r, 0.0), 1.0)
                        g = tl.minimum(tl.maximum(g, 0.0), 1.0)
                        b = tl.minimum(tl.maximum(b, 0.0), 1.0)

        if storing:
            if GRAY:
                if IS_RGB:
                    gray = 0.2989 * r + 0.587 * g + 0.114 * b
                    r = tl.where(gray_on, gray, r)
                    g = tl.where(gray_on, gray, g)
                    b = tl.where(gray_on, gray, b)
            if SOLARIZE:
                r = tl.where(solarize_on & (r >= threshold), 1.0 - r, r)
                g = tl.where(solarize_on & (g >= threshold), 1.0 - g, g)
                b = tl.where(solarize_on & (b >= threshold), 1.0 - b, b)
            if NORMALIZE:
                r = (r - mean_r) / std_r
                g = (g - mean_g) / std_g
                b = (b - mean_b) / std_b
            dst = out + oy * out_sh + ox * out_sw
            tl.store(dst, r.to(out_ptr.dtype.element_ty), mask=mask)
            if IS_RGB:
                tl.store(dst + out_sc, g.to(out_ptr.dtype.element_ty), mask=mask)
                tl.store(dst + 2 * out_sc, b.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            if IS_RGB:
                gray_sum += tl.where(mask, 0.2989 * r + 0.587 * g + 0.114 * b, 0.0)
            else:
                gray_sum += tl.where(mask, r, 0.0)
