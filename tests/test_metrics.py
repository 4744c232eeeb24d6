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


def test_mce_rmsce_oe_hand_computed():
    # bins: 0.9 -> acc 0.5 (2 samples), 0.62 -> acc 1.0 (2 samples)
    logits = _logits_for([0.9, 0.9, 0.62, 0.62], [0, 0, 1, 1])
    labels = torch.tensor([0, 1, 1, 1])
    assert metrics.mce(logits, labels) == pytest.approx(0.4, abs=1e-6)
    assert metrics.rmsce(logits, labels) == pytest.approx(
        math.sqrt(0.5 * 0.4**2 + 0.5 * 0.38**2), abs=1e-6
    )
    # only the over-confident bin (0.9 vs 0.5) counts: 0.5 * 0.9 * 0.4
    assert metrics.oe(logits, labels) == pytest.approx(0.5 * 0.9 * 0.4, abs=1e-6)


def test_adaptive_ece_uses_equal_mass_bins():
    logits = _logits_for([0.55, 0.6, 0.9, 0.95], [0, 0, 0, 0])
    labels = torch.tensor([0, 1, 0, 0])
    # 2 bins of 2 samples: (0.55, 0.6) acc 0.5, (0.9, 0.95) acc 1
    expected = 0.5 * abs(0.5 - 0.575) + 0.5 * abs(1 - 0.925)
    assert metrics.adaptive_ece(logits, labels, num_bins=2) == pytest.approx(expected, abs=1e-6)


def _numpy_classwise_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    total = 0.0
    for k in range(probs.shape[1]):
        p = probs[:, k]
        index = np.minimum((p * bins).astype(int), bins - 1)
        for b in range(bins):
            members = index == b
            if members.any():
                total += members.mean() * abs((labels[members] == k).mean() - p[members].mean())
    return total / probs.shape[1]


def test_classwise_ece_matches_numpy_reference():
    torch.manual_seed(4)
    logits = torch.randn(300, 6) * 2
    labels = torch.randint(0, 6, (300,))
    reference = _numpy_classwise_ece(logits.softmax(1).double().numpy(), labels.numpy(), 15)
    assert metrics.classwise_ece(logits, labels) == pytest.approx(reference, abs=1e-5)


def test_top5_agreement_and_kl():
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5, 6]])
    assert metrics.top_k_accuracy(logits, torch.tensor([4, 0]), 5) == pytest.approx(0.5)
    assert metrics.agreement(logits, logits.flip(0)) == pytest.approx(0.0)
    assert metrics.kl_teacher_student(logits, logits) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.tensor([[0.75, 0.25]]), torch.tensor([[0.5, 0.5]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert metrics.kl_teacher_student(p.log(), q.log()) == pytest.approx(kl, rel=1e-6)


def test_t_stddev_by_hand():
    # chunks of 2: means [0.8, 0.2] and [0.6, 0.4]; per-class unbiased std = 0.1414...
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.7, 0.3], [0.0, 1.0]])
    expected = float(np.std([0.8, 0.6], ddof=1))
    assert metrics.t_stddev(probs, chunk_size=2) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="needs"):
        metrics.t_stddev(probs[:3], chunk_size=2)


def test_vicinal_linearity_is_zero_for_a_linear_model_and_positive_otherwise():
    torch.manual_seed(5)
    p_i, p_j = torch.rand(400, 4).softmax(1), torch.rand(400, 4).softmax(1)
    lam = torch.rand(400)
    linear = lam[:, None] * p_i + (1 - lam[:, None]) * p_j
    assert metrics.vicinal_linearity(p_i, p_j, linear, lam)["mean"] == pytest.approx(0, abs=1e-6)
    confused = torch.full_like(linear, 0.25)  # a model that is uniform on every mixed input
    result = metrics.vicinal_linearity(p_i, p_j, confused, lam)
    assert result["mean"] > 0 and result["peak"] > 0


def test_evaluate_reports_every_split_metric():
    logits, labels = _calibrated(1000, seed=6)
    assert set(metrics.evaluate(logits, labels)) == set(metrics.SPLIT_METRICS)
    assert "top5" not in metrics.evaluate(logits[:, :5], labels.clamp(max=4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_agree_on_cpu_and_gpu():
    logits, labels = _calibrated(5000, seed=7)
    cpu = metrics.evaluate(logits, labels)
    gpu = metrics.evaluate(logits.cuda(), labels.cuda())
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, abs=1e-5), name
    assert metrics.fit_temperature(logits.cuda() * 2, labels.cuda()) == pytest.approx(
        metrics.fit_temperature(logits * 2, labels), rel=1e-3
    )
