"""The ts2vec method: its step, weight averaging, views, config and a run of the trainer; SimCLR on series views."""

import dataclasses

import pytest
import torch
from torch import nn

from contrastkit.augment.series import OverlappingCrops, SeriesViews, series_preset
from contrastkit.config import Config
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.errors import ConfigError
from contrastkit.methods.base import Progress
from contrastkit.methods.registry import METHODS
from contrastkit.methods.simclr import SimCLR
from contrastkit.methods.ts2vec import TS2Vec
from contrastkit.models.series import TS2VecEncoder
from contrastkit.train.optim import create_optimizer
from contrastkit.train.trainer import Trainer


def small_encoder(channels=1):
    torch.manual_seed(0)
    return TS2VecEncoder(in_channels=channels, hidden_dim=8, output_dim=16, depth=2)


def crops(batch=6, channels=1, length=32, seed=0):
    x = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(seed))
    return OverlappingCrops()(x, generator=torch.Generator().manual_seed(seed))


def test_registered_with_a_series_recipe_of_config_keys():
    assert METHODS.get("ts2vec") is TS2Vec
    assert TS2Vec.modalities == ("series",)
    fields = {field.name for field in dataclasses.fields(Config)}
    assert set(TS2Vec.recipes["series"]) <= fields
    assert TS2Vec.recipes["series"]["backbone"] == "ts2vec_cnn"


def test_training_step_trains_the_encoder_not_its_average():
    model = TS2Vec(small_encoder())
    loss = model.training_step(crops())["loss"]
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_the_backbone_is_the_equal_weight_average_of_the_steps():
    model = TS2Vec(small_encoder())
    snapshots = []
    for step in range(4):
        with torch.no_grad():
            for parameter in model.encoder.parameters():
                parameter.add_(torch.randn_like(parameter))
        snapshots.append([p.detach().clone() for p in model.encoder.parameters()])
        model.on_step_end(Progress(step, 4, 4))
    for index, averaged in enumerate(model.backbone.parameters()):
        expected = torch.stack([snapshot[index] for snapshot in snapshots]).mean(dim=0)
        assert torch.allclose(averaged, expected, atol=1e-6)


def test_configure_views_fits_the_overlap_to_temporal_unit():
    model = TS2Vec(small_encoder(), temporal_unit=2)
    views = model.configure_views(series_preset("ts2vec", mask_ratio=0.3))
    assert isinstance(views, OverlappingCrops) and views.min_overlap == 8 and views.mask_ratio == 0.3
    kept = OverlappingCrops(min_overlap=16)
    assert model.configure_views(kept) is kept
    with pytest.raises(ConfigError, match="preset 'ts2vec'"):
        model.configure_views(series_preset("simclr"))


def test_refusals():
    with pytest.raises(ConfigError, match="encode_timesteps"):
        TS2Vec(nn.Linear(3, 3))
    model = TS2Vec(small_encoder())
    with pytest.raises(ConfigError, match="two overlapping crops"):
        model.training_step([torch.randn(4, 1, 20), torch.randn(4, 1, 20)])


def test_from_config_reads_the_method_options():
    config = Config(method="ts2vec", method_options={"alpha": 0.25, "temporal_unit": 1})
    model = TS2Vec.from_config(small_encoder(), config)
    assert model.criterion.alpha == 0.25 and model.criterion.temporal_unit == 1
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        TS2Vec.from_config(small_encoder(), Config(method="ts2vec", method_options={"alpha_": 0.2}))


def fit(seed):
    torch.manual_seed(seed)
    model = TS2Vec(small_encoder())
    values = torch.randn(24, 1, 30, generator=torch.Generator().manual_seed(1))
    values[::3, :, 20:] = float("nan")  # unequal lengths
    loader = DeviceLoader(values, torch.zeros(24, dtype=torch.long), 8, seed=seed)
    optimizer = create_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=0.01)
    views = model.configure_views(series_preset("ts2vec"))
    state = Trainer(model, views, loader, optimizer, epochs=2, out_dir=None, progress=False).fit()
    return state, model


def test_the_trainer_runs_it_reproducibly():
    state, model = fit(seed=0)
    assert state.step == 6
    _, again = fit(seed=0)
    for first, second in zip(model.backbone.parameters(), again.backbone.parameters()):
        assert torch.equal(first, second)
    assert not torch.equal(next(model.backbone.parameters()), next(model.encoder.parameters()))


def test_simclr_trains_on_the_series_preset():
    backbone = small_encoder(channels=2)
    model = SimCLR(backbone, nn.Identity())
    views = series_preset("simclr")(torch.randn(8, 2, 40), generator=torch.Generator().manual_seed(0))
    assert isinstance(series_preset("simclr"), SeriesViews) and len(views) == 2
    model.training_step(views)["loss"].backward()
    assert backbone.input_projection.weight.grad is not None
