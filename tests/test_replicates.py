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

    def wanted(front_seeds: int, budget: int, min_freedom: int = 1) -> list[int]:
        return replicates.next_replicates(groups, DIRECTIONS, front_seeds, budget,
                                          min_freedom=min_freedom)  # fmt: skip

    assert wanted(front_seeds=3, budget=5) == [0, 2]  # B is clearly behind A
    assert wanted(front_seeds=3, budget=1) == [0]
    assert wanted(front_seeds=3, budget=0) == []
    assert wanted(front_seeds=2, budget=5) == [2]  # A has its two seeds already
    assert wanted(front_seeds=1, budget=5) == []  # one seed each asked for: replication off
    # the noise pooled over 1 degree of freedom is not trusted by default (MIN_FREEDOM): B,
    # behind A by more than 3 of those standard errors in each objective, is still open, last
    assert replicates.freedom(groups, 2) == 1 < replicates.MIN_FREEDOM
    assert wanted(front_seeds=3, budget=5, min_freedom=replicates.MIN_FREEDOM) == [0, 2, 1]


def test_p_nondominated_by_hand():
    # A: accuracy 0.9 or 0.8 (a resampled mean: 0.9, 0.85, 0.85, 0.8), ECE 0.05 always.
    # B, measured once at 0.85, 0.06, moves by A's widened deviations, +-0.05 * sqrt(2), each
    # half the time. A is never dominated (its ECE is better); B escapes A exactly when its
    # accuracy is above A's: at 0.921 always, at 0.779 never, so half the time.
    groups = [np.array([[0.9, 0.05], [0.8, 0.05]]), np.array([[0.85, 0.06]])]
    found = replicates.seed_front(groups, DIRECTIONS, (0.7, 0.1), draws=4000, seed=1)
    assert found.p_nondominated == pytest.approx([1.0, 0.5], abs=0.03)
    assert found.seeds.tolist() == [2, 1] and found.on_front.tolist() == [True, False]
    assert found.means == pytest.approx(np.array([[0.85, 0.05], [0.85, 0.06]]))
    # the pooled deviation, sqrt(0.005) in accuracy, 0 in ECE, over sqrt(seeds)
    assert found.errors == pytest.approx(np.sqrt(0.005) * np.array([[1 / np.sqrt(2), 0], [1, 0]]))
    # nothing replicated: nothing moves, the front is certain, and no interval
    singles = [np.array([[0.9, 0.05]]), np.array([[0.85, 0.06]]), np.array([[0.8, 0.01]])]
    certain = replicates.seed_front(singles, DIRECTIONS, (0.7, 0.1), draws=50)
    assert certain.p_nondominated.tolist() == [1.0, 0.0, 1.0]
    assert np.isnan(certain.errors).all() and np.isnan(certain.hypervolume[1:]).all()


def test_a_clearly_dominated_configuration_is_never_on_the_resampled_front():
    # C is 0.2 behind A in accuracy and 0.1 in ECE with a seed deviation of ~0.007: no
    # resampling of the seeds brings it onto the front
    groups = [np.array([[0.95, 0.02], [0.96, 0.03]]), np.array([[0.75, 0.12], [0.76, 0.13]])]
    found = replicates.seed_front(groups, DIRECTIONS, (0.7, 0.2), draws=200)
    assert found.p_nondominated.tolist() == [1.0, 0.0]


def test_hypervolume_interval_by_hand():
    # one configuration, accuracy 0.9 or 0.8 at ECE 0.05, reference (0.7, 0.1): the area is
    # (accuracy - 0.7) * 0.05, at the mean 0.0075; resampled means 0.9 / 0.85 / 0.8 give
    # 0.01 / 0.0075 / 0.005 with chances 1/4, 1/2, 1/4, so the 95% interval is [0.005, 0.01]
    groups = [np.array([[0.9, 0.05], [0.8, 0.05]])]
    found = replicates.seed_front(groups, DIRECTIONS, (0.7, 0.1), draws=2000, seed=2)
    assert found.hypervolume == pytest.approx((0.0075, 0.005, 0.01))


def test_a_configuration_key_names_a_configuration_whatever_its_seed():
    config = {"method": "kd", "temperature": 4.0, "seed": 0, "epochs": 30}
    key = replicates.configuration_key(config)
    assert replicates.configuration_key({**config, "seed": 7}) == key
    assert replicates.configuration_key(dict(reversed(config.items()))) == key
    assert replicates.configuration_key({**config, "temperature": 4.5}) != key


def _plan(budget: int, front_seeds: int = 3) -> replicates.ReplicatePlan:
    plan = replicates.ReplicatePlan(("max", "min"), front_seeds, budget, min_freedom=1)
    # A on the front, B clearly behind once noise is known, C tied with A
    for config, values in ((A, [0.95, 0.02]), (B, [0.80, 0.10]), (C, [0.951, 0.021])):
        plan.measured(config, values)
    return plan


A = {"method": "kd", "temperature": 2.0, "seed": 0}
B = {"method": "kd", "temperature": 8.0, "seed": 0}
C = {"method": "kd", "temperature": 3.0, "seed": 0}


def test_the_plan_replicates_open_configurations_with_new_seeds_within_its_budget():
    plan = _plan(budget=3)
    first = plan.next()  # nothing is known of the noise: the best first, seed + 1
    assert first == {**C, "seed": 1} or first == {**A, "seed": 1}
    plan.measured(first, [first["temperature"] / 100 + 0.92, 0.025])  # a seed deviation known
    handed = [first]
    while (config := plan.next()) is not None:
        handed.append(config)
    assert len(handed) == 3 and plan.spent  # the budget, and no more
    pairs = [(c["temperature"], c["seed"]) for c in handed]
    assert len(set(pairs)) == len(pairs), "a seed handed out twice"
    assert all(c["seed"] in (1, 2) for c in handed)
    # B is clearly dominated once the noise is known: never replicated
    assert all(c["temperature"] != B["temperature"] for c in handed[1:])


def test_the_plan_stops_at_front_seeds_and_is_off_at_one():
    plan = _plan(budget=100, front_seeds=2)
    handed = []
    while (config := plan.next()) is not None:
        handed.append(config)
    assert {c["seed"] for c in handed} == {1} and len(handed) <= 3
    assert _plan(budget=100, front_seeds=1).next() is None
