"""Audio augmentations: each op's invariants, zero strength as identity, seeding, and the views."""

import pytest
import torch

from contrastkit.augment.audio import (AddNoise, AudioViews, FrequencyMasking, Gain, RandomTimeCrop,
                                       SpeedPerturbation, TimeMasking, TimeShift, audio_preset, observed_lengths)
from contrastkit.errors import ConfigError, InputError
from contrastkit.models.audio import LogMel


def _clips(batch=6, length=400, seed=0, shortest=150):
    """Random clips zero-padded past lengths of ``shortest`` to ``length`` samples."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, length, generator=generator)
    lengths = torch.linspace(shortest, length, batch).long()
    x[torch.arange(length)[None, None, :].expand(batch, 1, -1) >= lengths[:, None, None]] = 0
    return x, lengths


def _seeded(op, x, seed=3):
    return op(x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", [RandomTimeCrop(0.5), Gain(), AddNoise(probability=1.0), TimeShift(0.3),
                                SpeedPerturbation(), FrequencyMasking(5), TimeMasking(5)],
                         ids=lambda op: type(op).__name__)
def test_each_op_is_reproducible_from_its_seed_and_differs_across_seeds(op):
    x = _clips()[0] if not isinstance(op, (FrequencyMasking, TimeMasking)) else torch.randn(6, 1, 20, 30)
    assert torch.equal(_seeded(op, x), _seeded(op, x))
    assert not torch.equal(_seeded(op, x, 1), _seeded(op, x, 2))
    assert _seeded(op, x).shape == x.shape


def test_observed_lengths_read_the_zero_padding():
    x, lengths = _clips()
    assert torch.equal(observed_lengths(x), lengths)


def test_time_crop_keeps_a_contiguous_window_of_the_share_asked_for_at_the_start():
    x, lengths = _clips()
    out = _seeded(RandomTimeCrop(0.5), x)
    kept = observed_lengths(out)
    assert ((kept >= (0.5 * lengths).round() - 1) & (kept <= lengths)).all()
    for clip, source, width in zip(out[:, 0], x[:, 0], kept.tolist()):
        windows = source.unfold(0, width, 1)
        assert (windows == clip[:width]).all(dim=1).any()  # some window of the input, unchanged
        assert (clip[width:] == 0).all()
    assert torch.equal(_seeded(RandomTimeCrop(1.0), x), x)


def test_gain_scales_each_clip_by_one_factor_within_its_decibel_range():
    x, _ = _clips()
    out = _seeded(Gain(-6.0, 6.0), x)
    ratio = out.abs().sum(dim=(1, 2)) / x.abs().sum(dim=(1, 2))
    decibels = 20 * torch.log10(ratio)
    assert ((decibels >= -6.0 - 1e-4) & (decibels <= 6.0 + 1e-4)).all() and decibels.std() > 0.5
    assert torch.allclose(out, x * ratio[:, None, None], atol=1e-6)
    assert torch.equal(_seeded(Gain(0.0, 0.0), x), x)


def test_noise_is_added_at_the_drawn_snr_inside_each_clip_only():
    x, lengths = _clips(length=8000, shortest=4000)
    x = x * torch.linspace(0.1, 2.0, 6)[:, None, None]  # clips of different loudness
    out = _seeded(AddNoise(20.0, 20.0, probability=1.0), x)
    noise = out - x
    inside = torch.arange(8000)[None, :] < lengths[:, None]
    assert (noise[:, 0][~inside] == 0).all()
    signal_power = (x[:, 0] ** 2).sum(1) / lengths
    noise_power = (noise[:, 0] ** 2).sum(1) / lengths
    snr = 10 * torch.log10(signal_power / noise_power)
    assert torch.allclose(snr, torch.full_like(snr, 20.0), atol=0.3)  # the noise's own power varies (2 % std)
    assert torch.equal(_seeded(AddNoise(probability=0.0), x), x)


def test_time_shift_only_reorders_each_clip_s_observed_samples():
    x, lengths = _clips()
    out = _seeded(TimeShift(0.3), x)
    assert torch.equal(out.sort(dim=2).values, x.sort(dim=2).values)
    for clip, source, length in zip(out[:, 0], x[:, 0], lengths.tolist()):
        assert any(torch.equal(clip[:length], source[:length].roll(shift)) for shift in range(length))
    assert torch.equal(_seeded(TimeShift(0.0), x), x)


@pytest.mark.parametrize("op_class, axis", [(FrequencyMasking, 2), (TimeMasking, 3)])
def test_spec_augment_masks_bands_of_at_most_the_width_with_the_clip_mean(op_class, axis):
    x = torch.randn(8, 1, 20, 30)
    op = op_class(max_width=4, count=2)
    mask = op.mask(x, torch.Generator().manual_seed(5))
    out = _seeded(op, x, 5)
    other = 5 - axis  # the axis left whole
    changed = (out != x).any(dim=other).squeeze(1)
    assert torch.equal(changed, mask)
    assert (mask.sum(dim=1) <= 8).all() and mask.any()
    mean = x.mean(dim=(2, 3))
    for row, clip in enumerate(out):
        band = clip[0].index_select(axis - 2, mask[row].nonzero().squeeze(1))
        assert torch.allclose(band, mean[row].expand_as(band))
    assert torch.equal(_seeded(op_class(0), x), x)


def test_speed_one_is_the_identity():
    x, _ = _clips()
    assert torch.equal(_seeded(SpeedPerturbation(1.0, 1.0), x), x)


@pytest.mark.parametrize("factor", [0.75, 0.9, 1.1, 1.6])
def test_speed_perturbation_samples_each_clip_at_the_factor_times_the_time(factor):
    x, lengths = _clips(batch=4, length=300)
    got = _seeded(SpeedPerturbation(factor, factor), x.double())
    for clip, length, played in zip(x.double(), lengths.tolist(), got):
        # An independent reference: numpy's linear interpolation over the observed samples.
        import numpy as np
        times = np.arange(300) * float(torch.tensor(factor))  # the factor is drawn in float32
        keep = times <= length - 1
        expected = np.where(keep, np.interp(times, np.arange(length), clip[0, :length].numpy()), 0.0)
        assert np.allclose(played[0].numpy(), expected, atol=1e-12)
        new_length = min(300, int(np.floor((length - 1) / factor)) + 1)
        assert int(observed_lengths(played[None])[0]) <= new_length
        assert not played[0, new_length:].any()


def test_speed_factors_are_drawn_per_clip_within_the_range():
    x = torch.zeros(64, 1, 1000)
    x[:, 0, :500] = 1.0  # a constant 500-sample clip plays for about 500 / f samples
    got = observed_lengths(_seeded(SpeedPerturbation(0.8, 1.25), x)).double()
    factors = 499 / (got - 1)
    assert ((factors > 0.8 - 0.01) & (factors < 1.25 + 0.01)).all() and factors.std() > 0.05


def test_cola_views_are_two_segments_of_the_clip_without_other_changes():
    x, lengths = _clips(length=800, shortest=600)
    first, second = audio_preset("cola")(x, generator=torch.Generator().manual_seed(0))
    for views in (first, second):
        for clip, view, length in zip(x, views, lengths.tolist()):
            width = int(observed_lengths(view[None])[0])
            assert width >= 0.5 * length - 1
            windows = clip[0].unfold(0, width, 1)
            assert (windows == view[0, :width]).all(dim=1).any()
    assert not torch.equal(first, second)


def test_simclr_views_with_speed_differ_from_those_without():
    x, _ = _clips(length=800)
    plain = audio_preset("simclr")(x, generator=torch.Generator().manual_seed(0))
    sped = audio_preset("simclr", speed=0.1)(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain[0], sped[0])
    with pytest.raises(ConfigError, match=r"speed must be a number in \[0, 1\)"):
        audio_preset("simclr", speed=1.5)


def test_views_are_log_mels_with_a_front_end_and_waveforms_without():
    x, _ = _clips(length=800)
    waveform_views = audio_preset("simclr")(x, generator=torch.Generator().manual_seed(0))
    assert len(waveform_views) == 2 and waveform_views[0].shape == x.shape
    assert not torch.equal(waveform_views[0], waveform_views[1])
    frontend = LogMel(8000)
    mel_views = audio_preset("simclr", frontend=frontend)(x, generator=torch.Generator().manual_seed(0))
    assert mel_views[0].shape == frontend(x).shape
    again = audio_preset("simclr", frontend=frontend)(x, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(mel_views, again))


def test_bad_settings_and_inputs_say_what_to_give():
    with pytest.raises(ConfigError, match="low <= high"):
        Gain(6.0, -6.0)
    with pytest.raises(ConfigError, match=r"min_ratio must be a number in \[0, 1\]"):
        RandomTimeCrop(1.5)
    with pytest.raises(ConfigError, match="unknown option.*gain"):
        audio_preset("simclr", gain=3)
    with pytest.raises(ConfigError, match="unknown audio preset"):
        audio_preset("byol")
    with pytest.raises(InputError, match="floating-point"):
        Gain()(torch.ones(2, 1, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="at least one transform"):
        AudioViews([])
    with pytest.raises(ConfigError, match="speed factors must be > 0"):
        SpeedPerturbation(0.0, 1.0)
