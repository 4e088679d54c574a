"""AtariARI's probe protocol (Anand et al., 2019): one linear probe per state variable on frozen features.

Each state variable (a RAM byte, :func:`contrastkit.data.atariari.ram_labels`) is a 256-way
classification; its probe is one linear layer on the frozen features, trained with Adam (lr 3e-4,
eps 1e-5) on batches of 64 for at most 100 epochs. After each epoch the probe's accuracy on the
val split drives both a learning-rate schedule (x 0.2 after 5 epochs without improvement, down
to 1e-5) and early stopping (the probe stops after 15 epochs without a new best; its last weights
are kept, as in AtariARI's ``probe.py``). A probe is scored by the **support-weighted** F1 of its
test predictions (scikit-learn's ``f1_score(average="weighted")``, as AtariARI computes it).

A game's score in the paper is the mean over five categories of the mean F1 of the category's
variables (:func:`category_mean`), so that games with many variables of one kind (15 asteroid
positions) do not weigh that kind 15 times; :func:`state_probe_scores` also gives the plain
mean over the variables.

AtariARI draws the frames of an epoch with replacement, a uniform episode then a uniform frame
of it, for training and for the val accuracy alike; given the episode ids (``train_episode``,
``val_episode``) we do the same, else an epoch is a permutation of the frames and the val
accuracy is over every val frame. The draw matters for early stopping: on a resampled val set
the accuracy fluctuates, so a probe that learns slowly (on weak features) keeps finding new
bests and trains longer than on a fixed val set. The test F1 is computed once over every test
frame (AtariARI resamples the test frames too, which only adds noise).

Plain functions on feature tensors, usable in any loop:

    probes = train_state_probes(train_x, train_labels, val_x, val_labels)
    f1 = probe_f1(probes, test_x, test_labels)            # {variable: weighted F1}
    score = category_mean(f1)                             # the paper's per-game figure

Example (a variable the features encode linearly):
    >>> x = torch.randn(600, 8, generator=torch.Generator().manual_seed(0)) * 4; y = (x[:, 0] > 0).long() * 7
    >>> probes = train_state_probes(x[:400], {"v": y[:400]}, x[400:500], {"v": y[400:500]}, lr=1e-2, epochs=30)
    >>> probe_f1(probes, x[500:], {"v": y[500:]})["v"] > 0.9
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_class_labels, check_count, check_embeddings, check_finite, check_positive
from contrastkit.errors import ConfigError, InputError

__all__ = ["CATEGORIES", "StateProbes", "category_mean", "probe_f1", "state_probe_scores", "train_state_probes",
           "variable_categories", "weighted_f1"]

CATEGORIES = ("small_object_localization", "agent_localization", "other_localization",
              "score_clock_lives_display", "misc")
"""The paper's five categories of state variables (its Table 3)."""


def variable_categories(name: str) -> tuple[str, ...]:
    """The categories of the state variable ``name``, by the words in its name as AtariARI sorts them.

    Positions (``_x``, ``_y``, ``_z``, ``_column``) of a ball or missile are small objects, of the
    player or agent otherwise agent, and the rest other localization; scores, clocks, lives,
    meters and displays form one category; counts, existence bits, levels / rooms and directions
    are misc. A name can fall in two (asteroids' ``num_lives_direction``) or in none (``angle_of_tank``).
    """
    found = []
    if any(word in name for word in ("_x", "_y", "_z", "_column")):
        if any(word in name for word in ("ball", "missile")):
            found.append("small_object_localization")
        elif any(word in name for word in ("agent", "player")):
            found.append("agent_localization")
        else:
            found.append("other_localization")
    if any(word in name for word in ("score", "clock", "lives", "lifes", "meter", "display")):
        found.append("score_clock_lives_display")
    if any(word in name for word in ("count", "bit_map", "existence", "level", "room", "game_state", "direction")):
        found.append("misc")
    return tuple(found)


def category_mean(f1: dict[str, float]) -> float:
    """The paper's per-game score: the mean over categories of the mean F1 of each category's variables.

    Variables of no category count in no mean. Raises InputError when no variable has a category.
    """
    per_category = {c: [v for k, v in f1.items() if c in variable_categories(k)] for c in CATEGORIES}
    means = [sum(v) / len(v) for v in per_category.values() if v]
    if not means:
        raise InputError(f"none of the variables {sorted(f1)} falls in a category of the paper; "
                         "use the plain mean over variables instead.")
    return sum(means) / len(means)


