"""Batched time series augmentations and the views the series methods train on.

Every op takes a float batch (B, C, T) on any device and a CPU ``torch.Generator``: its random
draws are made on the CPU (as the image augmentations' are) and moved to the batch's device, so a
seed gives the same views on a laptop and on a GPU. Series may be NaN-padded past their end
(unequal lengths, :mod:`contrastkit.data.series`); the ops that move values in time (warps, crops,
permutations) work within each series' observed length and leave the padding NaN, the others
leave NaN as NaN. At zero strength every op returns its input unchanged.

Ops (Um et al., 2017; Le Guennec et al., 2016; Yue et al., 2022):

* :class:`Jitter`: additive Gaussian noise.
* :class:`Scaling`: each series and channel multiplied by one random factor around 1.
* :class:`MagnitudeWarp`: multiplied by a smooth random curve around 1 (Catmull-Rom cubic
  through random knots).
* :class:`TimeWarp`: resampled along a smooth, strictly increasing random time map that keeps
  both ends in place.
* :class:`WindowCrop`: window slicing, a random window stretched back to the series' length.
* :class:`SegmentPermutation`: cut into random segments and put back in random order.
* :class:`TimeMasking`: TS2Vec's binomial timestamp masking on the input, masked timesteps set to 0
  in every channel (the ts2vec method masks inside the encoder instead, see
  :class:`OverlappingCrops`).

Views: :class:`SeriesViews` makes one augmented tensor per view (SimCLR-style methods), and
:class:`OverlappingCrops` TS2Vec's two overlapping crops with their masks; :func:`series_preset`
builds either by name. Their instances are called as ``views = augment(batch, generator=generator)``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit._series_padding import observed_lengths
from contrastkit.errors import ConfigError, InputError

SeriesTransform = Callable[..., Tensor]

SERIES_PRESETS = ("ts2vec", "simclr")


# ----------------------------------------------------------------------------- checks and draws


def _check_series(x: Tensor) -> None:
    check_ndim("series", x, 3, "(B, C, T)")
    if not x.is_floating_point():
        raise InputError(f"series must be a floating-point tensor (B, C, T), got dtype {x.dtype}; convert with "
                         ".float().")


def _check_strength(name: str, value: float, *, upper: float = math.inf) -> float:
    if not (isinstance(value, Real) and not isinstance(value, bool) and 0 <= value <= upper):
        bound = f"in [0, {upper}]" if upper != math.inf else ">= 0 (0 leaves the series unchanged)"
        raise ConfigError(f"{name} must be a number {bound}, got {value!r}.")
    return float(value)


def _check_count(name: str, value: int, minimum: int) -> int:
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _normal(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws made on the CPU and moved to x's device."""
    return torch.randn(shape, generator=generator).to(x.device, non_blocking=True)


def _uniform(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws made on the CPU and moved to x's device."""
    return torch.rand(shape, generator=generator).to(x.device, non_blocking=True)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer uniform in [low, high] (both included), drawn on the CPU."""
    return int(torch.randint(low, high + 1, (), generator=generator))


# ----------------------------------------------------------------------------- time geometry


def _timesteps(x: Tensor) -> Tensor:
    """Positions 0..T-1 as a float (1, T) row on x's device."""
    return torch.arange(x.shape[2], device=x.device, dtype=x.dtype)[None, :]


def _resample(x: Tensor, positions: Tensor, lengths: Tensor) -> Tensor:
    """x read at fractional ``positions`` (B, T) by linear interpolation within each series'
    observed length; timesteps past a series' length keep x's values there (NaN padding)."""
    last = (lengths - 1).clamp(min=0)[:, None]
    positions = torch.minimum(positions.clamp(min=0), last.to(positions.dtype))
    lower = positions.floor().long()
    upper = torch.minimum(lower + 1, last)  # never reads the padding, even with zero weight
    weight = (positions - lower.to(positions.dtype))[:, None, :]
    channels = x.shape[1]
    left = x.gather(2, lower[:, None, :].expand(-1, channels, -1))
    right = x.gather(2, upper[:, None, :].expand(-1, channels, -1))
    resampled = left + weight * (right - left)
    inside = torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]
    return torch.where(inside[:, None, :], resampled, x)


