import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from contrastkit.errors import InputError
from contrastkit.evaluate import classification_metrics, confusion_matrix


def sklearn_metrics(y_true, y_pred):
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {"top1": skm.accuracy_score(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1}


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 12))
    n = int(rng.integers(5, 300))
    y_true = rng.integers(0, num_classes, n)
    # Mostly-correct predictions, so all four metrics are far from trivial.
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
    got = classification_metrics(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert got == pytest.approx(sklearn_metrics(y_true, y_pred), abs=1e-12)
    assert all(isinstance(v, float) for v in got.values())


def test_class_never_predicted_and_class_never_true():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 1, 3, 1])  # class 2 never predicted, class 3 never true
    got = classification_metrics(y_true, y_pred, num_classes=6)  # numpy input; classes 4, 5 absent
    assert got == pytest.approx(sklearn_metrics(y_true, y_pred), abs=1e-12)


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 5, 100), rng.integers(0, 5, 100)
    cm = confusion_matrix(torch.from_numpy(y_true), torch.from_numpy(y_pred), 6)
    assert cm.dtype == torch.int64 and cm.shape == (6, 6)
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(y_true, y_pred, labels=range(6)))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "match"),
    [
        (torch.tensor([0, 1]), torch.tensor([0, 1, 1]), None, "one prediction per label"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), None, "integer"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), None, "1-D"),
        (torch.tensor([0, -1]), torch.tensor([0, 1]), None, "negative"),
        (torch.tensor([0, 3]), torch.tensor([0, 1]), 3, "num_classes"),
        (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), None, "empty"),
    ],
)
def test_bad_inputs(y_true, y_pred, num_classes, match):
    with pytest.raises(InputError, match=match):
        classification_metrics(y_true, y_pred, num_classes)
