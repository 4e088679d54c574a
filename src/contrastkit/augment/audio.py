"""Batched audio augmentations and the views the audio methods train on.

Every op takes a float batch on any device and a CPU ``torch.Generator``: its random draws are made
on the CPU and moved to the batch's device (as the image and series ops do), so a seed gives the
same views on a laptop and on a GPU. Waveform ops take (B, 1, L) clips zero-padded past their end
(:mod:`contrastkit.data.audio`); a clip's observed length is read from the batch as the place of
its last non-zero sample, and the ops work within it, leaving the padding zero. At zero strength
every op returns its input unchanged.

Waveform ops:

* :class:`RandomTimeCrop`: a random window of a share of each clip, moved to its start.
* :class:`Gain`: each clip scaled by a gain drawn uniformly in decibels.
* :class:`AddNoise`: white Gaussian noise at a signal-to-noise ratio drawn uniformly in decibels
  (signal power measured over the clip's observed part).
* :class:`TimeShift`: each clip rolled circularly within its observed part by a random share.
* :class:`SpeedPerturbation`: each clip played faster or slower by a random factor (tempo and pitch).

Log-mel ops (SpecAugment, Park et al., 2019), on (B, 1, n_mels, frames):

* :class:`FrequencyMasking` and :class:`TimeMasking`: bands of up to ``max_width`` mel bins or
  frames set to each clip's mean log-mel value.

:class:`AudioViews` makes the views: per view, the waveform ops, then (for log-mel encoders) the
encoder's front end and the SpecAugment masks. :func:`audio_preset` builds them by name.

Example:
    >>> views = audio_preset("simclr")
    >>> [view.shape for view in views(torch.randn(4, 1, 800), generator=torch.Generator().manual_seed(0))]
    [torch.Size([4, 1, 800]), torch.Size([4, 1, 800])]
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit.errors import ConfigError, InputError

AUDIO_PRESETS = ("simclr", "cola")
AudioTransform = Callable[..., Tensor]


def _check_batch(x: Tensor, ndim: int, layout: str) -> None:
    check_ndim("audio", x, ndim, layout)
    if not x.is_floating_point():
        raise InputError(f"audio must be a floating-point tensor {layout}, got dtype {x.dtype}; convert with .float().")


def _check_range(name: str, low: float, high: float) -> tuple[float, float]:
    for value in (low, high):
        if not (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)):
            raise ConfigError(f"{name} must be two finite numbers (low, high), got {low!r}, {high!r}.")
    if low > high:
        raise ConfigError(f"{name} must satisfy low <= high, got {low}, {high}.")
    return float(low), float(high)


def _check_share(name: str, value: float) -> float:
    if not (isinstance(value, Real) and not isinstance(value, bool) and 0 <= value <= 1):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}.")
    return float(value)


def _check_count(name: str, value: int) -> int:
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"{name} must be an integer >= 0 (0 turns it off), got {value!r}.")
    return int(value)


def _uniform(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws made on the CPU and moved to x's device."""
    return torch.rand(shape, generator=generator).to(x.device, non_blocking=True)


def observed_lengths(x: Tensor) -> Tensor:
    """int64 (B,): each clip's length up to and including its last non-zero sample (a silent clip: 0).

    Example:
        >>> observed_lengths(torch.tensor([[[1.0, 0.0, 2.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]))
        tensor([3, 0])
    """
    nonzero = (x != 0).any(dim=1)
    # argmax gives the first maximum: on the reversed row, the last non-zero sample.
    last = x.shape[-1] - nonzero.flip(-1).to(torch.uint8).argmax(dim=1)
    return torch.where(nonzero.any(dim=1), last, torch.zeros_like(last))


def _inside(x: Tensor, lengths: Tensor) -> Tensor:
    """bool (B, 1, L): True within each clip's observed part."""
    return (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None])[:, None, :]


# ----------------------------------------------------------------------------- waveform ops