def weighted_f1(predictions: Tensor, labels: Tensor) -> float:
    """The support-weighted mean over classes of the per-class F1, as sklearn's
    ``f1_score(labels, predictions, average="weighted")`` (a class never predicted scores 0).

    Args:
        predictions: (N,) predicted class ids (non-negative integers).
        labels: (N,) true class ids.
    """
    predictions, labels = torch.as_tensor(predictions), torch.as_tensor(labels)
    for name, tensor in (("predictions", predictions), ("labels", labels)):
        check_class_labels(name, tensor)
        if tensor.ndim != 1:
            raise InputError(f"{name} must be a 1-dim tensor of class ids, got shape {tuple(tensor.shape)}.")
    if predictions.shape != labels.shape:
        raise InputError(f"predictions and labels must have the same length, got {predictions.numel()} "
                         f"and {labels.numel()}.")
    if labels.numel() == 0:
        raise InputError("weighted_f1 got no labels; the test split is empty.")
    predictions, labels = predictions.long().cpu(), labels.long().cpu()
    if bool((predictions < 0).any() or (labels < 0).any()):
        raise InputError("class ids must be non-negative.")
    size = int(max(predictions.max(), labels.max())) + 1
    true_positive = torch.bincount(labels[predictions == labels], minlength=size).double()
    support = torch.bincount(labels, minlength=size).double()
    predicted = torch.bincount(predictions, minlength=size).double()
    # 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + support); a class with neither scores 0 and has no weight.
    denominator = predicted + support
    f1 = torch.where(denominator > 0, 2 * true_positive / denominator.clamp_min(1), torch.zeros_like(denominator))
    return float((f1 * support).sum() / support.sum())


@dataclass
class StateProbes:
    """Trained linear probes, one per state variable.

    Attributes:
        names: the variables, in the order of the weights' first dimension.
        weight: (V, D, K) the probes' weights (features @ weight[v] + bias[v] are variable v's logits).
        bias: (V, K) their biases.
        epochs: {variable: epochs trained before it stopped}.
        val_accuracy: {variable: its val accuracy after its last epoch}.
    """

    names: list[str]
    weight: Tensor
    bias: Tensor
    epochs: dict[str, int] = field(default_factory=dict)
    val_accuracy: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, features: Tensor, batch_size: int = 4096) -> Tensor:
        """The (V, N) predicted class of every variable for (N, D) ``features``."""
        check_embeddings("features", features, "(frames, dim)")
        if features.shape[1] != self.weight.shape[1]:
            raise InputError(f"features have dim {features.shape[1]} but the probes were trained on "
                             f"{self.weight.shape[1]}-dim features.")
        out = [_logits(chunk.to(self.weight), self.weight, self.bias).argmax(-1)
               for chunk in features.split(batch_size)]
        return torch.cat(out, dim=1)


def _logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """(V, B, K) logits of every probe for (B, D) features."""
    return torch.einsum("bd,vdk->vbk", features, weight) + bias[:, None, :]


def _stack_labels(labels: dict[str, Tensor], names: list[str], rows: int, what: str, num_classes: int) -> Tensor:
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{what} must be a non-empty dict {{variable: (N,) int64 labels}}.")
    if sorted(labels) != sorted(names):
        raise InputError(f"{what} has variables {sorted(labels)} but the probes are for {sorted(names)}.")
    stacked = []
    for name in names:
        values = torch.as_tensor(labels[name])
        check_class_labels(f"{what}[{name!r}]", values)
        if values.shape != (rows,):
            raise InputError(f"{what}[{name!r}] has shape {tuple(values.shape)} but there are {rows} feature rows.")
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise InputError(f"{what}[{name!r}] holds values outside [0, {num_classes - 1}]; RAM labels are bytes "
                             "0..255.")
        stacked.append(values.long())
    return torch.stack(stacked)


