"""Time series classification datasets (the UCR and UEA archives) as float tensors.

A dataset is loaded through ``aeon.datasets.load_classification``: the seven sets bundled with aeon
(:data:`BUNDLED_SERIES`) load offline, any other archive name is downloaded by aeon (or read from
``data_root``, a folder holding ``NAME/NAME_TRAIN.ts`` and ``NAME/NAME_TEST.ts``).

Every split comes back as :class:`SeriesDataset`: float32 values (N, C, T) and int64 labels (N,).
Univariate sets have C = 1; multivariate ones keep their dimensions as channels. Series of unequal
length (JapaneseVowels) are padded with NaN to the longest series of train and test together, so a
position past a series' end is NaN in every channel;
:func:`contrastkit._series_padding.observed_mask` recovers the observed positions, and the encoders,
augmentations and 1-NN baselines of the ``series`` modules read the padding the same way.
Normalisation follows each archive's convention by default: univariate (UCR) series are z-normalised
per series (:func:`z_normalize`), as the UCR archive distributes most of them and reports its
baselines; multivariate (UEA) series are kept as recorded, as the UEA archive reports its baselines
(per-series z-normalisation erases what separates some of its classes: it drops JapaneseVowels' 1-NN
DTW accuracy from 0.949 to 0.662).

Class names are sorted once (numerically when every name is a number, so "10" follows "9") and
mapped to 0..K-1 for both splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit.errors import ConfigError, DatasetError

BUNDLED_SERIES: tuple[str, ...] = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand",
                                   "JapaneseVowels", "OSULeaf")
"""The archive datasets shipped inside aeon, which load without a network connection."""


@dataclass
class SeriesDataset:
    """float32 series (N, C, T), NaN past each series' end, with int64 labels (N,)."""

    values: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.values.shape[0]


@dataclass
class SeriesSplits:
    """A dataset's official train and test splits; ``classes[k]`` is the archive's name of label k."""

    name: str
    train: SeriesDataset
    test: SeriesDataset
    classes: list[str]

    @property
    def channels(self) -> int:
        return self.train.values.shape[1]

    @property
    def length(self) -> int:
        """Padded length T shared by both splits."""
        return self.train.values.shape[2]


def list_series_datasets() -> list[str]:
    """Names that load offline (the bundled ones); any other UCR/UEA name loads when online."""
    return list(BUNDLED_SERIES)


def z_normalize(values: Tensor, eps: float = 1e-8) -> Tensor:
    """Each series and channel shifted to mean 0 and scaled to standard deviation 1 over its
    observed (non-NaN) positions; NaN stays NaN. A constant channel becomes 0 rather than NaN.

    The population standard deviation (divide by the count) is used, as the archives do.

    Example:
        >>> z_normalize(torch.tensor([[[1.0, 3.0, float("nan")]]]))
        tensor([[[-1.,  1., nan]]])
    """
    check_ndim("values", values, 3, "(N, C, T)")
    observed = ~torch.isnan(values)
    count = observed.sum(dim=2, keepdim=True).clamp(min=1)
    filled = torch.where(observed, values, torch.zeros_like(values))
    mean = filled.sum(dim=2, keepdim=True) / count
    centred = torch.where(observed, values - mean, torch.zeros_like(values))
    std = (centred.square().sum(dim=2, keepdim=True) / count).sqrt()
    scaled = centred / torch.where(std > eps, std, torch.ones_like(std))
    return torch.where(observed, scaled, values)


def _class_order(names: Sequence[str]) -> list[str]:
    """Sorted class names: by value when every name is a number ("2" before "10"), else as text."""
    unique = sorted(set(names))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def _canonical_name(name: str) -> str:
    """The bundled dataset's spelling for any capitalisation ("gunpoint" -> "GunPoint")."""
    for bundled in BUNDLED_SERIES:
        if bundled.lower() == name.lower():
            return bundled
    return name


