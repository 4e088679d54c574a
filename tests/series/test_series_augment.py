"""Series augmentations: shapes, determinism, identity at zero strength, and each op's invariant."""

import math

import pytest
import torch

from contrastkit.augment.series import (SERIES_PRESETS, Jitter, MagnitudeWarp, OverlappingCrops, Scaling,
                                        SegmentPermutation, SeriesCompose, SeriesViews, TimeMasking, TimeWarp,
                                        WindowCrop, series_preset)
from contrastkit.errors import ConfigError, InputError

LENGTHS = (40, 25, 33, 40)


def padded_batch(channels=2, seed=0):
    """(4, channels, 40) random series, the second and third NaN-padded past lengths 25 and 33."""
    values = torch.randn(len(LENGTHS), channels, max(LENGTHS), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate(LENGTHS):
        values[row, :, length:] = float("nan")
    return values


def ramps():
    """Series whose value is their timestep (NaN past each length): a resampling reads its positions."""
    values = torch.arange(max(LENGTHS), dtype=torch.float64).repeat(len(LENGTHS), 2, 1)
    for row, length in enumerate(LENGTHS):
        values[row, :, length:] = float("nan")
    return values


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


OPS = [Jitter(0.1), Scaling(0.2), MagnitudeWarp(0.3, knots=3), TimeWarp(0.3, knots=3), WindowCrop(0.7),
       SegmentPermutation(4), TimeMasking(0.4)]
ZERO = [Jitter(0.0), Scaling(0.0), MagnitudeWarp(0.0), TimeWarp(0.0), WindowCrop(1.0), SegmentPermutation(1),
        TimeMasking(0.0)]


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_shape_padding_and_determinism(op):
    x = padded_batch()
    first, second = op(x, seeded(3)), op(x, seeded(3))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(torch.isnan(first), torch.isnan(x))  # padding kept, nothing else turned NaN
    assert torch.allclose(first, second, equal_nan=True)
    assert not torch.allclose(first, op(x, seeded(4)), equal_nan=True)
    assert not hasattr(op, "apply")  # the trainer reads .apply as an image MultiView's


@pytest.mark.parametrize("op", ZERO, ids=lambda op: type(op).__name__)
def test_zero_strength_is_the_identity(op):
    x = padded_batch()
    assert torch.equal(op(x, seeded()).nan_to_num(123.0), x.nan_to_num(123.0))


def test_jitter_noise_has_the_given_standard_deviation():
    x = torch.zeros(64, 2, 500)
    noise = Jitter(0.2)(x, seeded())
    assert abs(noise.std().item() - 0.2) < 0.005 and abs(noise.mean().item()) < 0.005


def test_scaling_multiplies_each_series_and_channel_by_one_factor():
    x = padded_batch().abs() + 1
    ratio = Scaling(0.2)(x, seeded()) / x
    observed = ratio[:, :, :25]
    assert torch.allclose(observed, observed[:, :, :1].expand_as(observed))
    assert observed[:, 0, 0].ne(observed[:, 1, 0]).all()


def test_magnitude_warp_is_a_smooth_curve_through_values_near_one():
    curve = MagnitudeWarp(0.2, knots=4)(torch.ones(8, 1, 200), seeded())
    assert (curve - 1).abs().max() < 1.5
    steps = curve.diff(dim=2)
    # Catmull-Rom: continuous with a continuous slope, so neighbouring slopes barely differ
    assert steps.diff(dim=2).abs().max() < 0.01
    assert (curve - 1).abs().amax(dim=2).min() > 0


def test_time_warp_is_strictly_increasing_and_keeps_both_ends():
    x = ramps()
    warp = TimeWarp(0.5, knots=4)
    tau = warp.time_map(x, seeded(1))
    warped = warp(x, seeded(1))
    for row, length in enumerate(LENGTHS):
        assert tau[row, 0] == 0 and tau[row, length - 1] == length - 1
        assert (tau[row, 1:length].diff() > 0).all() and tau[row, 1] > 0
        # linear interpolation of a ramp returns the positions read
        assert torch.allclose(warped[row, :, :length], tau[row, :length].expand(2, -1))
        assert warped[row, :, 0].eq(0).all() and warped[row, :, length - 1].eq(length - 1).all()
    assert not torch.allclose(tau[0], torch.arange(40.0, dtype=tau.dtype))


def test_window_crop_stretches_a_window_inside_the_series():
    x = ramps()
    cropped = WindowCrop(0.6)(x, seeded(2))
    for row, length in enumerate(LENGTHS):
        ramp = cropped[row, 0, :length]
        width = round(0.6 * length)
        # an affine map of [0, L-1] onto a window [start, start + width - 1] inside [0, L-1]
        assert ramp[0] >= 0 and ramp[-1] <= length - 1
        assert math.isclose(ramp[-1] - ramp[0], width - 1, abs_tol=1e-9)
        assert torch.allclose(ramp.diff(), torch.full((length - 1,), (width - 1) / (length - 1), dtype=ramp.dtype))
        assert ramp[0] == ramp[0].floor()  # windows start on a timestep
        assert torch.equal(cropped[row, 0, :length], cropped[row, 1, :length])


def test_segment_permutation_reorders_the_observed_values_in_consecutive_segments():
    x = ramps()
    x[:, 1] = 2 * x[:, 1] + 1  # channel 1 a function of channel 0: both must move together
    out = SegmentPermutation(5)(x, seeded(5))
    moved = False
    for row, length in enumerate(LENGTHS):
        values = out[row, 0, :length]
        assert torch.equal(values.sort().values, x[row, 0, :length])
        assert torch.equal(out[row, 1, :length], 2 * values + 1)
        # each segment is a consecutive run: at most 4 cuts between 5 segments
        assert int((values.diff() != 1).sum()) <= 4
        moved |= not torch.equal(values, x[row, 0, :length])
    assert moved


def test_time_masking_masks_the_given_share_of_timesteps_in_every_channel():
    x = torch.ones(64, 3, 500)
    out = TimeMasking(0.3)(x, seeded())
    masked = out == 0
    assert torch.equal(masked[:, 0], masked[:, 1]) and torch.equal(masked[:, 0], masked[:, 2])
    assert abs(masked[:, 0].float().mean().item() - 0.3) < 0.01
    assert TimeMasking(1.0)(padded_batch(), seeded()).nan_to_num(5.0).eq(
        torch.where(torch.isnan(padded_batch()), 5.0, 0.0)).all()


def test_compose_and_views_draw_from_one_generator():
    x = padded_batch()
    compose = SeriesCompose([Jitter(0.1), Scaling(0.1)])
    generator = seeded(7)
    expected = Scaling(0.1)(Jitter(0.1)(x, generator), generator)
    assert torch.allclose(compose(x, seeded(7)), expected, equal_nan=True)
    views = SeriesViews([compose, compose])
    assert views.to("cpu") is views and not hasattr(views, "apply")
    first, second = views(x, generator=seeded(1))
    assert first.shape == second.shape == x.shape
    assert not torch.allclose(first, second, equal_nan=True)


def test_overlapping_crops_share_their_overlap():
    x = torch.randn(6, 2, 60, generator=seeded())
    crops = OverlappingCrops(mask_ratio=0.5)
    for seed in range(10):
        first, second = crops(x, generator=seeded(seed))
        length = int(first["overlap_length"])
        start = int(first["overlap_start"])
        assert int(second["overlap_start"]) == 0 and int(second["overlap_length"]) == length >= 2
        assert torch.equal(first["values"][:, :, start:start + length], second["values"][:, :, :length])
        for view in (first, second):
            assert view["timestep_mask"].shape == (6, view["values"].shape[2])
            assert view["timestep_mask"].dtype == torch.bool
        # each crop is a window of every series (at a per-sample offset)
        for row in range(6):
            window = first["values"][row, 0]
            offsets = [o for o in range(60 - len(window) + 1) if torch.equal(x[row, 0, o:o + len(window)], window)]
            assert offsets
    first, _ = crops(x, generator=seeded(0))
    again, _ = crops(x, generator=seeded(0))
    assert torch.equal(first["values"], again["values"]) and torch.equal(first["timestep_mask"], again["timestep_mask"])


def test_overlapping_crops_mask_ratio_and_max_length():
    x = torch.randn(64, 1, 400)
    masks = [OverlappingCrops(mask_ratio=0.25)(x, generator=seeded(s))[0]["timestep_mask"] for s in range(5)]
    hidden = torch.cat([mask.flatten() for mask in masks]).logical_not().float().mean().item()
    assert abs(hidden - 0.25) < 0.02
    for seed in range(5):
        first, second = OverlappingCrops(max_length=50)(x, generator=seeded(seed))
        assert first["values"].shape[2] <= 50 and second["values"].shape[2] <= 50
    with pytest.raises(InputError, match="min_overlap"):
        OverlappingCrops(min_overlap=8)(torch.zeros(2, 1, 5))


def test_presets_and_refusals():
    assert isinstance(series_preset("ts2vec"), OverlappingCrops)
    views = series_preset("simclr", jitter_sigma=0.0)
    assert isinstance(views, SeriesViews) and len(views(padded_batch(), generator=seeded())) == 2
    with pytest.raises(ConfigError, match="ts2vec, simclr"):
        series_preset("tS2vec")
    assert SERIES_PRESETS == ("ts2vec", "simclr")
    with pytest.raises(ConfigError, match="mask_ratio"):
        series_preset("ts2vec", mask_rate=0.5)
    with pytest.raises(ConfigError, match="sigma"):
        Jitter(-1.0)
    with pytest.raises(ConfigError, match="ratio"):
        WindowCrop(0.0)
    with pytest.raises(ConfigError, match="max_segments"):
        SegmentPermutation(0)
    with pytest.raises(InputError, match=r"\(B, C, T\)"):
        Jitter(0.1)(torch.zeros(3, 4))
    with pytest.raises(InputError, match="floating"):
        Scaling(0.1)(torch.zeros(2, 1, 4, dtype=torch.long))
