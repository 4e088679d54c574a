"""Series encoders: shapes, NaN padding that leaves the observed part unchanged, masks, gradients, registry."""

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.models.backbones import create_backbone, list_backbones
from contrastkit.models.series import ResNet1d, SeriesRNN, SeriesTransformer, TS2VecEncoder

SMALL = {"ts2vec_cnn": dict(hidden_dim=8, output_dim=12, depth=3),
         "resnet1d": dict(widths=(8, 12, 12)),
         "series_transformer": dict(dim=12, heads=2, layers=2),
         "series_gru": dict(hidden_dim=12),
         "series_lstm": dict(hidden_dim=12)}


def build(name, channels=3):
    torch.manual_seed(0)
    return create_backbone(name, in_channels=channels, **SMALL[name]).eval()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_registered_encoders_give_pooled_and_per_timestep_outputs(name):
    assert name in list_backbones()
    encoder = build(name)
    x = torch.randn(4, 3, 21)
    assert encoder.feature_dim == 12
    timesteps = encoder.encode_timesteps(x)
    assert timesteps.shape == (4, 21, 12)
    # the pooled representation is the maximum over the timesteps
    assert torch.allclose(encoder(x), timesteps.amax(dim=1))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_nan_padding_leaves_the_observed_part_unchanged(name):
    encoder = build(name)
    x = torch.randn(3, 3, 17)
    padded = torch.cat([x, torch.full((3, 3, 9), float("nan"))], dim=2)
    with torch.no_grad():
        alone, in_padding = encoder.encode_timesteps(x), encoder.encode_timesteps(padded)
        assert torch.allclose(in_padding[:, :17], alone, atol=1e-5)
        assert torch.allclose(encoder(padded), encoder(x), atol=1e-5)
        # a batch mixing lengths: each series as if alone
        mixed = padded.clone()
        mixed[1] = torch.randn(3, 26)
        assert torch.allclose(encoder(mixed)[[0, 2]], encoder(x)[[0, 2]], atol=1e-5)
        assert torch.isfinite(encoder(mixed)).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_nan_in_some_channels_reads_as_zero(name):
    encoder = build(name)
    x = torch.randn(2, 3, 12)
    holes = x.clone()
    holes[0, 1, 4] = float("nan")
    zeros = x.clone()
    zeros[0, 1, 4] = 0.0
    with torch.no_grad():
        assert torch.allclose(encoder(holes), encoder(zeros), atol=1e-6)


def test_ts2vec_masks_hide_the_input_after_its_projection():
    encoder = build("ts2vec_cnn")
    hidden = torch.zeros(2, 15, dtype=torch.bool)
    with torch.no_grad():
        # every timestep hidden: the output no longer depends on the input
        assert torch.allclose(encoder.encode_timesteps(torch.randn(2, 3, 15), hidden),
                              encoder.encode_timesteps(torch.randn(2, 3, 15), hidden))
        x = torch.randn(2, 3, 15)
        assert torch.equal(encoder.encode_timesteps(x, ~hidden), encoder.encode_timesteps(x))


def test_input_level_masks_equal_zeroed_input():
    encoder = build("resnet1d")
    x = torch.randn(2, 3, 15)
    keep = torch.rand(2, 15) > 0.5
    with torch.no_grad():
        assert torch.allclose(encoder.encode_timesteps(x, keep), encoder.encode_timesteps(x * keep[:, None]))