def _epoch_order(rows: int, episode: Tensor | None, generator: torch.Generator) -> Tensor:
    """One epoch's frame order: AtariARI's draw (uniform episode, then a uniform frame of it) with ``episode``."""
    if episode is None:
        return torch.randperm(rows, generator=generator)
    ids, inverse, counts = torch.unique(episode, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    by_episode = torch.argsort(inverse, stable=True)
    picked = torch.randint(ids.numel(), (rows,), generator=generator)
    offset = (torch.rand(rows, generator=generator) * counts[picked]).long().clamp_max(counts[picked] - 1)
    return by_episode[starts[picked] + offset]


def train_state_probes(train_features: Tensor, train_labels: dict[str, Tensor], val_features: Tensor,
                       val_labels: dict[str, Tensor], *, num_classes: int = 256, lr: float = 3e-4,
                       epochs: int = 100, patience: int = 15, batch_size: int = 64,
                       train_episode: Tensor | None = None, val_episode: Tensor | None = None,
                       seed: int = 0) -> StateProbes:
    """Train one linear probe per variable on frozen features, AtariARI's way (module docstring).

    All probes train together (one batched matmul) but each has its own Adam state, learning
    rate and early stopping, exactly as if trained one by one.

    Args:
        train_features: (N, D) frozen features of the train frames.
        train_labels: {variable: (N,) int labels in [0, num_classes)}.
        val_features: (M, D) features of the val frames.
        val_labels: {variable: (M,) labels}, the same variables.
        num_classes: the label space (RAM bytes: 256).
        lr: Adam's initial learning rate (AtariARI: 3e-4).
        epochs: the most epochs (AtariARI: 100).
        patience: epochs without a new best val accuracy before a probe stops (AtariARI: 15).
        batch_size: frames per step (AtariARI: 64); the last incomplete batch of an epoch is dropped.
        train_episode: (N,) episode ids of the train frames, to draw them as AtariARI does; None visits
            each frame once per epoch.
        val_episode: (M,) episode ids of the val frames, to draw the val frames of each epoch as AtariARI
            does (M draws, whole batches); None scores every val frame.
        seed: seeds the probes' initialisation and the batch order.
    """
    check_embeddings("train_features", train_features, "(frames, dim)")
    check_embeddings("val_features", val_features, "(frames, dim)")
    if val_features.shape[1] != train_features.shape[1]:
        raise InputError(f"train_features have dim {train_features.shape[1]} but val_features {val_features.shape[1]}.")
    check_finite("train_features", train_features)
    check_count("num_classes", num_classes, 2, "RAM labels have 256 classes.")
    check_positive("lr", lr, "AtariARI uses 3e-4.")
    check_count("epochs", epochs, 1, "AtariARI trains at most 100.")
    check_count("patience", patience, 1, "AtariARI uses 15.")
    check_count("batch_size", batch_size, 1, "AtariARI uses 64.")
    rows, dim = train_features.shape
    if rows < batch_size:
        raise InputError(f"{rows} train frames are fewer than one batch of {batch_size}; collect more or lower "
                         "batch_size.")
    if val_features.shape[0] == 0:
        raise InputError("val_features is empty; early stopping needs val frames.")
    if not isinstance(train_labels, dict) or not train_labels:
        raise InputError("train_labels must be a non-empty dict {variable: (N,) int64 labels}.")
    names = list(train_labels)
    y_train = _stack_labels(train_labels, names, rows, "train_labels", num_classes)
    y_val = _stack_labels(val_labels, names, val_features.shape[0], "val_labels", num_classes)
    val_rows = val_features.shape[0]
    if train_episode is not None:
        train_episode = torch.as_tensor(train_episode)
        if train_episode.shape != (rows,):
            raise InputError(f"train_episode has shape {tuple(train_episode.shape)}, not ({rows},).")
    if val_episode is not None:
        val_episode = torch.as_tensor(val_episode)
        if val_episode.shape != (val_rows,):
            raise InputError(f"val_episode has shape {tuple(val_episode.shape)}, not ({val_rows},).")
    x_train, x_val = train_features.detach().float(), val_features.detach().float()
    count = len(names)
    generator = torch.Generator().manual_seed(seed)
    # nn.Linear's default initialisation, U(-1/sqrt(D), 1/sqrt(D)), for weights and biases.
    bound = dim ** -0.5
    weight = (torch.rand(count, dim, num_classes, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(count, num_classes, generator=generator) * 2 - 1) * bound
    params = [weight.requires_grad_(), bias.requires_grad_()]
    moments = [[torch.zeros_like(p), torch.zeros_like(p)] for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-5
    rates = torch.full((count,), float(lr))
    active = torch.ones(count, dtype=torch.bool)
    best = torch.full((count,), -1.0)  # early stopping's best val accuracy
    stale = torch.zeros(count, dtype=torch.long)
    plateau_best = torch.full((count,), -1.0)  # the lr schedule's best (relative threshold 1e-4, as torch's)
    plateau_stale = torch.zeros(count, dtype=torch.long)
    trained = torch.zeros(count, dtype=torch.long)
    last_val = torch.zeros(count)
    step = 0
    for _ in range(epochs):
        if not bool(active.any()):
            break
        order = _epoch_order(rows, train_episode, generator)
        for start in range(0, rows - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            logits = _logits(x_train[index], weight, bias)  # (V, B, K)
            # Summed over variables: each probe's gradient is that of its own mean cross-entropy.
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y_train[:, index].reshape(-1),
                                   reduction="sum") / batch_size
            grads = torch.autograd.grad(loss, params)
            step += 1
            with torch.no_grad():
                mask_w = active[:, None, None].float()
                for p, g, (m, v), mask in zip(params, grads, moments, (mask_w, active[:, None].float())):
                    # Adam, written out so each probe keeps its own learning rate; a stopped probe does not move.
                    m.mul_(1 - (1 - beta1) * mask).add_((1 - beta1) * mask * g)
                    v.mul_(1 - (1 - beta2) * mask).add_((1 - beta2) * mask * g * g)
                    m_hat = m / (1 - beta1 ** step)
                    v_hat = v / (1 - beta2 ** step)
                    shape = (-1,) + (1,) * (p.ndim - 1)
                    p.sub_(mask * rates.view(shape) * m_hat / (v_hat.sqrt() + eps))
        trained += active.long()
        with torch.no_grad():
            predictions = torch.cat([_logits(chunk, weight, bias).argmax(-1) for chunk in x_val.split(4096)], dim=1)
        if val_episode is None:
            accuracy = (predictions == y_val).float().mean(dim=1)
        else:
            drawn = _epoch_order(val_rows, val_episode, generator)
            drawn = drawn[:max(batch_size, val_rows - val_rows % batch_size)]  # whole batches, as AtariARI
            accuracy = (predictions[:, drawn] == y_val[:, drawn]).float().mean(dim=1)
        last_val = torch.where(active, accuracy, last_val)
        improved = accuracy > best
        stale = torch.where(active & ~improved, stale + 1, torch.where(improved, 0, stale))
        best = torch.where(active & improved, accuracy, best)
        better = accuracy > plateau_best * (1 + 1e-4)
        plateau_stale = torch.where(better, 0, plateau_stale + 1)
        plateau_best = torch.where(better, accuracy, plateau_best)
        cut = active & (plateau_stale > 5)
        rates = torch.where(cut, (rates * 0.2).clamp_min(1e-5), rates)
        plateau_stale = torch.where(cut, 0, plateau_stale)
        active = active & (stale < patience)
    return StateProbes(names=names, weight=weight.detach(), bias=bias.detach(),
                       epochs={n: int(e) for n, e in zip(names, trained)},
                       val_accuracy={n: float(a) for n, a in zip(names, last_val)})


def probe_f1(probes: StateProbes, test_features: Tensor, test_labels: dict[str, Tensor]) -> dict[str, float]:
    """{variable: weighted F1} of the probes' predictions on every test frame."""
    check_embeddings("test_features", test_features, "(frames, dim)")
    labels = _stack_labels(test_labels, probes.names, test_features.shape[0], "test_labels", probes.weight.shape[2])
    predictions = probes.predict(test_features)
    return {name: weighted_f1(predictions[i], labels[i]) for i, name in enumerate(probes.names)}


def state_probe_scores(train_features: Tensor, train_labels: dict[str, Tensor], val_features: Tensor,
                       val_labels: dict[str, Tensor], test_features: Tensor, test_labels: dict[str, Tensor],
                       **options: object) -> dict[str, object]:
    """Train the probes and score them: the whole protocol for one game and one encoder.

    Args:
        train_features, train_labels, val_features, val_labels: as :func:`train_state_probes`.
        test_features, test_labels: the test frames' features and labels.
        options: keywords of :func:`train_state_probes`.

    Returns:
        {"f1": {variable: F1}, "mean_f1": mean over variables, "category_f1": {category: mean F1},
        "across_categories_f1": the paper's per-game score, "epochs": {variable: epochs trained}}.
    """
    unknown = set(options) - {"num_classes", "lr", "epochs", "patience", "batch_size", "train_episode", "val_episode",
                              "seed"}
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for train_state_probes.")
    probes = train_state_probes(train_features, train_labels, val_features, val_labels, **options)  # type: ignore[arg-type]
    f1 = probe_f1(probes, test_features, test_labels)
    categories = {c: [v for k, v in f1.items() if c in variable_categories(k)] for c in CATEGORIES}
    return {"f1": f1, "mean_f1": sum(f1.values()) / len(f1),
            "category_f1": {c: sum(v) / len(v) for c, v in categories.items() if v},
            "across_categories_f1": category_mean(f1), "epochs": probes.epochs}
