"""Representation-health metrics from the embeddings a training step already has.

Plain functions for a user's own loop: each takes (N, D) embeddings on any device, computes in
float32 (bfloat16/float16 are upcast, float64 is rounded to float32) with autocast off, and returns
a 0-dim float32 tensor on that device. They check shapes (static, free) but not values: a NaN
check would cost a device-to-host sync on every call, so NaN embeddings give NaN metrics. They
branch on nothing but shapes, so they trace under ``torch.compile(fullgraph=True)``, and all but
:func:`rankme` run without a host sync (see its note). Log them at whatever interval you like;
:func:`collapse_state` turns the logged values into a verdict.

- :func:`embedding_std`: spread of the L2-normalised embeddings per dimension; 0 under collapse,
  about 1/sqrt(D) when they spread over the sphere.
- :func:`rankme`, :func:`rankme_fraction`: the effective rank of the embeddings (Garrido et al.,
  "RankMe", ICML 2023); catches dimensional collapse, which the std can miss.
- :func:`alignment`, :func:`uniformity`: Wang & Isola (ICML 2020), "Understanding contrastive
  representation learning through alignment and uniformity on the hypersphere".
- :func:`positive_negative_gap`: mean cosine similarity of positive pairs minus that of negatives.
- :func:`health_metrics`: all of the above from a step's views, in one dict.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import ConfigError, InputError

# Verdict thresholds of collapse_state. Measured at N = 256 rows, D = 128, float32 (std in units of
# 1/sqrt(D); fraction = rankme / min(N, D)):
#   (a) Gaussian rows N(0, I):                            std 0.999  rankme 118.5  fraction 0.926
#   (b) collapse: one N(0, I) row + N(0, 1e-3^2) noise:   std 0.0011 rankme 1.12   fraction 0.0088
#       ... with N(0, 1e-2^2) noise:                      std 0.011  rankme 2.29   fraction 0.018
#   (c) dimensional collapse, rank 2 (random 2-d span):   std 0.885  rankme 2.00   fraction 0.0156
#       ... rank 2 in 2 of the 128 axes:                  std 0.125  rankme 1.99   fraction 0.0156
#       ... rank 8 (random span):                         std 0.971  rankme 7.93   fraction 0.062
#   (d) SimCLR, small_cnn on scikit-learn digits, projector output (D = 128) of 256 augmented
#       test images (contrastkit.runs.train, batch 128, CPU):
#       after 5 epochs:                                   std 0.970  rankme 35.1   fraction 0.274
#       after 30 epochs:                                  std 0.983  rankme 32.0   fraction 0.250
#       untrained (initial weights):                      std 0.056  rankme 4.27   fraction 0.033
#       backbone features (post-ReLU), 30 epochs:         std 0.462  rankme 36.2   fraction 0.283
# The untrained projector is collapsed indeed (mean pairwise cosine 0.997): SimCLR starts there and
# has left it by epoch 5, so a verdict at step 0 says nothing about the run.
# Why the std thresholds: unit rows have a total variance, summed over the D dimensions, of
# 1 - |mean row|^2, and for i != j their mean pairwise cosine is about |mean row|^2. With that
# variance spread over the dimensions, std * sqrt(D) is about sqrt(1 - |mean row|^2) (measured:
# 0.056 vs 0.057 for the untrained projector above), so std < 0.1/sqrt(D) means a mean pairwise
# cosine above 0.99 (all rows one direction) and std < 0.3/sqrt(D) one above 0.91. Variance held
# in k of the D axes gives about sqrt(k/D)/sqrt(D), so 0.3 also flags rows living in under 9% of
# the axes. Non-negative (post-ReLU) features share a large mean and sit lower than projector
# outputs: the trained backbone above, 0.46, is still above 0.3.
COLLAPSED_STD = 0.1  # x 1/sqrt(D): (b) 0.0011 to 0.011 and the untrained 0.056 below, healthy >= 0.46
COLLAPSING_STD = 0.3  # x 1/sqrt(D): healthy (a), (d) from 0.46 up; rank-2 in 2 axes 0.125 below
# An effective rank below 1.5 means one direction holds most of the spectrum: (b) measures 1.12.
# RankMe sums every singular value, so the noise of a collapsed batch lifts it (2.29 at 1e-2
# noise): the std rule is what catches noisy complete collapse.
COLLAPSED_RANKME = 1.5
# Dimensional collapse, which the std misses ((c): std 0.885): 0.05 (6 of 128 dimensions) is near
# the geometric mean, 0.063, of (c)'s 0.016 and the trained SimCLR's 0.25, rounded down to keep
# false alarms rarer. A healthy contrastive projector is far from 1 (Jing et al., ICLR 2022, on
# dimensional collapse in contrastive learning): (d) is 0.25, Gaussian rows 0.93.
COLLAPSING_RANKME_FRACTION = 0.05

_VERDICTS = ("healthy", "collapsing", "collapsed")


def _check_embeddings(name: str, z: object, layout: str = "(N, D)") -> None:
    """Raise InputError unless ``z`` is a floating-point (N, D) tensor with N >= 2 and D >= 1."""
    if not isinstance(z, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {layout}, got {type(z).__name__}.")
    if z.ndim != 2:
        raise InputError(f"{name} must have shape {layout}, got {tuple(z.shape)}; flatten it with "
                          f"{name}.flatten(1) or pass one view at a time.")
    if not z.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {z.dtype}; convert with .float().")
    if z.shape[0] < 2:
        raise InputError(f"{name} has {z.shape[0]} row(s); these metrics compare rows, so pass a batch of "
                          "at least 2.")
    if z.shape[1] < 1:
        raise InputError(f"{name} has 0 columns; pass embeddings with D >= 1.")


def _check_pair(z_a: object, z_b: object, names: tuple[str, str] = ("z_a", "z_b")) -> None:
    _check_embeddings(names[0], z_a)
    _check_embeddings(names[1], z_b)
    if z_a.shape != z_b.shape:  # type: ignore[union-attr]
        raise InputError(f"{names[0]} and {names[1]} must have the same shape (N, D), row i of each the same "
                          f"sample; got {tuple(z_a.shape)} and {tuple(z_b.shape)}.")  # type: ignore[union-attr]


def _check_power(name: str, value: object, hint: str) -> None:
    if not (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}; {hint}")


def _unit_rows(z: Tensor) -> Tensor:
    """Rows of ``z`` L2-normalised in float32 (a zero row stays zero, as in F.normalize)."""
    return F.normalize(z.float(), dim=1)


def _no_autocast(z: Tensor) -> torch.autocast:
    # Under autocast a float32 matmul still runs in bfloat16/float16, which would round the
    # similarities these metrics are made of (cosines near 1 to 3 significant digits).
    return torch.autocast(z.device.type, enabled=False)


def embedding_std(z: Tensor) -> Tensor:
    """Standard deviation per dimension of the L2-normalised embeddings, averaged over dimensions.

    lightly's ``std_of_l2_normalized`` and solo-learn's ``z_std`` (with the same unbiased std over
    the N rows). Reference values for D dimensions: 0 when every row is the same (complete
    collapse); about 1/sqrt(D) when the rows spread evenly over the unit sphere (each coordinate
    of a uniform unit vector has variance 1/D), e.g. 0.088 for D = 128. So compare
    ``embedding_std(z) * sqrt(D)`` with 1. Rows confined to a random low-dimensional subspace can
    still score near 1/sqrt(D): :func:`rankme` is the check for dimensional collapse.

    Args:
        z: embeddings (N, D), N >= 2, any floating dtype and device.

    Returns:
        A 0-dim float32 tensor on ``z``'s device.

    Example:
        >>> z = torch.randn(512, 64)
        >>> round(float(embedding_std(z) * 64 ** 0.5), 1)
        1.0
        >>> float(embedding_std(torch.ones(8, 64)))
        0.0
    """
    _check_embeddings("z", z)
    with _no_autocast(z):
        return _unit_rows(z).std(dim=0).mean()


def _rankme_of(z: Tensor, eps: float) -> Tensor:
    with _no_autocast(z):
        # float32 even on the CPU: the entropy only needs the singular values to about 1e-4 of the
        # largest (smaller ones add at most -p log p ~ 1e-3 in all), float32 gives ~1e-6, and a
        # float64 SVD is many times slower on GPUs.
        z = z.float()
        # The SVD raises on a non-finite input rather than returning NaN: a diverged step's
        # embeddings read as NaN instead (which the collapse monitor leaves unjudged), decided on
        # the device, without a host sync.
        finite = torch.isfinite(z).all()
        singular = torch.linalg.svdvals(torch.where(finite, z, torch.zeros_like(z)))
        # clamp: an all-zero matrix would give 0/0; with it every p_k = eps and RankMe ~ 1.
        p = singular / singular.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
        rank = torch.exp(-(p * torch.log(p)).sum())
        return torch.where(finite, rank, torch.full_like(rank, float("nan")))


def rankme(z: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe (Garrido et al., ICML 2023): the effective rank of the embeddings.

    With s_1..s_K the singular values of ``z`` (K = min(N, D)) and p_k = s_k / sum(s) + eps,
    RankMe = exp(-sum_k p_k log p_k): between 1 (one direction, complete collapse) and K, and
    exactly k for a matrix of k equal non-zero singular values. As in the paper, the raw
    embeddings are used, neither normalised nor centred.

    The floor of small batches: the rank of N rows cannot exceed N, so with N <= D RankMe is
    bounded by N, not D (a batch of 64 rows of 2048-d embeddings reads at most 64 whatever the
    encoder; see the discussion in MONAI issue #8996). Compare values across runs and steps only
    at the same N (and D), or use :func:`rankme_fraction`, RankMe / min(N, D), to read it against
    its bound; larger N estimates the rank of the distribution better.

    Sync: on CUDA ``torch.linalg.svdvals`` synchronises with the host (PyTorch checks cuSOLVER's
    convergence flag there, and has no ``_ex`` variant without the check), so unlike the other
    metrics this one costs a sync, and an SVD of O(N D min(N, D)) work: log it at log steps.

    Args:
        z: embeddings (N, D), N >= 2, any floating dtype and device.
        eps: added to each p_k, the paper's 1e-7, so that log p_k is finite.

    Returns:
        A 0-dim float32 tensor on ``z``'s device; NaN where ``z`` holds a NaN or an infinity (the
        embeddings of a diverged step), where the SVD itself would raise.

    Example:
        >>> basis = torch.linalg.qr(torch.randn(32, 3)).Q.T  # 3 orthonormal rows
        >>> z = torch.cat([basis, -basis])  # singular values sqrt(2) x 3
        >>> round(float(rankme(z)), 3)
        3.0
    """
    _check_embeddings("z", z)
    _check_power("eps", eps, "the paper uses 1e-7.")
    return _rankme_of(z, eps)


