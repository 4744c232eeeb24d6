from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from kdtune import metrics


def _logits_for(confidences: list[float], predicted: list[int]) -> torch.Tensor:
    """Two-class logits whose softmax puts `confidence` on class `predicted`."""
    rows = []
    for conf, cls in zip(confidences, predicted):
        row = [0.0, 0.0]
        row[cls] = math.log(conf / (1 - conf))
        rows.append(row)
    return torch.tensor(rows)


def test_ece_hand_computed():
    # bins of width 1/15: 0.9 -> bin 13, 0.62 -> bin 9
    logits = _logits_for([0.9, 0.9, 0.62, 0.62], [0, 0, 1, 1])
    labels = torch.tensor([0, 1, 1, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.62)
    assert metrics.ece(logits, labels) == pytest.approx(expected, abs=1e-6)
    assert metrics.accuracy(logits, labels) == pytest.approx(0.75)
    assert metrics.conf_gap(logits, labels) == pytest.approx(
        (0.9 + 0.9 + 0.62 + 0.62) / 4 - 0.75, abs=1e-6
    )


def _numpy_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for i in range(bins):
        upper = conf <= edges[i + 1] if i == bins - 1 else conf < edges[i + 1]
        in_bin = (conf >= edges[i]) & upper
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("bins", [5, 15])
def test_ece_matches_independent_numpy_reference(bins):
    torch.manual_seed(1)
    logits = torch.randn(500, 10) * 3
    labels = torch.randint(0, 10, (500,))
    reference = _numpy_ece(logits.softmax(1).double().numpy(), labels.numpy(), bins)
    assert metrics.ece(logits, labels, bins) == pytest.approx(reference, abs=1e-5)


def test_nll_and_brier_match_sklearn_on_binary_problem():
    torch.manual_seed(2)
    logits = torch.randn(200, 2)
    labels = torch.randint(0, 2, (200,))
    p1 = logits.double().softmax(1)[:, 1].numpy()
    assert metrics.nll(logits, labels) == pytest.approx(log_loss(labels.numpy(), p1), rel=1e-5)
    # kdtune's Brier sums over both classes: twice sklearn's binary Brier score.
    assert metrics.brier(logits, labels) == pytest.approx(
        2 * brier_score_loss(labels.numpy(), p1), rel=1e-5
    )


def _calibrated(n: int, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from the logits' own softmax: perfectly calibrated by construction."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 2.5
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_fit_temperature_recovers_known_temperature():
    logits, labels = _calibrated(20000)
    for true_t in (0.5, 3.0):
        assert metrics.fit_temperature(logits * true_t, labels) == pytest.approx(true_t, rel=0.05)


def test_ece_of_calibrated_predictor_shrinks_with_n():
    small = metrics.ece(*_calibrated(500))
    large = metrics.ece(*_calibrated(100000))
    assert large < 0.01 and large < small


def test_reliability_bins_are_consistent_with_ece():
    logits, labels = _calibrated(2000, seed=3)
    bins = metrics.reliability_bins(logits, labels)
    assert sum(bins["count"]) == 2000
    recomputed = sum(
        c / 2000 * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"])
    )
    assert recomputed == pytest.approx(metrics.ece(logits, labels), abs=1e-9)