def _knot_coordinates(x: Tensor, lengths: Tensor, knots: int) -> tuple[Tensor, Tensor]:
    """For every timestep, the knot interval it falls in and its place in it: knots + 2 points
    spread evenly over each series' observed length (both ends included)."""
    span = (lengths - 1).clamp(min=1).to(x.dtype)[:, None]
    coordinate = (_timesteps(x) / span).clamp(max=1.0) * (knots + 1)
    interval = coordinate.floor().long().clamp(max=knots)
    return interval, coordinate - interval.to(x.dtype)


def _cubic_curve(values: Tensor, interval: Tensor, offset: Tensor) -> Tensor:
    """Catmull-Rom spline through ``values`` (B, K, knots + 2) at the given knot coordinates
    (B, T): it passes through every knot and has a continuous slope."""
    count = values.shape[2]
    groups = values.shape[1]

    def knot(shift: int) -> Tensor:
        index = (interval + shift).clamp(0, count - 1)[:, None, :].expand(-1, groups, -1)
        return values.gather(2, index)

    p0, p1, p2, p3 = knot(-1), knot(0), knot(1), knot(2)
    w = offset[:, None, :]
    return 0.5 * (2 * p1 + (p2 - p0) * w + (2 * p0 - 5 * p1 + 4 * p2 - p3) * w ** 2
                  + (3 * p1 - p0 - 3 * p2 + p3) * w ** 3)


# ----------------------------------------------------------------------------- ops


class Jitter:
    """Add N(0, sigma^2) noise to every value.

    Example:
        >>> Jitter(0.0)(torch.ones(2, 1, 5), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    def __init__(self, sigma: float = 0.03) -> None:
        self.sigma = _check_strength("sigma", sigma)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        return x + self.sigma * _normal(tuple(x.shape), x, generator).to(x.dtype)


class Scaling:
    """Multiply each series and channel by one factor drawn from N(1, sigma^2).

    Example:
        >>> Scaling(0.1)(torch.ones(2, 3, 5), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 5])
    """

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = _check_strength("sigma", sigma)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        factors = 1 + self.sigma * _normal((x.shape[0], x.shape[1], 1), x, generator)
        return x * factors.to(x.dtype)


class MagnitudeWarp:
    """Multiply each series and channel by a smooth curve through ``knots + 2`` values drawn from
    N(1, sigma^2), spread evenly over the series' observed length (Catmull-Rom interpolation).

    Example:
        >>> MagnitudeWarp(0.2, knots=4)(torch.ones(2, 1, 50), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 50])
    """

    def __init__(self, sigma: float = 0.2, knots: int = 4) -> None:
        self.sigma = _check_strength("sigma", sigma)
        self.knots = _check_count("knots", knots, 0)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        values = 1 + self.sigma * _normal((x.shape[0], x.shape[1], self.knots + 2), x, generator).to(x.dtype)
        interval, offset = _knot_coordinates(x, observed_lengths(x), self.knots)
        return x * _cubic_curve(values, interval, offset)


class TimeWarp:
    """Resample each series along a random time map tau: [0, L-1] -> [0, L-1] that is smooth,
    strictly increasing and keeps both ends (tau(0) = 0, tau(L-1) = L-1).

    The map's speed is log-normal, exp(sigma * N(0, 1)), at ``knots + 2`` points spread over the
    observed length and linear in between, so always positive; tau is its running integral
    (trapezoid rule) scaled to end at L - 1. All channels share one map.

    Example:
        >>> ramp = torch.arange(10.0).view(1, 1, 10)
        >>> TimeWarp(0.0)(ramp, torch.Generator().manual_seed(0)).equal(ramp)
        True
    """

    def __init__(self, sigma: float = 0.2, knots: int = 4) -> None:
        self.sigma = _check_strength("sigma", sigma)
        self.knots = _check_count("knots", knots, 0)

    def time_map(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The positions (B, T) each output timestep reads from (past a series' length: unused)."""
        _check_series(x)
        speeds_at_knots = torch.exp(self.sigma * _normal((x.shape[0], 1, self.knots + 2), x, generator)).to(x.dtype)
        lengths = observed_lengths(x)
        interval, offset = _knot_coordinates(x, lengths, self.knots)
        low = speeds_at_knots.gather(2, interval[:, None, :]).squeeze(1)
        high = speeds_at_knots.gather(2, (interval + 1).clamp(max=self.knots + 1)[:, None, :]).squeeze(1)
        speed = low + offset * (high - low)
        steps = (speed[:, 1:] + speed[:, :-1]) / 2
        elapsed = torch.cat([torch.zeros_like(speed[:, :1]), steps.cumsum(dim=1)], dim=1)
        last = (lengths - 1).clamp(min=0)
        total = elapsed.gather(1, last[:, None])
        # (L - 1) / total is exactly 1 for a constant speed, so sigma = 0 maps every timestep to itself.
        return elapsed * (last[:, None].to(x.dtype) / torch.where(total > 0, total, torch.ones_like(total)))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _resample(x, self.time_map(x, generator), observed_lengths(x))