def rankme_fraction(z: Tensor, eps: float = 1e-7) -> Tensor:
    """:func:`rankme` divided by its bound min(N, D): 1 for a spectrum of equal singular values,
    1 / min(N, D) at complete collapse.

    Still a function of N for N < D (N rows sample the spectrum of the distribution), so compare
    it across runs only at the same batch size, as RankMe itself.

    Args:
        z: embeddings (N, D), N >= 2, any floating dtype and device.
        eps: as in :func:`rankme`.

    Returns:
        A 0-dim float32 tensor on ``z``'s device.

    Example:
        >>> float(rankme_fraction(torch.randn(256, 16))) > 0.9
        True
    """
    _check_embeddings("z", z)
    _check_power("eps", eps, "the paper uses 1e-7.")
    return _rankme_of(z, eps) / min(z.shape)


def alignment(z_a: Tensor, z_b: Tensor, alpha: float = 2) -> Tensor:
    """Alignment of positive pairs (Wang & Isola, ICML 2020): mean ||f(x) - f(y)||^alpha.

    f is the L2-normalised embedding and (x, y) the positive pairs, row i of ``z_a`` with row i
    of ``z_b``. 0 when the two views agree exactly; at most 2^alpha (opposite rows); about
    2^(alpha/2) for unrelated random rows. Lower is better, but 0 is also what a collapsed
    encoder scores: read it with :func:`uniformity`. Differentiable, so also usable as the
    paper's loss.

    Args:
        z_a, z_b: embeddings (N, D) of the same N samples under two views, N >= 2.
        alpha: exponent > 0 (the paper's default 2).

    Returns:
        A 0-dim float32 tensor on ``z_a``'s device.

    Example:
        >>> z = torch.randn(16, 8)
        >>> float(alignment(z, 3 * z)) < 1e-6  # the same directions
        True
    """
    _check_pair(z_a, z_b)
    _check_power("alpha", alpha, "the paper uses 2.")
    with _no_autocast(z_a):
        squared = (_unit_rows(z_a) - _unit_rows(z_b)).square().sum(dim=1)
        # Squared distances, raised to alpha / 2: for the default alpha = 2 no root is taken, whose
        # gradient is infinite where the two views agree exactly.
        return squared.mean() if alpha == 2 else squared.pow(alpha / 2).mean()


