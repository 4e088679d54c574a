"""Series datasets: loading through aeon, NaN padding of unequal lengths, labels, z-normalisation."""

import numpy as np
import pytest
import torch

from contrastkit._series_padding import observed_lengths, observed_mask
from contrastkit.data.series import BUNDLED_SERIES, list_series_datasets, load_series, z_normalize
from contrastkit.errors import ConfigError, DatasetError, InputError


def fake_archive(monkeypatch, splits):
    """Make aeon's load_classification return ``splits[split]`` (or raise it, if an exception)."""
    aeon_datasets = pytest.importorskip("aeon.datasets")

    def load_classification(name, split, **options):
        answer = splits[split]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(aeon_datasets, "load_classification", load_classification)


def test_gunpoint_loads_in_any_capitalisation_as_float_series_with_int_labels():
    pytest.importorskip("aeon")
    splits = load_series("gUnPoInT")
    assert splits.name == "GunPoint"
    assert splits.train.values.shape == (50, 1, 150) and splits.test.values.shape == (150, 1, 150)
    assert splits.train.values.dtype == torch.float32 and splits.train.labels.dtype == torch.int64
    assert len(splits.train) == 50 and splits.channels == 1 and splits.length == 150
    assert splits.classes == ["1", "2"]
    assert set(splits.train.labels.tolist()) == {0, 1} and set(splits.test.labels.tolist()) == {0, 1}


def test_multivariate_unequal_lengths_are_nan_padded_and_kept_as_recorded():
    pytest.importorskip("aeon")
    from aeon.datasets import load_classification

    raw, names = load_classification("JapaneseVowels", split="train")
    splits = load_series("japanesevowels")
    values = splits.train.values
    assert values.shape[:2] == (270, 12) and splits.channels == 12
    lengths = observed_lengths(values)
    assert lengths.tolist() == [series.shape[1] for series in raw]
    assert values.shape[2] == max(max(s.shape[1] for s in raw), int(observed_lengths(splits.test.values).max()))
    for row in (0, 100, 269):
        length = raw[row].shape[1]
        # multivariate (UEA) series keep their recorded values under the default normalisation
        np.testing.assert_allclose(values[row, :, :length].numpy(), raw[row], rtol=1e-6)
        assert torch.isnan(values[row, :, length:]).all()
    mask = observed_mask(values)
    assert mask.equal(torch.arange(values.shape[2])[None, :] < lengths[:, None])
    assert splits.classes == [str(k) for k in range(1, 10)]
    assert splits.train.labels.tolist() == [splits.classes.index(name) for name in names]


def test_univariate_sets_are_z_normalised_per_series_by_default():
    pytest.importorskip("aeon")
    values = load_series("ArrowHead").test.values.double()
    np.testing.assert_allclose(values.mean(dim=2).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(values.std(dim=2, correction=0).numpy(), 1, atol=1e-5)


def test_z_normalize_matches_a_numpy_reference_over_observed_positions():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(5, 3, 20, generator=generator, dtype=torch.float64) * 4 + 2
    values[1, :, 12:] = float("nan")  # padding
    values[2, 1, 5] = float("nan")  # a missing value inside the series
    values[3, 2] = 7.0  # a constant channel
    expected = values.numpy().copy()
    for row in range(5):
        for channel in range(3):
            series = expected[row, channel]
            std = np.nanstd(series)
            series[:] = (series - np.nanmean(series)) / (std if std > 1e-8 else 1.0)
    result = z_normalize(values)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-12)
    assert torch.isnan(result[1, :, 12:]).all() and torch.isnan(result[2, 1, 5])
    assert result[3, 2].eq(0).all()


def test_classes_sort_numerically_when_they_are_numbers(monkeypatch):
    series = np.zeros((3, 1, 4))
    fake_archive(monkeypatch, {"train": (series, np.array(["10", "9", "2"])),
                               "test": (series, np.array(["2", "2", "10"]))})
    splits = load_series("Anything")
    assert splits.classes == ["2", "9", "10"]
    assert splits.train.labels.tolist() == [2, 1, 0] and splits.test.labels.tolist() == [0, 0, 2]


def test_a_test_class_missing_from_train_is_refused(monkeypatch):
    series = np.zeros((2, 1, 4))
    fake_archive(monkeypatch, {"train": (series, np.array(["a", "b"])), "test": (series, np.array(["a", "c"]))})
    with pytest.raises(DatasetError, match="absent from its train split"):
        load_series("Anything")


def test_a_dataset_that_cannot_be_fetched_names_itself_and_the_fix(monkeypatch):
    fake_archive(monkeypatch, {"train": OSError("network unreachable"), "test": OSError("network unreachable")})
    with pytest.raises(DatasetError, match="'Coffee'.*internet.*Coffee/Coffee_TRAIN.ts"):
        load_series("Coffee")


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="normalize"):
        load_series("GunPoint", normalize="global")
    with pytest.raises(InputError):
        observed_mask(torch.zeros(3, 4))


def test_the_bundled_list():
    assert list_series_datasets() == list(BUNDLED_SERIES)
    assert "GunPoint" in BUNDLED_SERIES and len(BUNDLED_SERIES) == 7