def test_ts2vec_encoder_defaults_and_dropout_only_in_training():
    encoder = TS2VecEncoder(in_channels=2)
    assert encoder.feature_dim == 320 and len(encoder.blocks) == 11
    assert [block.first.dilation[0] for block in encoder.blocks] == [2 ** i for i in range(11)]
    assert encoder.input_projection.out_features == 64
    x = torch.randn(2, 2, 30)
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))
    encoder.train()
    assert not torch.equal(encoder.encode_timesteps(x), encoder.encode_timesteps(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_every_parameter(name):
    encoder = build(name).train()
    x = torch.randn(4, 3, 16)
    x[0, :, 10:] = float("nan")
    encoder(x).square().sum().backward()
    for parameter_name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    assert any(parameter.grad.abs().sum() > 0 for parameter in encoder.parameters())


def test_constructors_and_inputs_are_checked():
    with pytest.raises(ConfigError, match="cifar_stem"):
        create_backbone("resnet1d", in_channels=1, cifar_stem=True)
    with pytest.raises(ConfigError, match="odd"):
        TS2VecEncoder(kernel_size=4)
    with pytest.raises(ConfigError, match="positions"):
        SeriesTransformer(positions="rotary")
    with pytest.raises(ConfigError, match="gru"):
        SeriesRNN("rnn")
    with pytest.raises(InputError, match=r"\(B, C, T\)"):
        ResNet1d()(torch.randn(2, 10))
    with pytest.raises(InputError, match="timestep_mask"):
        build("ts2vec_cnn").encode_timesteps(torch.randn(2, 3, 10), torch.ones(2, 9, dtype=torch.bool))
    learned = SeriesTransformer(positions="learned", max_length=8, dim=8, heads=2, layers=1)
    assert learned(torch.randn(2, 1, 8)).shape == (2, 8)
    with pytest.raises(InputError, match="max_length"):
        learned(torch.randn(2, 1, 9))


def _pyramid_by_hand(timesteps, observed, levels):
    """The pyramid with loops: each level's segments split [0, last observed + 1) as evenly as
    floor(t * n / span) does, the maximum over each segment's observed timesteps (0 if none)."""
    rows = []
    for series, seen in zip(timesteps.double(), observed):
        span = max([t + 1 for t in range(len(seen)) if seen[t]], default=1)
        parts = []
        for n in levels:
            for index in range(n):
                inside = [t for t in range(len(seen)) if seen[t] and t * n // span == index]
                parts.append(torch.stack([series[t] for t in inside]).amax(dim=0) if inside
                             else torch.zeros(series.shape[1], dtype=torch.float64))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def test_pyramid_pooling_against_loops_with_padding_and_gaps():
    from contrastkit.models.series import pyramid_pool

    torch.manual_seed(1)
    timesteps = torch.randn(5, 13, 4, dtype=torch.float64)
    observed = torch.ones(5, 13, dtype=torch.bool)
    observed[1, 9:] = False    # padded past its end
    observed[2, 3:5] = False   # a gap inside
    observed[3, 2:] = False    # shorter than the finest level
    observed[4] = False        # nothing observed
    for levels in [(1,), (1, 2, 4), (3, 5)]:
        expected = _pyramid_by_hand(timesteps, observed, levels)
        assert torch.equal(pyramid_pool(timesteps, observed, levels), expected)
    with pytest.raises(ConfigError, match="positive whole numbers"):
        pyramid_pool(timesteps, observed, (0, 2))
    with pytest.raises(InputError, match="observed must have shape"):
        pyramid_pool(timesteps, observed[:, :5])


@pytest.mark.parametrize("name", ["ts2vec_cnn", "series_gru"])
def test_a_pyramid_encoder_trains_on_timesteps_and_ignores_padding(name):
    from contrastkit.models.series import PyramidPooling, pooled

    encoder = build(name)
    pyramid = pooled(encoder, "pyramid")
    assert isinstance(pyramid, PyramidPooling) and pyramid.feature_dim == 7 * 12 and pooled(encoder, "max") is encoder
    x = torch.randn(3, 3, 17)
    padded = torch.cat([x, torch.full((3, 3, 9), float("nan"))], dim=2)
    with torch.no_grad():
        assert torch.equal(pyramid.encode_timesteps(x), encoder.encode_timesteps(x))
        features = pyramid(x)
        assert torch.equal(features[:, :12], encoder(x))  # level 1 is the encoder's own maximum
        torch.testing.assert_close(pyramid(padded), features, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="pooling must be one of max, pyramid"):
        pooled(encoder, "mean")
