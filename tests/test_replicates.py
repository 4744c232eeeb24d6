"""The replicates' maths on values worked out by hand: pooled seed noise, the racing rule, the
bootstrap of non-domination and of the hypervolume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdtune import replicates
from kdtune.replicates import DOMINATED, ON_FRONT, OPEN

DIRECTIONS = ["max", "min"]  # val_acc, val_ece


def test_pooled_sd_weights_each_configuration_by_its_degrees_of_freedom():
    # A: 1, 3 (squares 2, 1 degree of freedom); B: 2, 4, 6 (squares 8, 2); C measured once
    groups = [np.array([[1.0], [3.0]]), np.array([[2.0], [4.0], [6.0]]), np.array([[5.0]])]
    assert replicates.pooled_sd(groups, 1) == pytest.approx([math.sqrt(10 / 3)])
    errors = replicates.standard_errors(groups, 1)[:, 0]
    assert errors == pytest.approx(math.sqrt(10 / 3) / np.sqrt([2, 3, 1]))
    assert np.isnan(replicates.pooled_sd([np.array([[1.0]]), np.array([[2.0]])], 1)).all()


def test_race_stops_a_clear_loser_and_keeps_a_tie_open():
    means = np.array([[0.95, 0.02], [0.90, 0.05]])
    errors = np.full((2, 2), 0.005)  # a difference's margin: 2 * sqrt(2) * 0.005 = 0.014
    assert replicates.race(means, errors, DIRECTIONS) == [ON_FRONT, DOMINATED]
    tied = np.vstack([means, [0.951, 0.021]])  # within 0.014 of the first in both
    assert replicates.race(tied, np.full((3, 2), 0.005), DIRECTIONS) == [OPEN, DOMINATED, OPEN]
    # errors unknown (no replicates yet): nothing is clear
    assert replicates.race(means, np.full((2, 2), np.nan), DIRECTIONS) == [OPEN, OPEN]


def _candidates():
    # A measured twice (mean 0.95, 0.02; seed deviation 0.00707 per objective, pooled);
    # B once, clearly behind A; C once, tied with A
    return [np.array([[0.945, 0.015], [0.955, 0.025]]), np.array([[0.90, 0.05]]),
            np.array([[0.951, 0.021]])]  # fmt: skip


def test_next_replicates_goes_to_open_candidates_best_first_within_the_budget():
    groups = _candidates()
    assert replicates.next_replicates(groups, DIRECTIONS, front_seeds=3, budget=5) == [0, 2]
    assert replicates.next_replicates(groups, DIRECTIONS, front_seeds=3, budget=1) == [0]
    assert replicates.next_replicates(groups, DIRECTIONS, front_seeds=3, budget=0) == []
    # A has its two seeds already
    assert replicates.next_replicates(groups, DIRECTIONS, front_seeds=2, budget=5) == [2]
    # one seed each is all that was asked for: replication off
    assert replicates.next_replicates(groups, DIRECTIONS, front_seeds=1, budget=5) == []


def test_p_nondominated_by_hand():
    # A: accuracy 0.9 or 0.8 (a resampled mean: 0.9, 0.85, 0.85, 0.8), ECE 0.05 always.
    # B, measured once at 0.85, 0.06, moves by A's widened deviations, +-0.05 * sqrt(2), each
    # half the time. A is never dominated (its ECE is better); B escapes A exactly when its
    # accuracy is above A's: at 0.921 always, at 0.779 never, so half the time.
    groups = [np.array([[0.9, 0.05], [0.8, 0.05]]), np.array([[0.85, 0.06]])]
    p = replicates.p_nondominated(groups, DIRECTIONS, draws=4000, seed=1)
    assert p == pytest.approx([1.0, 0.5], abs=0.03)
    # nothing replicated: nothing moves, and the front is certain
    singles = [np.array([[0.9, 0.05]]), np.array([[0.85, 0.06]]), np.array([[0.8, 0.01]])]
    assert replicates.p_nondominated(singles, DIRECTIONS, draws=50).tolist() == [1.0, 0.0, 1.0]


def test_hypervolume_interval_by_hand():
    # one configuration, accuracy 0.9 or 0.8 at ECE 0.05, reference (0.7, 0.1): the area is
    # (accuracy - 0.7) * 0.05, at the mean 0.0075; resampled means 0.9 / 0.85 / 0.8 give
    # 0.01 / 0.0075 / 0.005 with chances 1/4, 1/2, 1/4, so the 95% interval is [0.005, 0.01]
    groups = [np.array([[0.9, 0.05], [0.8, 0.05]])]
    value, low, high = replicates.hypervolume_interval(groups, DIRECTIONS, (0.7, 0.1),
                                                       draws=2000, seed=2)  # fmt: skip
    assert (value, low, high) == pytest.approx((0.0075, 0.005, 0.01))