def uniformity(z: Tensor, t: float = 2) -> Tensor:
    """Uniformity (Wang & Isola, ICML 2020): log mean exp(-t ||f(x) - f(y)||^2) over distinct pairs.

    f is the L2-normalised embedding and the mean runs over the N (N - 1) / 2 pairs of distinct
    rows. 0 (its maximum) when all rows coincide (collapse); lower is more uniform: about -2t for
    rows spread over a high-dimensional sphere (unit rows are nearly orthogonal, at squared
    distance 2), e.g. -3.9 for t = 2, D = 128. Computed from the N x N Gram matrix (squared
    distance 2 - 2 cos), with a log-sum-exp, so it is finite for any t. Differentiable, so
    also usable as the paper's loss.

    Args:
        z: embeddings (N, D), N >= 2.
        t: temperature > 0 of the Gaussian potential (the paper's default 2).

    Returns:
        A 0-dim float32 tensor on ``z``'s device.

    Example:
        >>> float(uniformity(torch.ones(8, 4)))  # every row the same
        0.0
    """
    _check_embeddings("z", z)
    _check_power("t", t, "the paper uses 2.")
    n = z.shape[0]
    with _no_autocast(z):
        unit = _unit_rows(z)
        # clamp: rounding can make 2 - 2 cos slightly negative for (nearly) equal rows
        squared = (2 - 2 * unit @ unit.T).clamp_min(0)
        # The diagonal (a row with itself) is left out with -inf; the mean over the ordered pairs
        # i != j equals the mean over the unordered pairs i < j, each being counted twice.
        logits = (-t * squared).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


