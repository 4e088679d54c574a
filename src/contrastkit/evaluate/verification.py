"""Speaker verification: trial pairs, cosine scores, equal error rate and minimum detection cost.

A trial is a pair of clips; it is a target trial when both are of one speaker. A score above a
threshold accepts it. Over all thresholds, the miss rate P_miss (target trials rejected) falls as
the false-alarm rate P_fa (non-target trials accepted) rises:

* EER: the rate where the two are equal, read where the piecewise-linear (P_fa, P_miss) curve
  through the thresholds crosses P_miss = P_fa.
* minDCF: min over thresholds of C_miss P_miss p_target + C_fa P_fa (1 - p_target), divided by
  min(C_miss p_target, C_fa (1 - p_target)), the cost of always rejecting or always accepting
  (NIST SRE's normalised detection cost; defaults p_target = 0.01, C_miss = C_fa = 1, as VoxCeleb's
  challenge reports it).

Example:
    >>> scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    >>> targets = torch.tensor([True, True, True, False, False, False])
    >>> round(equal_error_rate(scores, targets), 4)
    0.3333
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import InputError


def _check_trials(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if scores.ndim != 1 or targets.shape != scores.shape:
        raise InputError(f"scores and targets must be 1-D of one length, got shapes {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}.")
    targets = targets.bool()
    if targets.all() or not targets.any():
        raise InputError("verification needs both target and non-target trials; give clips of two or more speakers "
                         "with two or more clips each.")
    if not torch.isfinite(scores).all():
        raise InputError("verification scores must be finite; check the embeddings for NaN.")
    return scores.double().cpu(), targets.cpu()


def error_rates(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Miss and false-alarm rates (float64) at every threshold that changes them: thresholds sorted
    ascending, accepting scores >= threshold, from accepting all (P_miss 0, P_fa 1) to rejecting all.

    Args:
        scores: (N,) trial scores, higher meaning more alike.
        targets: (N,) bool, True for same-speaker trials.

    Returns:
        thresholds (K + 1,), P_miss (K + 1,), P_fa (K + 1,), the last threshold +inf.
    """
    scores, targets = _check_trials(scores, targets)
    order = scores.argsort()
    sorted_scores, sorted_targets = scores[order], targets[order].double()
    # Rejecting the i lowest scores misses the targets among them and no longer falsely accepts
    # the non-targets among them.
    misses = torch.cat([torch.zeros(1, dtype=torch.float64), sorted_targets.cumsum(0)])
    rejected_nontargets = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - sorted_targets).cumsum(0)])
    # Tied scores fall on one side of every threshold together: keep the last index of each tie.
    boundary = torch.cat([torch.tensor([True]), sorted_scores[1:] != sorted_scores[:-1], torch.tensor([True])])
    thresholds = torch.cat([sorted_scores, torch.tensor([float("inf")], dtype=torch.float64)])[boundary]
    miss = misses[boundary] / sorted_targets.sum()
    false_alarm = 1 - rejected_nontargets[boundary] / (1 - sorted_targets).sum()
    return thresholds, miss, false_alarm


def equal_error_rate(scores: Tensor, targets: Tensor) -> float:
    """The equal error rate: where the piecewise-linear curve through the (P_fa, P_miss) points of
    :func:`error_rates` crosses P_miss = P_fa.

    Args:
        scores: (N,) trial scores.
        targets: (N,) bool, True for target trials.
    """
    _, miss, false_alarm = error_rates(scores, targets)
    gap = miss - false_alarm  # rises from -1 to +1
    after = int((gap >= 0).nonzero()[0])
    if gap[after] == 0:
        return float(miss[after])
    before = after - 1
    # Where the segment from point `before` to `after` meets gap = 0.
    share = -gap[before] / (gap[after] - gap[before])
    return float(false_alarm[before] + share * (false_alarm[after] - false_alarm[before]))


def min_dcf(scores: Tensor, targets: Tensor, *, p_target: float = 0.01, c_miss: float = 1.0,
            c_fa: float = 1.0) -> float:
    """The minimum normalised detection cost over thresholds.

    Args:
        scores: (N,) trial scores.
        targets: (N,) bool, True for target trials.
        p_target: prior of a target trial.
        c_miss: cost of a miss.
        c_fa: cost of a false alarm.
    """
    if not 0 < p_target < 1 or c_miss <= 0 or c_fa <= 0:
        raise InputError(f"minDCF needs 0 < p_target < 1 and positive costs, got p_target={p_target}, "
                         f"c_miss={c_miss}, c_fa={c_fa}.")
    _, miss, false_alarm = error_rates(scores, targets)
    cost = c_miss * p_target * miss + c_fa * (1 - p_target) * false_alarm
    return float(cost.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def trial_pairs(speakers: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every unordered pair of distinct clips with a known speaker (id >= 0): first and second clip
    indices and whether they share the speaker.

    Example:
        >>> first, second, same = trial_pairs(torch.tensor([0, 0, 1]))
        >>> first.tolist(), second.tolist(), same.tolist()
        ([0, 0, 1], [1, 2, 2], [True, False, False])
    """
    known = (speakers >= 0).nonzero().squeeze(1)
    first, second = torch.triu_indices(len(known), len(known), offset=1)
    first, second = known[first], known[second]
    return first, second, speakers[first] == speakers[second]


def verification_scores(features: Tensor, speakers: Tensor, *, p_target: float = 0.01) -> dict[str, float]:
    """EER and minDCF (p_target, C_miss = C_fa = 1) of cosine scoring over every pair of clips.

    Args:
        features: (N, D) embeddings.
        speakers: (N,) speaker ids (-1: unknown, left out).
        p_target: minDCF's target prior.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> verification_scores(features, torch.tensor([0, 0, 1, 1]))
        {'eer': 0.0, 'min_dcf': 0.0, 'trials': 6}
    """
    first, second, same = trial_pairs(speakers)
    normalised = F.normalize(features.double(), dim=1)
    scores = (normalised[first] * normalised[second]).sum(dim=1)
    return {"eer": equal_error_rate(scores, same), "min_dcf": min_dcf(scores, same, p_target=p_target),
            "trials": len(same)}
