"""bench/search_efficiency.py's replay: MO-ASHA's decisions over known learning curves, on the
rungs' values and with a perfect ranker, the rungs' rank correlation and the agreement of two
trainings of the same configurations, checked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.search_efficiency import replay, retest_agreement, rung_spearman
from kdtune.config import Recipe, StudySpec
from kdtune.search import rungs

SPEC = StudySpec(name="replayed", recipe=Recipe(epochs=4), grace_period=1, reduction_factor=2,
                 reference_point=(0.5, 0.5))  # fmt: skip


def _trial(accuracies: list[float]) -> np.ndarray:
    """epochs x (val_acc, val_ece), the error mirroring the accuracy."""
    acc = np.array(accuracies)
    return np.stack([acc, 1 - acc], axis=1)


# A starts fast and ends at 0.9; B starts slowly and ends best, at 0.95
EARLY_LEADER = _trial([0.5, 0.6, 0.8, 0.9])
LATE_BLOOMER = _trial([0.1, 0.2, 0.7, 0.95])


def test_the_replayed_rungs_stop_the_late_bloomer_and_a_perfect_ranker_keeps_it():
    assert rungs(SPEC) == [1, 2]
    on_rungs = replay([EARLY_LEADER, LATE_BLOOMER], SPEC)
    # A runs its 4 epochs; B is second at rung 1, where 1 of 2 goes on: stopped after 1 epoch
    assert on_rungs.epochs.tolist() == [4] and on_rungs.total_epochs == 5
    assert on_rungs.hypervolume.tolist() == pytest.approx([(0.9 - 0.5) * (0.5 - 0.1)])
    perfect = replay([EARLY_LEADER, LATE_BLOOMER], SPEC, perfect=True)
    # judged on its final (0.95, 0.05), B goes on, and its point dominates A's
    assert perfect.epochs.tolist() == [4, 8] and perfect.total_epochs == 8
    assert perfect.hypervolume.tolist() == pytest.approx([0.16, 0.45 * 0.45])


def test_a_replay_without_rungs_is_the_fifo_search_itself():
    fifo = dataclasses.replace(SPEC, grace_period=3)  # 3 > 4 / 2: no rung at all
    assert rungs(fifo) == []
    curve = replay([EARLY_LEADER, LATE_BLOOMER], fifo)
    assert curve.epochs.tolist() == [4, 8] and curve.final == pytest.approx(0.45 * 0.45)


def test_rung_spearman_by_hand():
    # final order A < B < C; at epoch 1 reversed (rho -1 for both objectives), at epoch 2 kept
    trials = [_trial([0.5, 0.2, 0.6, 0.7]), _trial([0.4, 0.3, 0.7, 0.8]),
              _trial([0.3, 0.4, 0.8, 0.9])]  # fmt: skip
    found = rung_spearman(trials, [1, 2])
    assert found.shape == (2, 2)
    assert found[0].tolist() == pytest.approx([-1.0, -1.0])
    assert found[1].tolist() == pytest.approx([1.0, 1.0])


def test_retest_agreement_by_hand():
    # three configurations trained twice: accuracy keeps its order, the error swaps the last two
    first = np.array([[0.90, 0.05], [0.92, 0.03], [0.94, 0.02]])
    second = np.array([[0.91, 0.05], [0.93, 0.02], [0.95, 0.03]])
    found = retest_agreement(first, second)
    assert found["spearman"].tolist() == pytest.approx([1.0, 0.5])
    # per objective: sqrt(mean squared difference / 2)
    error_std = np.sqrt((0 + 1e-4 + 1e-4) / 3 / 2)
    assert found["seed_std"].tolist() == pytest.approx([0.01 / np.sqrt(2), error_std])
    assert found["spread"].tolist() == pytest.approx([0.02, np.std([0.05, 0.03, 0.02], ddof=1)])