def _to_array(series: Any, length: int) -> np.ndarray:
    """aeon's (N, C, T) array or list of (C, T_i) arrays as float64 (N, C, length), NaN-padded."""
    if isinstance(series, np.ndarray) and series.ndim == 3:
        array = series.astype(np.float64)
        if array.shape[2] == length:
            return array
        series = list(array)
    channels = series[0].shape[0]
    out = np.full((len(series), channels, length), np.nan)
    for row, values in enumerate(series):
        out[row, :, :values.shape[1]] = values
    return out


def _series_length(series: Any) -> int:
    if isinstance(series, np.ndarray) and series.ndim == 3:
        return series.shape[2]
    return max(values.shape[1] for values in series)


def _load_split(name: str, split: str, data_root: str | Path | None) -> tuple[Any, list[str]]:
    try:
        from aeon.datasets import load_classification
    except ImportError as error:
        raise DatasetError(f"time series dataset {name!r} needs aeon: pip install aeon") from error
    options = {"extract_path": str(data_root)} if data_root is not None else {}
    try:
        series, labels = load_classification(name, split=split, **options)
    except Exception as error:  # aeon raises URLError, ValueError or OSError depending on what failed
        where = f" in {data_root}" if data_root is not None else ""
        raise DatasetError(
            f"cannot load time series dataset {name!r}{where} ({type(error).__name__}: {error}). Only "
            f"{', '.join(BUNDLED_SERIES)} load offline; other UCR/UEA names need an internet connection, or a "
            f"data_root folder holding {name}/{name}_TRAIN.ts and {name}/{name}_TEST.ts.") from error
    return series, [str(label) for label in labels]


NORMALIZATIONS = ("auto", "series", "none")


def load_series(name: str, *, data_root: str | Path | None = None, normalize: str = "auto") -> SeriesSplits:
    """Train and test splits of a UCR/UEA classification dataset (see the module docstring).

    Args:
        name: archive name; the bundled sets match in any capitalisation ("gunpoint").
        data_root: folder aeon reads ``NAME/NAME_TRAIN.ts`` from, and downloads to (None: aeon's
            own folder).
        normalize: ``"series"``: z-normalise each series and channel (:func:`z_normalize`);
            ``"none"``: values as stored; ``"auto"``: "series" for univariate sets, "none" for
            multivariate ones (the archives' conventions, see the module docstring).

    Example:
        >>> splits = load_series("gunpoint")
        >>> splits.train.values.shape, splits.test.values.shape, splits.classes
        (torch.Size([50, 1, 150]), torch.Size([150, 1, 150]), ['1', '2'])
    """
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}.")
    name = _canonical_name(name)
    train_series, train_names = _load_split(name, "train", data_root)
    test_series, test_names = _load_split(name, "test", data_root)
    if len(train_names) == 0 or len(test_names) == 0:
        raise DatasetError(f"time series dataset {name!r} has an empty split; check the files it was read from.")
    classes = _class_order(train_names)
    unseen = sorted(set(test_names) - set(classes))
    if unseen:
        raise DatasetError(f"the test split of {name!r} holds classes absent from its train split ({unseen}); a "
                           "classifier cannot predict them. Check that both files belong to the same dataset.")
    index = {label: position for position, label in enumerate(classes)}
    length = max(_series_length(train_series), _series_length(test_series))
    arrays = [_to_array(train_series, length), _to_array(test_series, length)]
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise DatasetError(f"the splits of {name!r} have {arrays[0].shape[1]} and {arrays[1].shape[1]} channels; "
                           "check that both files belong to the same dataset.")
    splits = []
    for array, names in zip(arrays, (train_names, test_names)):
        values = torch.from_numpy(array)
        if bool(torch.isnan(values).all(dim=(1, 2)).any()):
            raise DatasetError(f"time series dataset {name!r} holds a series with no values at all; remove it "
                               "from its file.")
        if normalize == "series" or (normalize == "auto" and values.shape[1] == 1):
            values = z_normalize(values)
        labels = torch.tensor([index[label] for label in names], dtype=torch.int64)
        splits.append(SeriesDataset(values.float(), labels))
    return SeriesSplits(name, splits[0], splits[1], classes)
