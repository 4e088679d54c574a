"""Fine-tuning with a fraction of the labels, beside the same network trained from scratch.

The semi-supervised protocol of SimCLRv2 (Chen et al., 2020): the whole pretrained encoder and a
new linear head are trained on 1 %, 10 % and 100 % of the labelled training set (class-balanced
subsets) and scored on the test split. The baseline column is the same architecture, freshly
initialised, trained on the same subsets with the same optimiser and steps: what the pretraining
is worth when labels are few.

The subsets are nested (the 1 % subset lies inside the 10 % one) and depend only on the labels and
the seed. Training is AdamW with a cosine schedule on the inputs as the encoder sees them at
evaluation (the eval view for images): SimCLRv2 adds random crops and flips, which here would tie
the protocol to images; the same inputs for both columns keep the comparison fair.

Example:
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    >>> gen = torch.Generator().manual_seed(0)
    >>> labels = torch.arange(2).repeat(50)
    >>> inputs = torch.randn(100, 16, generator=gen) + 3 * labels[:, None]
    >>> task = FineTuneTask(inputs, labels, inputs[:20], labels[:20], num_classes=2)
    >>> scores = label_fraction_scores(encoder, task, fractions=(0.1, 1.0), epochs=5, lr=1e-2)
    >>> scores["finetune_10pct_labels"], scores["finetune_100pct_top1"]
    (10, 1.0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_class_labels
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate.metrics import classification_metrics

# The fractions of the labels SimCLRv2 reports (1 % and 10 % of ImageNet), and all of them.
LABEL_FRACTIONS = (0.01, 0.1, 1.0)

Inputs = Tensor | Sequence[str]


@dataclass
class FineTuneTask:
    """A labelled train / test split in the form an encoder takes.

    Args:
        train_inputs: (N, ...) samples (uint8 images, float series, vectors) or a list of sentences
            (for a text encoder with ``tokenize``, as :class:`contrastkit.models.text.TextEncoder`).
        train_labels: (N,) class ids.
        test_inputs: the test samples, in the same form.
        test_labels: their class ids.
        num_classes: the number of classes (the head's outputs).
        transform: applied to each batch of a tensor on the device before the encoder (an eval view
            turning uint8 images into normalised floats); None: uint8 is scaled to [0, 1].
        encoder_lr: the encoder's learning rate; the head's is ``lr`` (a pretrained transformer
            wants about 2e-5, far below what a new head and a small CNN take).
    """

    train_inputs: Inputs
    train_labels: Tensor
    test_inputs: Inputs
    test_labels: Tensor
    num_classes: int
    transform: Callable[[Tensor], Tensor] | None = None
    encoder_lr: float | None = None


def class_balanced_subset(labels: Tensor, fraction: float, *, seed: int = 0) -> Tensor:
    """Indices (sorted, int64) of a seeded class-balanced subset: of each class, ``round(fraction *
    its count)`` samples and at least one. Each class's samples are drawn in one seeded order and
    the subset takes its first ones, so a smaller fraction's subset lies inside a larger one's.

    Args:
        labels: (N,) non-negative class ids.
        fraction: in (0, 1]; 1 gives every index.
        seed: the draw's seed.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
        >>> class_balanced_subset(labels, 0.5, seed=0).numel()
        5
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must lie in (0, 1], got {fraction}; 0.01 is 1 % of the labels.")
    check_class_labels("labels", labels)
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        # One permutation per class from the same generator state order, whatever the fraction.
        members = members[torch.randperm(members.numel(), generator=generator)]
        chosen.append(members[:max(1, round(fraction * members.numel()))])
    return torch.cat(chosen).sort().values


def reinitialised(encoder: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``encoder`` with fresh weights: the baseline trained from scratch.

    Every submodule with ``reset_parameters`` (convolutions, linear layers, norms, embeddings)
    draws its own default initialisation; parameters held by modules without one (a ViT's class
    token, a learned position table) are drawn from N(0, 0.02^2), the usual transformer
    initialisation. Batch-norm statistics are reset with their layers.

    Args:
        encoder: the network to copy (left untouched).
        seed: the seed of the draws.
    """
    fresh = copy.deepcopy(encoder)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset.update(id(parameter) for parameter in module.parameters(recurse=False))
        with torch.no_grad():
            for parameter in fresh.parameters():
                if id(parameter) not in reset:
                    nn.init.normal_(parameter, std=0.02)
    return fresh


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _encode(encoder: nn.Module, inputs: Inputs, rows: Tensor, transform: Callable[[Tensor], Tensor] | None,
            device: torch.device) -> Tensor:
    """The encoder's (B, D) features of the ``rows`` of ``inputs`` (tensor samples or sentences)."""
    if isinstance(inputs, Tensor):
        batch = inputs[rows.to(inputs.device)].to(device, non_blocking=True)
        if transform is not None:
            batch = transform(batch)
        elif not batch.is_floating_point():
            batch = batch.float().div_(255.0)
        return encoder(batch).flatten(1)
    tokens = encoder.tokenize([inputs[row] for row in rows.tolist()])
    return encoder({key: value.to(device) for key, value in tokens.items()}).flatten(1)


def fine_tune(encoder: nn.Module, task: FineTuneTask, rows: Tensor | None = None, *, epochs: int = 30,
              min_steps: int = 100, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
              seed: int = 0) -> nn.Module:
    """Train ``encoder`` (in place) and a new linear head on the ``rows`` of the task's train split.

    Args:
        encoder: the network to fine-tune (pass a copy to keep the original).
        task: the labelled data.
        rows: which training samples (default: all).
        epochs: passes over the rows; training takes at least ``min_steps`` steps, so that a 1 %
            subset of a few dozen samples is trained as long as it needs to fit.
        min_steps: the fewest optimiser steps.
        batch_size: samples per step (all of them where there are fewer).
        lr: AdamW's learning rate (the encoder's too unless ``task.encoder_lr``), cosine to zero.
        weight_decay: AdamW's decoupled weight decay.
        seed: the head's initialisation and the order of the batches.

    Returns:
        ``nn.Sequential``-like classifier: call :func:`predict` with it.
    """
    for name, value in (("epochs", epochs), ("min_steps", min_steps), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}.")
    labels = task.train_labels
    rows = torch.arange(len(labels)) if rows is None else rows.cpu()
    if rows.numel() == 0:
        raise InputError("no training rows to fine-tune on; give a larger label fraction.")
    device = _device_of(encoder)
    generator = torch.Generator().manual_seed(seed)
    encoder.eval()  # the probe for the feature size must not move batch-norm statistics
    with torch.no_grad():
        dim = _encode(encoder, task.train_inputs, rows[:2], task.transform, device).shape[1]
    encoder.train()
    head = nn.Linear(dim, task.num_classes).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": task.encoder_lr or lr},
                                   {"params": head.parameters(), "lr": lr}], weight_decay=weight_decay)
    batch = min(batch_size, rows.numel())
    steps_per_epoch = math.ceil(rows.numel() / batch)
    total = max(epochs * steps_per_epoch, min_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    targets = labels.to(device)
    step = 0
    while step < total:
        order = rows[torch.randperm(rows.numel(), generator=generator)]
        for start in range(0, steps_per_epoch * batch, batch):
            chunk = order[start:start + batch]
            # A last batch of one sample would make batch norm's training statistics undefined.
            if chunk.numel() < 2 and rows.numel() > 1:
                continue
            logits = head(_encode(encoder, task.train_inputs, chunk, task.transform, device))
            loss = F.cross_entropy(logits, targets[chunk.to(device)])
            if not torch.isfinite(loss):
                raise InputError(f"fine-tuning diverged (loss {loss.item()}) at step {step}; lower lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step == total:
                break
    return nn.Sequential(encoder, head)


@torch.no_grad()
def predict(classifier: nn.Module, task: FineTuneTask, *, batch_size: int = 512) -> Tensor:
    """The classifier's int64 predictions (CPU) for the task's test split, in eval mode."""
    encoder, head = classifier[0], classifier[1]
    encoder.eval()
    device = _device_of(encoder)
    predictions = []
    for start in range(0, len(task.test_labels), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(task.test_labels)))
        predictions.append(head(_encode(encoder, task.test_inputs, rows, task.transform, device)).argmax(1).cpu())
    return torch.cat(predictions)


def fraction_name(fraction: float) -> str:
    """The key of a label fraction: 0.01 -> "1pct", 0.1 -> "10pct", 1.0 -> "100pct"."""
    return f"{fraction * 100:g}pct".replace(".", "_")


def label_fraction_scores(encoder: nn.Module, task: FineTuneTask, fractions: Sequence[float] = LABEL_FRACTIONS, *,
                          scratch: bool = True, epochs: int = 30, min_steps: int = 100, batch_size: int = 256,
                          lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """Fine-tune copies of ``encoder`` on class-balanced ``fractions`` of the labels and score each on
    the test split, beside the same network trained from scratch on the same subset.

    Args:
        encoder: the pretrained encoder (copied: it is left as it was).
        task: the labelled splits.
        fractions: label fractions in (0, 1].
        scratch: also train the freshly initialised network (``scratch_`` keys).
        epochs, min_steps, batch_size, lr, weight_decay: as :func:`fine_tune`.
        seed: the subsets' draw, the heads' initialisation and the batches' order.

    Returns:
        ``finetune_<fraction>_<metric>`` (top1, precision, recall, f1) and, with ``scratch``,
        ``scratch_finetune_<fraction>_<metric>``; ``finetune_<fraction>_labels``: the subset's size.
    """
    if not len(fractions):
        raise ConfigError("fractions is empty; give label fractions such as 0.01, 0.1, 1.0.")
    settings = dict(epochs=epochs, min_steps=min_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    seed=seed)
    starts = {"": encoder}
    if scratch:
        starts["scratch_"] = reinitialised(encoder, seed=seed)
    results: dict[str, float] = {}
    for fraction in fractions:
        rows = class_balanced_subset(task.train_labels, fraction, seed=seed)
        name = fraction_name(fraction)
        results[f"finetune_{name}_labels"] = rows.numel()
        for prefix, start in starts.items():
            classifier = fine_tune(copy.deepcopy(start), task, rows, **settings)
            metrics = classification_metrics(task.test_labels, predict(classifier, task), num_classes=task.num_classes)
            results.update({f"{prefix}finetune_{name}_{key}": value for key, value in metrics.items()})
    return results
