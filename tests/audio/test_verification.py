"""Speaker verification metrics against figures worked out by hand."""

import pytest
import torch

from contrastkit.errors import InputError
from contrastkit.evaluate.verification import (equal_error_rate, error_rates, min_dcf, trial_pairs,
                                               verification_scores)

T, N = True, False


def test_error_rates_step_through_the_sorted_scores():
    # Sorted: 0.1 N, 0.2 N, 0.3 T, 0.7 N, 0.8 T, 0.9 T; accept scores >= threshold.
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    targets = torch.tensor([T, T, T, N, N, N])
    thresholds, miss, false_alarm = error_rates(scores, targets)
    assert thresholds.tolist()[:-1] == pytest.approx([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) and thresholds[-1] == float("inf")
    assert miss.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert false_alarm.tolist() == pytest.approx([1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    # At threshold 0.7 one target of three is missed and one non-target of three accepted.
    assert equal_error_rate(scores, targets) == pytest.approx(1 / 3)


def test_the_eer_is_read_where_the_curve_crosses_between_two_thresholds():
    # Sorted: 0.1 N, 0.4 T, 0.5 N, 0.6 N, 0.9 T. Thresholds 0.5 and 0.6 give (P_fa, P_miss) =
    # (2/3, 1/2) and (1/3, 1/2): P_miss - P_fa goes from -1/6 to +1/6, so the segment between them
    # crosses P_miss = P_fa halfway, at P_fa = 1/2.
    scores = torch.tensor([0.1, 0.4, 0.5, 0.6, 0.9])
    targets = torch.tensor([N, T, N, N, T])
    assert equal_error_rate(scores, targets) == pytest.approx(0.5)
    # A target scored below the only non-target: at threshold 0.8 both trials are wrong.
    assert equal_error_rate(torch.tensor([0.2, 0.8]), torch.tensor([T, N])) == pytest.approx(1.0)
    # Perfectly separated: no error at a threshold between the two groups.
    assert equal_error_rate(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([N, N, T, T])) == 0.0


def test_ties_fall_on_one_side_of_every_threshold_together():
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    targets = torch.tensor([T, N, T, N])
    _, miss, false_alarm = error_rates(scores, targets)
    assert miss.tolist() == [0, 1] and false_alarm.tolist() == [1, 0]
    assert equal_error_rate(scores, targets) == pytest.approx(0.5)


def test_min_dcf_is_the_cheapest_threshold_over_the_cost_of_the_better_trivial_decision():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    targets = torch.tensor([T, T, T, N, N, N])
    # p = 0.01: (P_miss, P_fa) points (0,1) (0,2/3) (0,1/3) (1/3,1/3) (1/3,0) (2/3,0) (1,0) cost
    # 0.01 P_miss + 0.99 P_fa: the least is 0.01/3 at (1/3, 0); normalised by min(0.01, 0.99).
    assert min_dcf(scores, targets) == pytest.approx((0.01 / 3) / 0.01)
    # p = 0.5, C_miss = 1, C_fa = 2: 0.5 P_miss + 1.0 P_fa: least 1/6 at (1/3, 0), over min(0.5, 1).
    assert min_dcf(scores, targets, p_target=0.5, c_fa=2.0) == pytest.approx((0.5 / 3) / 0.5)
    reversed_ = torch.tensor([0.1, 0.2, 0.8, 0.9])
    assert min_dcf(reversed_, torch.tensor([T, T, N, N])) == pytest.approx(1.0)  # no better than trivial
    with pytest.raises(InputError, match="p_target"):
        min_dcf(scores, targets, p_target=1.0)


def test_trials_are_every_pair_of_clips_with_a_known_speaker():
    first, second, same = trial_pairs(torch.tensor([0, 1, -1, 0]))
    assert list(zip(first.tolist(), second.tolist(), same.tolist())) == [(0, 1, N), (0, 3, T), (1, 3, N)]


def test_cosine_verification_on_embeddings():
    # Two clips of each speaker far apart: every target pair scores above every non-target one.
    apart = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.3, 1.0]])
    assert verification_scores(apart, torch.tensor([0, 0, 1, 1])) == {"eer": 0.0, "min_dcf": 0.0, "trials": 6}
    # A clip of speaker 1 pointing like speaker 0: the scores are the pairs' cosines.
    features = torch.cat([apart, torch.tensor([[1.0, 0.05]])])
    scores = verification_scores(features, torch.tensor([0, 0, 1, 1, 1]))
    assert scores["trials"] == 10
    assert scores["eer"] == pytest.approx(equal_error_rate(*_cosine_trials(features, [0, 0, 1, 1, 1])))
    assert scores["eer"] > 0 and scores["min_dcf"] > 0


def _cosine_trials(features, speakers):
    normalised = torch.nn.functional.normalize(features.double(), dim=1)
    pairs = [(i, j) for i in range(len(speakers)) for j in range(i + 1, len(speakers))]
    return (torch.tensor([float(normalised[i] @ normalised[j]) for i, j in pairs]),
            torch.tensor([speakers[i] == speakers[j] for i, j in pairs]))


def test_bad_trials_say_what_to_give():
    with pytest.raises(InputError, match="both target and non-target"):
        equal_error_rate(torch.tensor([0.1, 0.2]), torch.tensor([T, T]))
    with pytest.raises(InputError, match="1-D of one length"):
        equal_error_rate(torch.tensor([0.1, 0.2]), torch.tensor([T]))
    with pytest.raises(InputError, match="finite"):
        equal_error_rate(torch.tensor([0.1, float("nan")]), torch.tensor([T, N]))