class RandomTimeCrop:
    """Keep a random window of each clip: its length a share drawn uniformly in [min_ratio, 1] of
    the clip's observed length, moved to the start, the rest zero.

    Example:
        >>> clip = torch.arange(1.0, 9.0).view(1, 1, 8)
        >>> RandomTimeCrop(1.0)(clip, torch.Generator().manual_seed(0)).equal(clip)
        True
    """

    def __init__(self, min_ratio: float = 0.8) -> None:
        self.min_ratio = _check_share("min_ratio", min_ratio)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x, 3, "(B, 1, L)")
        batch = x.shape[0]
        ratio_draw, start_draw = _uniform((batch,), x, generator), _uniform((batch,), x, generator)
        lengths = observed_lengths(x)
        ratio = self.min_ratio + (1 - self.min_ratio) * ratio_draw
        width = torch.minimum((ratio * lengths).round().long().clamp(min=1), lengths)
        start = ((lengths - width + 1) * start_draw).floor().long().clamp(min=0)
        time = torch.arange(x.shape[-1], device=x.device)[None, :]
        source = (start[:, None] + time).clamp(max=x.shape[-1] - 1)
        cropped = x.gather(2, source[:, None, :].expand(-1, x.shape[1], -1))
        return torch.where(_inside(x, width), cropped, torch.zeros_like(x))


class Gain:
    """Scale each clip by 10^(g / 20), g drawn uniformly in [min_db, max_db].

    Example:
        >>> Gain(6.0, 6.0)(torch.ones(1, 1, 3), torch.Generator().manual_seed(0))
        tensor([[[1.9953, 1.9953, 1.9953]]])
    """

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0) -> None:
        self.min_db, self.max_db = _check_range("gain (min_db, max_db)", min_db, max_db)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x, 3, "(B, 1, L)")
        decibels = self.min_db + (self.max_db - self.min_db) * _uniform((x.shape[0], 1, 1), x, generator)
        return x * (10.0 ** (decibels / 20.0)).to(x.dtype)