class WindowCrop:
    """Window slicing: a random window of ``ratio`` times each series' observed length (at least 2
    timesteps), stretched back to that length by linear interpolation.

    Example:
        >>> ramp = torch.arange(10.0).view(1, 1, 10)
        >>> WindowCrop(1.0)(ramp, torch.Generator().manual_seed(0)).equal(ramp)
        True
    """

    def __init__(self, ratio: float = 0.9) -> None:
        if not (isinstance(ratio, Real) and not isinstance(ratio, bool) and 0 < ratio <= 1):
            raise ConfigError(f"ratio must lie in (0, 1] (1 keeps the whole series), got {ratio!r}.")
        self.ratio = float(ratio)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        lengths = observed_lengths(x)
        width = torch.minimum((self.ratio * lengths).round().clamp(min=2), lengths.clamp(min=1)).to(x.dtype)
        start = ((lengths.to(x.dtype) - width + 1) * _uniform((x.shape[0],), x, generator).to(x.dtype)).floor()
        stretch = (width - 1) / (lengths - 1).clamp(min=1).to(x.dtype)
        return _resample(x, start[:, None] + _timesteps(x) * stretch[:, None], lengths)


class SegmentPermutation:
    """Cut each series (its observed part) at random points into 1 to ``max_segments`` segments and
    concatenate them in random order; the values are only reordered.

    Example:
        >>> x = torch.arange(12.0).view(1, 1, 12)
        >>> out = SegmentPermutation(4)(x, torch.Generator().manual_seed(1))
        >>> out.sort(dim=2).values.equal(x)
        True
    """

    def __init__(self, max_segments: int = 5) -> None:
        self.max_segments = _check_count("max_segments", max_segments, 1)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        batch, most = x.shape[0], self.max_segments
        segments = (_uniform((batch,), x, generator) * most).long().clamp(max=most - 1) + 1
        cut_draws = _uniform((batch, most - 1), x, generator)
        order_keys = _uniform((batch, most), x, generator)
        lengths = observed_lengths(x)
        # A cut beyond the sample's segment count goes to the end, leaving an empty last segment.
        cuts = (cut_draws * lengths[:, None]).long()
        active = torch.arange(most - 1, device=x.device)[None, :] < segments[:, None] - 1
        cuts = torch.where(active, cuts, lengths[:, None]).sort(dim=1).values
        starts = torch.cat([lengths.new_zeros(batch, 1), cuts], dim=1)
        ends = torch.cat([cuts, lengths[:, None]], dim=1)
        # Empty segments can sit anywhere in the order: they take no room.
        order = order_keys.argsort(dim=1)
        sizes, sources = (ends - starts).gather(1, order), starts.gather(1, order)
        placed_ends = sizes.cumsum(dim=1)
        time = torch.arange(x.shape[2], device=x.device)[None, :].expand(batch, -1).contiguous()
        segment = torch.searchsorted(placed_ends, time, right=True).clamp(max=most - 1)
        source = sources.gather(1, segment) + time - (placed_ends - sizes).gather(1, segment)
        source = torch.where(time < lengths[:, None], source, time)
        return x.gather(2, source[:, None, :].expand(-1, x.shape[1], -1))


