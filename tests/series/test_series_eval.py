"""1-NN baselines (Euclidean, DTW) against hand computations and naive loops; the SVM probe."""

import math

import numpy as np
import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate.series import dtw_distances, one_nn_dtw, one_nn_euclidean, svm_probe


def naive_dtw(a, b, band=None):
    """float64 DTW of a (C, n) and b (C, m) with the plain O(nm) recurrence; band: |i - j| limit."""
    n, m = a.shape[1], b.shape[1]
    table = [[math.inf] * (m + 1) for _ in range(n + 1)]
    table[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if band is not None and abs(i - j) > band:
                continue
            cost = sum((float(a[c, i - 1]) - float(b[c, j - 1])) ** 2 for c in range(a.shape[0]))
            table[i][j] = cost + min(table[i - 1][j], table[i][j - 1], table[i - 1][j - 1])
    return math.sqrt(table[n][m])


def pad(series, length):
    """(C, n) series NaN-padded to (C, length)."""
    out = torch.full((series.shape[0], length), float("nan"), dtype=torch.float64)
    out[:, :series.shape[1]] = series
    return out


def test_dtw_of_a_hand_computed_3_by_4_example():
    pytest.importorskip("aeon")
    # costs (x_i - y_j)^2 with x = 1 2 3, y = 1 1 2 4; the best path (0,0) (0,1) (1,2) (2,3) costs 0+0+0+1
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    y = torch.tensor([[[1.0, 1.0, 2.0, 4.0]]])
    assert dtw_distances(x, y).item() == 1.0
    assert dtw_distances(y, x).item() == 1.0


def test_dtw_matches_the_naive_recurrence_on_unequal_multivariate_series():
    pytest.importorskip("aeon")
    generator = torch.Generator().manual_seed(0)
    lengths_x, lengths_y = [7, 12, 9], [12, 5, 10, 8]
    xs = [torch.randn(2, n, generator=generator, dtype=torch.float64) for n in lengths_x]
    ys = [torch.randn(2, n, generator=generator, dtype=torch.float64) for n in lengths_y]
    x = torch.stack([pad(series, 12) for series in xs])
    y = torch.stack([pad(series, 12) for series in ys])
    distances = dtw_distances(x, y)
    assert distances.shape == (3, 4) and distances.dtype == torch.float64
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            assert math.isclose(distances[i, j].item(), naive_dtw(a, b), rel_tol=1e-12)


def test_dtw_band_and_its_limits():
    pytest.importorskip("aeon")
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 1, 20, generator=generator), torch.randn(2, 1, 20, generator=generator)
    banded = dtw_distances(x, y, window=0.1)
    for i in range(3):
        for j in range(2):
            assert math.isclose(banded[i, j].item(), naive_dtw(x[i].double(), y[j].double(), band=2), rel_tol=1e-6)
    # no warping at all: the Euclidean distance; and a band never shortens the full-window distance
    assert torch.allclose(dtw_distances(x, y, window=0.0), torch.cdist(x.flatten(1), y.flatten(1)).double(),
                          rtol=1e-6)
    assert (dtw_distances(x, y) <= banded + 1e-12).all()
    with pytest.raises(ConfigError, match="window"):
        dtw_distances(x, y, window=2.0)
    with pytest.raises(InputError, match="channels"):
        dtw_distances(x, torch.randn(2, 2, 20))


def test_one_nn_dtw_labels_follow_the_naive_distances():
    pytest.importorskip("aeon")
    generator = torch.Generator().manual_seed(2)
    train, test = torch.randn(6, 1, 15, generator=generator), torch.randn(5, 1, 15, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    expected = [labels[int(np.argmin([naive_dtw(t.double(), r.double()) for r in train]))].item() for t in test]
    assert one_nn_dtw(train, labels, test).tolist() == expected


def test_one_nn_euclidean_reads_padding_as_zero():
    generator = torch.Generator().manual_seed(3)
    train, test = torch.randn(8, 2, 10, generator=generator), torch.randn(4, 2, 10, generator=generator)
    train[2, :, 6:] = float("nan")
    test[1, :, 3:] = float("nan")
    labels = torch.arange(8) % 3
    filled_train, filled_test = train.nan_to_num(0.0).double(), test.nan_to_num(0.0).double()
    expected = [labels[int(((filled_train - t) ** 2).sum(dim=(1, 2)).argmin())].item() for t in filled_test]
    assert one_nn_euclidean(train, labels, test).tolist() == expected
    assert one_nn_euclidean(train, labels, train).equal(labels)
    with pytest.raises(InputError, match="length"):
        one_nn_euclidean(train, labels, test[:, :, :9])
    with pytest.raises(InputError, match="entries"):
        one_nn_euclidean(train, labels[:5], test)


def test_svm_probe_separates_clusters_and_falls_back_without_folds():
    generator = torch.Generator().manual_seed(4)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    labels = torch.arange(60) % 3
    features = centres[labels] + 0.5 * torch.randn(60, 2, generator=generator)
    test_labels = torch.arange(30) % 3
    test = centres[test_labels] + 0.5 * torch.randn(30, 2, generator=generator)
    predictions = svm_probe(features, labels, test)
    assert predictions.dtype == torch.int64 and predictions.equal(test_labels)
    # one sample of class 2: no folds to validate on, SVC's default C instead
    few = torch.cat([labels[labels < 2], torch.tensor([2])])
    few_features = torch.cat([features[labels < 2], features[labels == 2][:1]])
    assert svm_probe(few_features, few, test).shape == (30,)
    with pytest.raises(InputError, match="two classes"):
        svm_probe(features, torch.zeros(60, dtype=torch.long), test)
    with pytest.raises(ConfigError, match="folds"):
        svm_probe(features, labels, test, folds=1)