class AddNoise:
    """Add white Gaussian noise within each clip's observed part at a signal-to-noise ratio drawn
    uniformly in [min_snr_db, max_snr_db]: noise power = signal power / 10^(snr / 10), the powers
    being mean squares over the observed part. ``probability`` is the share of clips noised.

    Example:
        >>> AddNoise(probability=0.0)(torch.ones(2, 1, 4), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 30.0, probability: float = 0.8) -> None:
        self.min_snr_db, self.max_snr_db = _check_range("snr (min_snr_db, max_snr_db)", min_snr_db, max_snr_db)
        self.probability = _check_share("probability", probability)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x, 3, "(B, 1, L)")
        batch = x.shape[0]
        snr = self.min_snr_db + (self.max_snr_db - self.min_snr_db) * _uniform((batch,), x, generator)
        applied = _uniform((batch,), x, generator) < self.probability
        noise = torch.randn(tuple(x.shape), generator=generator).to(x.device, non_blocking=True).to(x.dtype)
        lengths = observed_lengths(x)
        inside = _inside(x, lengths)
        signal_power = (x ** 2).sum(dim=(1, 2)) / (lengths * x.shape[1]).clamp(min=1)
        scale = torch.sqrt(signal_power / 10.0 ** (snr / 10.0)) * applied
        return x + torch.where(inside, noise, torch.zeros_like(noise)) * scale[:, None, None].to(x.dtype)


class TimeShift:
    """Roll each clip circularly within its observed part by a shift drawn uniformly in
    [-max_share, max_share] of that length; the samples are only reordered.

    Example:
        >>> clip = torch.arange(1.0, 6.0).view(1, 1, 5)
        >>> TimeShift(0.0)(clip, torch.Generator().manual_seed(0)).equal(clip)
        True
    """

    def __init__(self, max_share: float = 0.1) -> None:
        self.max_share = _check_share("max_share", max_share)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x, 3, "(B, 1, L)")
        lengths = observed_lengths(x)
        shares = self.max_share * (2 * _uniform((x.shape[0],), x, generator) - 1)
        shift = (shares * lengths).round().long()
        time = torch.arange(x.shape[-1], device=x.device)[None, :]
        source = torch.remainder(time - shift[:, None], lengths.clamp(min=1)[:, None])
        source = torch.where(time < lengths[:, None], source, time)
        return x.gather(2, source[:, None, :].expand(-1, x.shape[1], -1))


class SpeedPerturbation:
    """Play each clip faster or slower by a factor f drawn uniformly in [min_factor, max_factor]
    (Kaldi's speed perturbation, which shifts tempo and pitch together): output sample j is the
    clip at time j * f, linearly interpolated, so the observed length becomes about length / f;
    past it (and past the buffer's end when slowed) the clip is cut and zero.

    Example:
        >>> clip = torch.arange(1.0, 9.0).view(1, 1, 8)
        >>> SpeedPerturbation(2.0, 2.0)(clip, torch.Generator().manual_seed(0))
        tensor([[[1., 3., 5., 7., 0., 0., 0., 0.]]])
    """

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1) -> None:
        self.min_factor, self.max_factor = _check_range("speed factors (min_factor, max_factor)", min_factor,
                                                        max_factor)
        if self.min_factor <= 0:
            raise ConfigError(f"speed factors must be > 0 (1.0 keeps the speed), got {min_factor!r}.")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x, 3, "(B, 1, L)")
        factor = self.min_factor + (self.max_factor - self.min_factor) * _uniform((x.shape[0],), x, generator)
        lengths = observed_lengths(x)
        # Positions in float64: at a million samples float32 would round them by more than a sample.
        position = torch.arange(x.shape[-1], device=x.device, dtype=torch.float64)[None, :] * factor[:, None].double()
        left = position.floor().long()
        inside = (position <= (lengths[:, None] - 1)) & (lengths[:, None] > 0)
        left = torch.minimum(left, (lengths[:, None] - 1).clamp(min=0))
        right = torch.minimum(left + 1, (lengths[:, None] - 1).clamp(min=0))
        weight = (position - left).clamp(0, 1).to(x.dtype)[:, None, :]
        gather = lambda index: x.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))  # noqa: E731
        played = gather(left) * (1 - weight) + gather(right) * weight
        return torch.where(inside[:, None, :], played, torch.zeros_like(x))


# ----------------------------------------------------------------------------- log-mel ops


class _BandMasking:
    """``count`` bands per clip along ``axis`` of (B, 1, n_mels, frames), each of a width drawn
    uniformly in [0, max_width] at a uniform start, set to the clip's mean log-mel value."""

    axis: int

    def __init__(self, max_width: int = 8, count: int = 2) -> None:
        self.max_width = _check_count("max_width", max_width)
        self.count = _check_count("count", count)

    def mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """bool (B, size along the axis): True at the masked bins or frames."""
        _check_batch(x, 4, "(B, 1, n_mels, frames)")
        batch, size = x.shape[0], x.shape[self.axis]
        width = (_uniform((batch, self.count), x, generator) * (min(self.max_width, size) + 1)).floor()
        start = (_uniform((batch, self.count), x, generator) * (size - width + 1)).floor()
        position = torch.arange(size, device=x.device, dtype=width.dtype)[None, None, :]
        inside = (position >= start[..., None]) & (position < (start + width)[..., None])
        return inside.any(dim=1)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        masked = self.mask(x, generator)
        shape = (x.shape[0], 1, -1, 1) if self.axis == 2 else (x.shape[0], 1, 1, -1)
        return torch.where(masked.view(shape), x.mean(dim=(2, 3), keepdim=True), x)


class FrequencyMasking(_BandMasking):
    """SpecAugment's frequency masks: ``count`` bands of up to ``max_width`` mel bins per clip.

    Example:
        >>> FrequencyMasking(0)(torch.ones(2, 1, 40, 10), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    axis = 2


class TimeMasking(_BandMasking):
    """SpecAugment's time masks: ``count`` spans of up to ``max_width`` frames per clip.

    Example:
        >>> TimeMasking(0)(torch.ones(2, 1, 40, 10), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    axis = 3


# ----------------------------------------------------------------------------- views


class AudioCompose:
    """Apply ``transforms`` in order, all drawing from one generator.

    Example:
        >>> AudioCompose([Gain(0.0, 0.0)])(torch.ones(1, 1, 3), torch.Generator().manual_seed(0)).unique()
        tensor([1.])
    """

    def __init__(self, transforms: Sequence[AudioTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x


class AudioViews:
    """One view per waveform transform: the waveform ops, then, where a front end is given (a
    log-mel encoder's :class:`contrastkit.models.audio.LogMel`), the front end and the
    spectrogram ops.

    Args:
        transforms: one waveform op (or composition) per view.
        frontend: waveforms to features (None: the views are waveforms).
        spectrogram: ops on the front end's output, applied to every view.

    Example:
        >>> views = AudioViews([Gain(), Gain()])
        >>> len(views(torch.randn(2, 1, 100), generator=torch.Generator().manual_seed(0)))
        2
    """

    def __init__(self, transforms: Sequence[AudioTransform], frontend: Callable[[Tensor], Tensor] | None = None,
                 spectrogram: Sequence[AudioTransform] = ()) -> None:
        if not transforms:
            raise ConfigError("AudioViews needs at least one transform (one per view).")
        self.transforms = list(transforms)
        self.frontend = frontend
        self.spectrogram = AudioCompose(spectrogram)

    def to(self, device: str | torch.device) -> "AudioViews":
        """Itself: the views are made on the batch's device (the front end moves with the encoder)."""
        return self

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        _check_batch(batch, 3, "(B, 1, L)")
        views = [transform(batch, generator) for transform in self.transforms]
        if self.frontend is None:
            return views
        with torch.no_grad():
            return [self.spectrogram(self.frontend(view), generator) for view in views]


def audio_preset(name: str, frontend: Callable[[Tensor], Tensor] | None = None, **options: Any) -> AudioViews:
    """The named view recipe for audio batches.

    * ``"simclr"``: two views, each a random time crop (``min_crop`` 0.8 of the clip), a time shift
      (``max_shift`` 0.1), a gain (``gain_db`` ±6 dB) and white noise at 10 to 30 dB SNR
      (``min_snr_db``, ``max_snr_db``, ``noise_probability`` 0.8); with a log-mel ``frontend``,
      SpecAugment after it: 2 frequency masks of up to ``freq_mask`` 6 bins and 2 time masks of up
      to ``time_mask`` 10 frames; ``speed`` > 0 adds a speed perturbation by a factor in
      [1 - speed, 1 + speed] first (off by default: a speaker's pitch is part of who speaks).
    * ``"cola"``: two segments of one clip as the positives (COLA, Saeed et al., 2021): each view
      a random time crop of ``min_crop`` 0.5 to all of the clip and nothing else (no SpecAugment).

    Args:
        name: the preset.
        frontend: a log-mel encoder's front end (None: waveform views).
        options: the preset's options above.

    Example:
        >>> len(audio_preset("simclr", gain_db=3.0).transforms)
        2
    """
    defaults = {"simclr": dict(min_crop=0.8, max_shift=0.1, gain_db=6.0, min_snr_db=10.0, max_snr_db=30.0,
                               noise_probability=0.8, freq_mask=6, time_mask=10, speed=0.0),
                "cola": dict(min_crop=0.5)}
    if name not in defaults:
        raise ConfigError(f"unknown audio preset {name!r}; choose one of {', '.join(AUDIO_PRESETS)}.")
    unknown = sorted(set(options) - set(defaults[name]))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} of audio preset {name!r}; its options: "
                          f"{', '.join(defaults[name])}.")
    settings = {**defaults[name], **options}
    if name == "cola":
        segment = RandomTimeCrop(settings["min_crop"])
        return AudioViews([segment, segment], frontend=frontend)
    speed = settings["speed"]
    if not (isinstance(speed, Real) and 0 <= speed < 1):
        raise ConfigError(f"speed must be a number in [0, 1) (0 turns it off; 0.1 plays at 0.9 to 1.1x), "
                          f"got {speed!r}.")
    view = AudioCompose([SpeedPerturbation(1 - speed, 1 + speed)] * (speed > 0) +
                        [RandomTimeCrop(settings["min_crop"]), TimeShift(settings["max_shift"]),
                         Gain(-settings["gain_db"], settings["gain_db"]),
                         AddNoise(settings["min_snr_db"], settings["max_snr_db"], settings["noise_probability"])])
    spectrogram = [FrequencyMasking(settings["freq_mask"]), TimeMasking(settings["time_mask"])]
    return AudioViews([view, view], frontend=frontend, spectrogram=spectrogram if frontend is not None else ())
