"""Linear probe and the feature extraction that feeds it."""

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from torch import nn

from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate import extract_features, linear_probe


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return tuple(torch.as_tensor(a) for a in (x_train, y_train, x_test, y_test))


def test_reaches_logistic_regression_accuracy_on_digits(digits):
    x_train, y_train, x_test, y_test = digits
    preds = linear_probe(x_train.float(), y_train, x_test.float())
    accuracy = (preds == y_test).double().mean().item()
    sklearn_accuracy = LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test)
    assert preds.dtype == torch.int64 and preds.shape == y_test.shape
    assert accuracy >= 0.93
    assert accuracy >= sklearn_accuracy - 0.02


def test_deterministic(digits):
    x_train, y_train, x_test, _ = digits
    first = linear_probe(x_train, y_train, x_test, batch_size=500)  # float64 input, chunked loss
    assert torch.equal(first, linear_probe(x_train, y_train, x_test, batch_size=500))


def test_works_on_inference_tensors_inside_inference_mode(digits):
    x_train, y_train, x_test, y_test = digits
    with torch.inference_mode():
        preds = linear_probe(x_train.float().clone(), y_train.clone(), x_test.float().clone())
    assert (preds == y_test).double().mean() >= 0.93


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test_features": torch.randn(4, 5)}, InputError, "D=8"),
        ({"weight_decay": -1.0}, ConfigError, "weight_decay"),
        ({"max_iter": 0}, ConfigError, "max_iter"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = {"test_features": torch.randn(4, 8)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_probe(torch.randn(10, 8), torch.zeros(10, dtype=torch.long), args.pop("test_features"), **args)


def test_nan_features_are_rejected():
    train = torch.randn(10, 8)
    train[0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN"):
        linear_probe(train, torch.zeros(10, dtype=torch.long), torch.randn(4, 8))


# --- extract_features ---------------------------------------------------------------------


def small_encoder():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6),
    )


def test_extract_features_matches_eval_forward_and_restores_modes():
    encoder = small_encoder().double()  # float64 weights: output must still come back float32
    encoder.train()
    encoder[1].eval()  # a deliberately frozen BatchNorm must stay frozen afterwards
    images = torch.randn(10, 3, 8, 8, dtype=torch.float64)
    feats = extract_features(encoder, images, batch_size=3)
    assert feats.shape == (10, 6) and feats.dtype == torch.float32
    assert not feats.is_inference() and not feats.requires_grad
    assert encoder.training and not encoder[1].training and encoder[3].training
    encoder.eval()
    with torch.no_grad():
        expected = encoder(images).float()  # eval mode: dropout off, BN running stats
    torch.testing.assert_close(feats, expected)


def test_extract_features_uint8_with_and_without_transform():
    encoder = small_encoder()
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    seen = []

    def transform(batch):
        seen.append(batch.dtype)
        return (batch.float() - 128) / 64

    with_transform = extract_features(encoder, images, transform, batch_size=2)
    assert seen == [torch.uint8] * 3
    torch.testing.assert_close(with_transform, encoder.eval()((images.float() - 128) / 64).detach())
    without = extract_features(encoder, images)  # uint8 without transform: scaled to [0, 1]
    torch.testing.assert_close(without, encoder(images.float() / 255).detach())


def test_extract_features_bad_inputs():
    with pytest.raises(InputError, match=r"N samples along the first dimension .*got shape \(8,\)"):
        extract_features(small_encoder(), torch.randn(8))
    with pytest.raises(ConfigError, match="batch_size"):
        extract_features(small_encoder(), torch.randn(2, 3, 8, 8), batch_size=0)
