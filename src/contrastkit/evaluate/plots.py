"""PNG plots of embeddings (UMAP / t-SNE / PCA) and training curves, drawn headless with Agg."""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from contrastkit._atomic import write_atomic
from contrastkit.errors import ConfigError, ContrastkitError, InputError

_METHODS = ("auto", "umap", "tsne", "pca")
_MAX_LEGEND_ENTRIES = 30  # beyond this a legend hides the plot (e.g. CIFAR-100)


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` atomically, with the permissions of the user's umask."""
    path = Path(path)
    write_atomic(path, lambda file: fig.savefig(file, format="png", dpi=120, bbox_inches="tight"))
    return path


def _to_numpy(values: Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().float().numpy() if values.is_floating_point() else values.detach().cpu().numpy()
    return np.asarray(values)


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Map (N, D) float32 rows to (N, 2) with ``method`` ("umap", "tsne" or "pca")."""
    # sklearn and umap are imported lazily: they are slow to import and only plots need them.
    from sklearn.decomposition import PCA

    n, d = x.shape
    if d < 2:  # PCA/t-SNE need two input dimensions; a zero column keeps 1-D data on a line
        x = np.concatenate([x, np.zeros((n, 2 - d), dtype=x.dtype)], axis=1)
        d = 2
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    # t-SNE costs grow with D; 50 PCA dims keep nearly all neighbourhood structure.
    if d > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = max(1.0, min(30.0, (n - 1) / 3))  # sklearn needs perplexity < n_samples
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x)


def plot_embedding(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    path: str | os.PathLike[str],
    *,
    method: str = "auto",
    max_points: int = 3000,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Save a 2-D map of ``features`` (N, D) coloured by integer ``labels`` (N,) as a PNG; return its path.

    ``method`` is "umap" (needs ``umap-learn``), "tsne" (sklearn, PCA to 50 dims first),
    "pca", or "auto" (UMAP when installed, else t-SNE). At most ``max_points`` rows, drawn
    at random with ``seed``, are projected, which keeps t-SNE to seconds. ``class_names[i]``
    names label ``i`` in the legend (shown for up to 30 classes).

    Example:
        >>> feats, labels = torch.randn(200, 32), torch.randint(0, 4, (200,))
        >>> plot_embedding(feats, labels, "runs/emb.png", method="pca")
        PosixPath('runs/emb.png')
    """
    if method not in _METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(_METHODS)}.")
    umap_installed = importlib.util.find_spec("umap") is not None
    if method == "umap" and not umap_installed:
        raise ContrastkitError('method="umap" needs umap-learn: pip install umap-learn (or use method="tsne").')
    if method == "auto":
        method = "umap" if umap_installed else "tsne"
    if max_points < 2:
        raise ConfigError(f"max_points must be >= 2, got {max_points}.")

    x = _to_numpy(features).astype(np.float32, copy=False)
    y = _to_numpy(labels)
    if x.ndim != 2:
        raise InputError(f"features must have shape (N, D), got {x.shape}; flatten each embedding to 1-D.")
    if y.shape != (x.shape[0],):
        raise InputError(f"labels must have shape ({x.shape[0]},) to match features, got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got dtype {y.dtype}.")
    if x.shape[0] < 2:
        raise InputError(f"features has {x.shape[0]} row(s); a 2-D map needs at least 2.")
    if not np.isfinite(x).all():
        raise InputError("features holds NaN/inf values; drop those rows or fix the encoder before plotting.")
    classes = np.unique(y)
    if class_names is not None and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise InputError(
            f"labels span {classes.min()}..{classes.max()} but class_names has {len(class_names)} entries; "
            "pass one name per class index."
        )

    if x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_points, replace=False))
        x, y = x[keep], y[keep]
    xy = _project(x, method, seed)

    fig = Figure(figsize=(7.5, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"]
    for i, c in enumerate(classes):
        mask = y == c
        color = cmap(i) if len(classes) <= 20 else cmap(i / max(1, len(classes) - 1))
        name = class_names[int(c)] if class_names is not None else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=4, color=color, label=name, linewidths=0, alpha=0.8)
    if len(classes) <= _MAX_LEGEND_ENTRIES:
        ax.legend(
            loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", markerscale=3,
            frameon=False, ncols=math.ceil(len(classes) / 15),
        )
    label = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}[method]
    ax.set_title(f"{title} ({label})" if title else f"{label} of {x.shape[0]} embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save_png(fig, path)


def plot_training_curves(
    records: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    keys: Sequence[str] = ("loss", "lr", "rankme", "embedding_std"),
) -> Path:
    """Plot each of ``keys`` against "step" from metrics.jsonl-style ``records``; save a PNG and return its path.

    One subplot per key that at least one record holds (by default the loss, the learning rate,
    and the embeddings' health where it was logged); records lacking "step" or the key (or
    holding a non-numeric value) are skipped for that subplot.

    Example:
        >>> records = [{"step": s, "loss": 5.0 / (s + 1), "lr": 0.1} for s in range(100)]
        >>> plot_training_curves(records, "runs/curves.png")
        PosixPath('runs/curves.png')
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in keys:
        points = [
            (float(r["step"]), float(r[key]))
            for r in records
            if _is_number(r.get("step")) and _is_number(r.get(key))
        ]
        if points:
            steps, values = zip(*points)
            series[key] = (list(steps), list(values))
    if not series:
        available = sorted({k for r in records for k in r})
        raise InputError(
            f"no record holds 'step' together with any of {list(keys)}; keys present: {available}. "
            "Pass keys= naming logged metrics."
        )

    fig = Figure(figsize=(7, 2.6 * len(series)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, (steps, values)) in zip(axes, series.items()):
        ax.plot(steps, values, linewidth=1.2)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _save_png(fig, path)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