class TimeMasking:
    """TS2Vec's timestamp masking on the input: each timestep is masked independently with
    probability ``ratio``, its values set to 0 in every channel (NaN padding stays NaN).

    Example:
        >>> TimeMasking(0.0)(torch.ones(2, 3, 5), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = _check_strength("ratio", ratio, upper=1.0)

    def mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """bool (B, T): True at the timesteps to mask."""
        return _uniform((x.shape[0], x.shape[2]), x, generator) < self.ratio

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_series(x)
        masked = self.mask(x, generator)[:, None, :] & ~torch.isnan(x)
        return x.masked_fill(masked, 0.0)


class SeriesCompose:
    """Apply ``transforms`` in order, all drawing from one generator.

    Example:
        >>> augment = SeriesCompose([Jitter(0.0), Scaling(0.0)])
        >>> augment(torch.ones(2, 1, 4), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    def __init__(self, transforms: Sequence[SeriesTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x


# ----------------------------------------------------------------------------- views


class SeriesViews:
    """One augmented copy of a series batch per transform: the views of SimCLR-style methods.

    Example:
        >>> views = SeriesViews([Jitter(0.1), Scaling(0.1)])
        >>> [view.shape for view in views(torch.zeros(4, 1, 16), generator=torch.Generator().manual_seed(0))]
        [torch.Size([4, 1, 16]), torch.Size([4, 1, 16])]
    """

    def __init__(self, transforms: Sequence[SeriesTransform]) -> None:
        if not transforms:
            raise ConfigError("SeriesViews needs at least one transform (one per view).")
        self.transforms = list(transforms)

    def to(self, device: str | torch.device) -> "SeriesViews":
        """Itself: the views are made on the batch's device."""
        return self

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        _check_series(batch)
        return [transform(batch, generator) for transform in self.transforms]


class OverlappingCrops:
    """TS2Vec's contextual views: two crops of a batch that overlap, with timestamp masks.

    Drawn once per batch: an overlap [a2, b1) of ``min_overlap`` to T timesteps, the first crop
    [a1, b1) extending it to the left by a random amount and the second [a2, b2) to the right
    (0 <= a1 <= a2 < b1 <= b2 <= T), then all of it shifted by a random offset per sample, kept
    within [0, T). The same timesteps thus sit in different contexts in the two crops. Batches
    longer than ``max_length`` are first cut to a random window of that length (TS2Vec's
    ``max_train_length``, which bounds the memory of a step).

    Each view is a dict: ``values`` (B, C, crop length), ``timestep_mask`` (B, crop length) bool,
    False at timesteps to hide from the encoder (each with probability ``mask_ratio``), and the
    overlap's place in the crop, ``overlap_start`` and ``overlap_length`` (0-dim int64 CPU
    tensors: the method slices with them, with no device sync).

    Example:
        >>> crops = OverlappingCrops()
        >>> first, second = crops(torch.randn(4, 1, 50), generator=torch.Generator().manual_seed(0))
        >>> first["values"][..., first["overlap_start"]:][..., :first["overlap_length"]].equal(
        ...     second["values"][..., :second["overlap_length"]])
        True
    """

    def __init__(self, max_length: int = 3000, min_overlap: int = 2, mask_ratio: float = 0.5) -> None:
        self.max_length = _check_count("max_length", max_length, 2)
        self.min_overlap = _check_count("min_overlap", min_overlap, 1)
        if self.min_overlap > self.max_length:
            raise ConfigError(f"min_overlap ({min_overlap}) cannot exceed max_length ({max_length}).")
        self.mask_ratio = _check_strength("mask_ratio", mask_ratio, upper=1.0)

    def to(self, device: str | torch.device) -> "OverlappingCrops":
        """Itself: the crops are made on the batch's device."""
        return self

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> list[dict[str, Tensor]]:
        _check_series(batch)
        length = batch.shape[2]
        if length < self.min_overlap:
            raise InputError(f"series of length {length} are shorter than min_overlap={self.min_overlap}; lower "
                             "min_overlap (or the method's temporal_unit).")
        if length > self.max_length:
            start = _randint(0, length - self.max_length, generator)
            batch, length = batch[:, :, start:start + self.max_length], self.max_length
        overlap = _randint(self.min_overlap, length, generator)
        overlap_start = _randint(0, length - overlap, generator)
        overlap_end = overlap_start + overlap
        first_start = _randint(0, overlap_start, generator)
        second_end = _randint(overlap_end, length, generator)
        shifts = torch.randint(-first_start, length - second_end + 1, (batch.shape[0],), generator=generator)
        shifts = shifts.to(batch.device, non_blocking=True)
        views = []
        # (crop start, crop end, where the overlap starts inside the crop) of the two crops
        crops = ((first_start, overlap_end, overlap_start - first_start), (overlap_start, second_end, 0))
        for start, end, inner in crops:
            index = torch.arange(start, end, device=batch.device)[None, :] + shifts[:, None]
            values = batch.gather(2, index[:, None, :].expand(-1, batch.shape[1], -1))
            keep = _uniform((batch.shape[0], end - start), batch, generator) >= self.mask_ratio
            views.append({"values": values, "timestep_mask": keep, "overlap_start": torch.tensor(inner),
                          "overlap_length": torch.tensor(overlap)})
        return views


def series_preset(name: str, **options: Any) -> SeriesViews | OverlappingCrops:
    """The named view recipe for series batches.

    * ``"ts2vec"``: :class:`OverlappingCrops` (options: ``max_length``, ``min_overlap``,
      ``mask_ratio``).
    * ``"simclr"``: two views, each a window crop, a time warp, a scaling and jitter (options:
      ``crop_ratio`` 0.9, ``warp_sigma`` 0.2, ``scaling_sigma`` 0.1, ``jitter_sigma`` 0.03).

    Example:
        >>> type(series_preset("ts2vec", max_length=1000)).__name__
        'OverlappingCrops'
    """
    defaults = {"ts2vec": dict(max_length=3000, min_overlap=2, mask_ratio=0.5),
                "simclr": dict(crop_ratio=0.9, warp_sigma=0.2, scaling_sigma=0.1, jitter_sigma=0.03)}
    if name not in defaults:
        raise ConfigError(f"unknown series preset {name!r}; choose one of {', '.join(SERIES_PRESETS)}.")
    unknown = sorted(set(options) - set(defaults[name]))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} of series preset {name!r}; its options: "
                          f"{', '.join(defaults[name])}.")
    settings = {**defaults[name], **options}
    if name == "ts2vec":
        return OverlappingCrops(**settings)
    view = SeriesCompose([WindowCrop(settings["crop_ratio"]), TimeWarp(settings["warp_sigma"]),
                          Scaling(settings["scaling_sigma"]), Jitter(settings["jitter_sigma"])])
    return SeriesViews([view, view])