def positive_negative_gap(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Mean cosine similarity of the positive pairs minus the mean of the negatives.

    Positives are row i of ``z_a`` with row i of ``z_b``; negatives are row i of ``z_a`` with
    row j != i of ``z_b`` (the N (N - 1) cross-view pairs a contrastive loss pushes apart). In
    [-2, 2]: near 0 before training and under collapse (positives and negatives alike), larger
    as the encoder tells samples apart while keeping their views together.

    Args:
        z_a, z_b: embeddings (N, D) of the same N samples under two views, N >= 2.

    Returns:
        A 0-dim float32 tensor on ``z_a``'s device.

    Example:
        >>> z = torch.eye(4)
        >>> float(positive_negative_gap(z, z))  # positives 1, negatives 0
        1.0
    """
    _check_pair(z_a, z_b)
    n = z_a.shape[0]
    with _no_autocast(z_a):
        cosines = _unit_rows(z_a) @ _unit_rows(z_b).T
        positive = cosines.diagonal().sum()
        # Sum of all minus the diagonal, rather than a boolean mask: no N x N mask to build.
        return positive / n - (cosines.sum() - positive) / (n * (n - 1))


def health_metrics(views: Sequence[Tensor], *, include_rankme: bool = True) -> dict[str, Tensor]:
    """All the health metrics of one training step's view embeddings, as 0-dim float32 tensors.

    ``embedding_std``, ``rankme``, ``rankme_fraction`` and ``uniformity`` are taken over the
    first view alone, not the concatenation of the views: the views are the same N samples, so
    stacking them would double the rows (and RankMe's bound min(N, D)) without adding samples,
    and mix the views' disagreement, which alignment measures, into the spread. ``alignment`` and
    ``positive_negative_gap`` pair views 0 and 1; further views are checked for shape, not used.
    The views are detached: these are for monitoring and keep no graph (call :func:`alignment`
    or :func:`uniformity` directly to use them as losses).

    Args:
        views: two or more embeddings (N, D) of the same N samples, e.g. a step's projections.
        include_rankme: compute ``rankme`` and ``rankme_fraction`` (an SVD, and on CUDA a host
            sync: see :func:`rankme`); False leaves both keys out, to log the rest sync-free.

    Returns:
        {"embedding_std", "rankme", "rankme_fraction", "alignment", "uniformity",
        "positive_negative_gap"}, each a 0-dim float32 tensor on the views' device. Pass
        ``{k: float(v) for k, v in metrics.items()}`` (one sync) to :func:`collapse_state`.

    Example:
        >>> z = torch.randn(64, 32)
        >>> metrics = health_metrics([z, z + 0.1 * torch.randn(64, 32)])
        >>> sorted(metrics)
        ['alignment', 'embedding_std', 'positive_negative_gap', 'rankme', 'rankme_fraction', 'uniformity']
    """
    if isinstance(views, Tensor) or not isinstance(views, Sequence):
        raise InputError(f"views must be a list or tuple of (N, D) tensors, got {type(views).__name__}; "
                          "pass [z_a, z_b], not a stacked tensor.")
    if len(views) < 2:
        raise InputError(f"health_metrics needs at least 2 views of the same samples, got {len(views)}; pass "
                          "[z_a, z_b] (alignment and the gap compare views).")
    for i, view in enumerate(views):
        _check_embeddings(f"views[{i}]", view)
        if view.shape != views[0].shape:
            raise InputError(f"views[{i}] has shape {tuple(view.shape)} but views[0] has "
                              f"{tuple(views[0].shape)}; pass views of the same N samples and D.")
    first, second = views[0].detach(), views[1].detach()
    metrics = {"embedding_std": embedding_std(first)}
    if include_rankme:
        metrics["rankme"] = _rankme_of(first, 1e-7)
        metrics["rankme_fraction"] = metrics["rankme"] / min(first.shape)
    metrics["alignment"] = alignment(first, second)
    metrics["uniformity"] = uniformity(first)
    metrics["positive_negative_gap"] = positive_negative_gap(first, second)
    return metrics


def collapse_state(metrics: Mapping[str, float], dim: int) -> str:
    """A verdict on the embeddings from their logged metric values: "collapsed", "collapsing" or
    "healthy".

    Host-side: call it at log steps with floats (0-dim tensors are converted, a sync each). It
    reads ``embedding_std`` and ``rankme`` / ``rankme_fraction``, whichever are present, and
    returns the worse of their verdicts:

    - "collapsed": ``embedding_std < COLLAPSED_STD / sqrt(dim)`` (every row nearly the same
      direction: mean pairwise cosine above ~0.99) or ``rankme < COLLAPSED_RANKME`` (one direction
      holds the spectrum).
    - "collapsing": ``embedding_std < COLLAPSING_STD / sqrt(dim)`` (mean pairwise cosine above
      ~0.91) or ``rankme_fraction < COLLAPSING_RANKME_FRACTION`` (dimensional collapse: the rows
      use a few directions, which the std can miss).
    - "healthy" otherwise.

    The constants' measurements are beside them in this module. The rank rule depends on the batch
    size (see :func:`rankme`): it was set at N = 256, D = 128. The std rules were set on projector
    outputs; post-ReLU backbone features share a large mean and read lower (a trained small_cnn:
    0.46/sqrt(D), still "healthy"). Randomly initialised networks often read "collapsed" (their
    outputs point one way until training spreads them): judge a run after its first epochs.

    Args:
        metrics: metric values, as :func:`health_metrics` names them; needs ``embedding_std`` or
            ``rankme`` (other keys are ignored).
        dim: the embedding dimension D the metrics were computed at.

    Returns:
        "collapsed", "collapsing" or "healthy".

    Example:
        >>> collapse_state({"embedding_std": 0.08, "rankme": 90.0, "rankme_fraction": 0.7}, dim=128)
        'healthy'
        >>> collapse_state({"embedding_std": 0.001, "rankme": 1.02}, dim=128)
        'collapsed'
    """
    if not isinstance(metrics, Mapping):
        raise InputError(f"metrics must be a mapping of metric names to values, got {type(metrics).__name__}.")
    if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
        raise InputError(f"dim must be the embedding dimension D, an integer >= 1, got {dim!r}.")
    if "embedding_std" not in metrics and "rankme" not in metrics:
        raise InputError(f"metrics needs 'embedding_std' or 'rankme' to judge collapse, got keys {sorted(metrics)}; "
                          "pass the dict of health_metrics.")
    values = {}
    for key in ("embedding_std", "rankme", "rankme_fraction"):
        if key in metrics:
            values[key] = float(metrics[key])
            if not math.isfinite(values[key]):
                # No verdict from NaN: every comparison with it is False, which would read "healthy".
                raise InputError(f"metrics[{key!r}] is {values[key]}: the embeddings hold NaN/inf, so there is no "
                                  "collapse verdict; check the loss and the learning rate.")
    state = 0
    if "embedding_std" in values:
        scaled = values["embedding_std"] * math.sqrt(dim)
        state = 2 if scaled < COLLAPSED_STD else 1 if scaled < COLLAPSING_STD else 0
    if "rankme" in values and values["rankme"] < COLLAPSED_RANKME:
        state = 2
    if "rankme_fraction" in values and values["rankme_fraction"] < COLLAPSING_RANKME_FRACTION:
        state = max(state, 1)
    return _VERDICTS[state]
