"""Evaluation for time series: the archives' 1-NN baselines on raw series, and TS2Vec's SVM probe.

* :func:`one_nn_euclidean`: 1-nearest-neighbour with the Euclidean distance over the whole
  (padded) length. NaN padding counts as 0, which after z-normalisation is each series' mean, so
  a short series is compared with a long one as if it continued at its mean.
* :func:`one_nn_dtw`: 1-nearest-neighbour with dynamic time warping (dependent DTW for several
  channels: the cost of aligning two timesteps is their squared Euclidean distance over the
  channels), each series taken at its own observed length, with an optional Sakoe-Chiba band
  (needs aeon).
* :func:`svm_probe`: an RBF-kernel SVM on frozen representations, its C picked by stratified
  cross-validation on the training set (TS2Vec's classification protocol).

The kNN and linear probes of :mod:`contrastkit.evaluate` apply to series representations as they
are. The distances are computed in float64.

DTW comes from aeon's numba ``dtw_pairwise_distance``, which was measured faster than a batched
torch wavefront (all pairs' cells of one anti-diagonal updated per step) written for this module:
on two CPU cores, 50 x 200 OSULeaf pairs (length 427, full window, float64) took 15 s with aeon
(n_jobs=2) against 23 s for the best wavefront (64 pairs per batch; larger batches were slower,
out of cache); the full OSULeaf test against train took 35 s with aeon, ACSF1's 100 x 100 pairs of
length 1460 51 s (87 s with one job).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit._series_padding import observed_lengths
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate.knn import _check_labels, _check_split

# TS2Vec's grid of SVM penalties.
SVM_C_GRID = tuple(10.0 ** exponent for exponent in range(-4, 5))


def _check_series_split(train_x: Tensor, train_y: Tensor, test_x: Tensor) -> None:
    check_ndim("train_x", train_x, 3, "(N_train, C, T)")
    check_ndim("test_x", test_x, 3, "(N_test, C, T)")
    if train_x.shape[1] != test_x.shape[1]:
        raise InputError(f"train_x has {train_x.shape[1]} channels but test_x has {test_x.shape[1]}; pass the two "
                         "splits of one dataset.")
    if train_x.shape[0] == 0:
        raise InputError("train_x is empty; pass at least one training series.")
    _check_labels("train_labels", train_y, train_x.shape[0], "train_x")


def one_nn_euclidean(train_x: Tensor, train_y: Tensor, test_x: Tensor) -> Tensor:
    """Labels (N_test,) of the nearest training series in Euclidean distance, NaN padding read as 0.

    Both splits must share the padded length T. Ties go to the first training series.

    Example:
        >>> train = torch.tensor([[[0.0, 0.0]], [[5.0, 5.0]]])
        >>> one_nn_euclidean(train, torch.tensor([0, 1]), torch.tensor([[[4.0, 6.0]]]))
        tensor([1])
    """
    _check_series_split(train_x, train_y, test_x)
    if train_x.shape[2] != test_x.shape[2]:
        raise InputError(f"train_x has length {train_x.shape[2]} but test_x has {test_x.shape[2]}; pad both splits "
                         "to one length (load_series does).")
    train = torch.nan_to_num(train_x.double(), nan=0.0).flatten(1)
    test = torch.nan_to_num(test_x.double(), nan=0.0).flatten(1)
    distances = torch.cdist(test, train.to(test.device))
    return train_y.to(test.device)[distances.argmin(dim=1)]


def _observed_series(x: Tensor) -> list[np.ndarray]:
    """Each series of ``x`` (N, C, T) as a float64 (C, length) array cut at its last observed position,
    NaN inside that length read as 0."""
    lengths = observed_lengths(x).tolist()
    if 0 in lengths:
        raise InputError("a series with no observed values has no DTW distance; remove all-NaN series.")
    values = torch.nan_to_num(x.detach().double().cpu(), nan=0.0).numpy()
    # Contiguous copies: aeon's numba kernels do not compile for a list of strided views.
    return [np.ascontiguousarray(values[row, :, :length]) for row, length in enumerate(lengths)]


def dtw_distances(x: Tensor, y: Tensor, *, window: float | None = None) -> Tensor:
    """DTW distances (N, M) between every series of ``x`` (N, C, T) and of ``y`` (M, C, T'), float64
    on the CPU (computed by aeon, which must be installed).

    Each series is taken up to its last observed (non-NaN) position; NaN inside that length is read
    as 0. The distance is the square root of the smallest sum, along a warping path, of squared
    Euclidean distances between aligned timesteps (over all channels: dependent DTW), so two equal
    series are at 0 and an unwarped path gives the Euclidean distance. ``window`` limits the path
    to aeon's Sakoe-Chiba band: |i - j| <= int(window * shorter length) for series of one length,
    the band following the diagonal from start to end otherwise. None: no band (the archives'
    "full window" baseline).

    Example:
        >>> x = torch.tensor([[[0.0, 1.0, 2.0]]])
        >>> y = torch.tensor([[[0.0, 0.0, 1.0, 2.0]]])
        >>> dtw_distances(x, y)
        tensor([[0.]], dtype=torch.float64)
    """
    check_ndim("x", x, 3, "(N, C, T)")
    check_ndim("y", y, 3, "(M, C, T)")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"x has {x.shape[1]} channels but y has {y.shape[1]}; DTW aligns series of one width.")
    if window is not None and not (isinstance(window, (int, float)) and not isinstance(window, bool)
                                   and 0 <= window <= 1):
        raise ConfigError(f"window must be a fraction in [0, 1] of the series length, or None for no band; got "
                          f"{window!r}.")
    try:
        from aeon.distances import dtw_pairwise_distance
    except ImportError as error:
        raise ConfigError("1-NN DTW needs aeon: pip install aeon") from error
    with warnings.catch_warnings():
        # numba notes an unsigned-to-signed index cast inside aeon, harmless for series this short.
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        squared = dtw_pairwise_distance(_observed_series(x), _observed_series(y), window=window,
                                        n_jobs=torch.get_num_threads())
    return torch.from_numpy(np.sqrt(squared))


def one_nn_dtw(train_x: Tensor, train_y: Tensor, test_x: Tensor, *, window: float | None = None) -> Tensor:
    """Labels (N_test,) of the nearest training series in DTW distance (:func:`dtw_distances`).

    Example:
        >>> train = torch.tensor([[[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
        >>> one_nn_dtw(train, torch.tensor([0, 1]), torch.tensor([[[0.0, 0.0, 1.0, 0.0]]]))
        tensor([0])
    """
    _check_series_split(train_x, train_y, test_x)
    distances = dtw_distances(test_x, train_x.to(test_x.device), window=window)
    return train_y.to(test_x.device)[distances.argmin(dim=1)]


def svm_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, *, folds: int = 5) -> Tensor:
    """Fit an RBF-kernel SVM (scikit-learn's SVC, gamma="scale") and return int64 test predictions.

    C is chosen from 1e-4 ... 1e4 by stratified ``folds``-fold cross-validation accuracy on the
    training set (the smallest best C). With fewer than ``folds`` samples in some class the folds
    shrink to that class's count; a class with a single sample leaves nothing to validate on, and
    SVC's default C = 1 is used.

    Example:
        >>> train = torch.randn(40, 8); labels = (train[:, 0] > 0).long()
        >>> svm_probe(train, labels, train[:5]).shape
        torch.Size([5])
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    _check_split(train_features, train_labels, test_features)
    if not (isinstance(folds, int) and folds >= 2):
        raise ConfigError(f"folds must be an integer >= 2, got {folds!r}; 5 is TS2Vec's choice.")
    features = train_features.double().cpu().numpy()
    labels = train_labels.cpu().numpy()
    present = np.unique(labels)
    if len(present) < 2:
        raise InputError(f"svm_probe needs at least two classes in train_labels, got only {present.tolist()}.")
    smallest_class = int(np.bincount(labels)[present].min())
    if smallest_class < 2:
        model = SVC(kernel="rbf", gamma="scale").fit(features, labels)
    else:
        search = GridSearchCV(SVC(kernel="rbf", gamma="scale"), {"C": list(SVM_C_GRID)},
                              cv=StratifiedKFold(n_splits=min(folds, smallest_class)))
        model = search.fit(features, labels).best_estimator_
    predictions = model.predict(test_features.double().cpu().numpy())
    return torch.from_numpy(predictions.astype(np.int64))
