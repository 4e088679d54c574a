"""Fine-tuning with a fraction of the labels: the class-balanced subsets' invariants, a fresh copy
for the from-scratch baseline, the whole encoder trained, and the protocol's keys."""

import pytest
import torch
from torch import nn

from contrastkit.errors import ConfigError
from contrastkit.evaluate import (FineTuneTask, class_balanced_subset, fine_tune, label_fraction_scores,
                                  reinitialised)
from contrastkit.evaluate.fine_tune import fraction_name, predict


def imbalanced_labels():
    # 300, 120 and 7 samples: 1 % of the last class rounds to zero and must still give one.
    return torch.cat([torch.zeros(300), torch.ones(120), torch.full((7,), 2)]).long()[torch.randperm(427)]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_a_subset_takes_the_fraction_of_every_class_and_at_least_one(fraction):
    labels = imbalanced_labels()
    rows = class_balanced_subset(labels, fraction, seed=3)
    assert rows.dtype == torch.int64 and torch.equal(rows, rows.sort().values) and rows.unique().numel() == rows.numel()
    for label, count in zip(*labels.unique(return_counts=True)):
        assert int((labels[rows] == label).sum()) == max(1, round(fraction * int(count)))


def test_subsets_are_seeded_and_nested():
    labels = imbalanced_labels()
    one, ten, all_rows = (class_balanced_subset(labels, fraction, seed=7) for fraction in (0.01, 0.1, 1.0))
    assert torch.equal(one, class_balanced_subset(labels, 0.01, seed=7))
    assert not torch.equal(ten, class_balanced_subset(labels, 0.1, seed=8))
    assert set(one.tolist()) <= set(ten.tolist()) <= set(all_rows.tolist())
    assert torch.equal(all_rows, torch.arange(len(labels)))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ConfigError, match=r"label fraction must lie in \(0, 1\]"):
        class_balanced_subset(torch.tensor([0, 1]), fraction)


def test_fraction_names():
    assert [fraction_name(f) for f in (0.01, 0.1, 1.0, 0.005)] == ["1pct", "10pct", "100pct", "0_5pct"]


class WithToken(nn.Module):
    """A module holding a bare parameter, as a ViT holds its class token."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.full((4,), 5.0))
        self.linear = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)


def test_the_scratch_copy_has_fresh_weights_and_leaves_the_original():
    torch.manual_seed(0)
    model = WithToken()
    with torch.no_grad():
        model.norm.weight.fill_(3.0)
        model.norm.running_mean.fill_(2.0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fresh = reinitialised(model, seed=1)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert torch.equal(fresh.norm.weight, torch.ones(4)) and torch.equal(fresh.norm.running_mean, torch.zeros(4))
    assert not torch.equal(fresh.linear.weight, model.linear.weight)
    assert fresh.token.abs().max() < 0.2  # N(0, 0.02^2), no longer the 5.0 it held
    again = reinitialised(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))


def separable_task(n=200, dim=16, noise=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    inputs = noise * torch.randn(n, dim, generator=generator) + 2.0 * labels[:, None]
    return FineTuneTask(inputs[: n // 2], labels[: n // 2], inputs[n // 2:], labels[n // 2:], num_classes=2)


def test_fine_tuning_trains_the_whole_encoder_and_classifies():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    start = encoder[0].weight.detach().clone()
    task = separable_task()
    classifier = fine_tune(encoder, task, epochs=5, lr=1e-2, seed=0)
    assert not torch.equal(encoder[0].weight, start)  # the encoder itself moved, not only the head
    assert (predict(classifier, task) == task.test_labels).float().mean() >= 0.95


def test_the_protocol_scores_each_fraction_beside_scratch_and_keeps_the_encoder():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    state = {name: value.clone() for name, value in encoder.state_dict().items()}
    task = separable_task()
    scores = label_fraction_scores(encoder, task, (0.1, 1.0), epochs=2, min_steps=30, lr=1e-2)
    metrics = ("top1", "precision", "recall", "f1")
    assert set(scores) == {f"{prefix}finetune_{name}_{metric}" for prefix in ("", "scratch_")
                           for name in ("10pct", "100pct") for metric in metrics} | {
        "finetune_10pct_labels", "finetune_100pct_labels"}
    assert scores["finetune_10pct_labels"] == 10 and scores["finetune_100pct_labels"] == 100
    assert all(0 <= value <= 1 for key, value in scores.items() if not key.endswith("labels"))
    assert all(torch.equal(value, state[name]) for name, value in encoder.state_dict().items())
    assert not any(key.startswith("scratch_") for key in label_fraction_scores(
        encoder, task, (1.0,), epochs=1, min_steps=2, scratch=False))


def test_a_pretrained_encoder_beats_scratch_with_few_labels():
    # The class lies along one of 64 noisy directions: an encoder that already reads it out needs
    # few labels, a fresh one must find it from ten samples.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    inputs = torch.randn(400, 64, generator=generator)
    inputs[:, 0] += 3.0 * (2 * labels - 1)
    task = FineTuneTask(inputs[:200], labels[:200], inputs[200:], labels[200:], num_classes=2)
    pretrained = nn.Linear(64, 4)
    with torch.no_grad():
        pretrained.weight.zero_()
        pretrained.weight[:, 0] = 1.0
        pretrained.bias.zero_()
    scores = label_fraction_scores(pretrained, task, (0.05,), epochs=1, min_steps=50, lr=1e-2)
    assert scores["finetune_5pct_top1"] >= 0.95 and scores["finetune_5pct_top1"] > scores["scratch_finetune_5pct_top1"]


def test_sentences_are_tokenised_by_the_encoder():
    class BagOfWords(nn.Module):
        words = ["cats", "dogs", "rain", "sun"]

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def tokenize(self, texts):
            return {"counts": torch.tensor([[text.split().count(word) for word in self.words] for text in texts],
                                           dtype=torch.float32)}

        def forward(self, tokens):
            return self.linear(tokens["counts"])

    texts = [f"{'cats' if i % 2 else 'dogs'} and {'rain' if i % 3 else 'sun'}" for i in range(40)]
    labels = torch.arange(40) % 2
    task = FineTuneTask(texts, labels, texts, labels, num_classes=2)
    scores = label_fraction_scores(BagOfWords(), task, (1.0,), epochs=5, lr=5e-2, scratch=False)
    assert scores["finetune_100pct_top1"] == 1.0
