from __future__ import annotations

import math

import numpy as np
import pytest

from kdtune import selfdistill as sd
from kdtune.config import ConfigError
from kdtune.selfdistill import gaussian_tail, optimal_error_noiseless, replica_error


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [(0.5, 0.1587), (1, 0.1241), (2, 0.1030), (5, 0.0888), (10, 0.0838)],  # METHODS.md 5.5
)
def test_noiseless_optimal_error_matches_the_tabulated_curve(alpha, expected):
    assert optimal_error_noiseless(alpha, 0.5) == pytest.approx(expected, abs=5e-5)


def test_noiseless_error_tends_to_the_bayes_error():
    bayes = gaussian_tail(1 / math.sqrt(0.5))
    assert bayes == pytest.approx(0.0786, abs=5e-5)
    errors = [optimal_error_noiseless(a, 0.5) for a in (1, 10, 100, 1e6)]
    assert errors == sorted(errors, reverse=True) and errors[-1] == pytest.approx(bayes, abs=1e-6)


def test_replica_error_agrees_with_monte_carlo():
    # x = y mu / sqrt(N) + sqrt(Delta) z, prediction sign(w.x / sqrt(N) + b), mu ~ N(0, I_N):
    # the overlap is m = w.mu / N and q = |w|^2 / N
    rng = np.random.default_rng(0)
    n, samples, delta, rho, bias = 200, 100_000, 0.5, 0.3, 0.2
    mu = rng.standard_normal(n)
    w = 0.8 * mu + rng.standard_normal(n)
    m, q = w @ mu / n, w @ w / n
    y = np.where(rng.random(samples) < rho, 1.0, -1.0)
    x = y[:, None] * mu / math.sqrt(n) + math.sqrt(delta) * rng.standard_normal((samples, n))
    simulated = np.mean(np.sign(x @ w / math.sqrt(n) + bias) != y)
    assert replica_error(m, bias, q, rho=rho, delta=delta) == pytest.approx(simulated, abs=0.005)


def _mixture(**changes):
    values = dict(dim=200, alpha=2.0, rho=0.5, delta=0.5, theta=0.3, seed=0)
    return sd.sample_mixture(**{**values, **changes})


def test_mixture_has_exact_class_counts_and_flips_at_rate_theta():
    data = _mixture(dim=400, alpha=5.0, rho=0.3, theta=0.2)
    assert data.clean_train.sum() == round(0.3 * 2000) and data.y_test.sum() == 3000
    assert np.mean(data.y_train != data.clean_train) == pytest.approx(0.2, abs=0.03)
    # the class means are +-1_N / sqrt(N): the projection on 1_N / sqrt(N) is +-1 on average
    projection = data.x_test @ np.ones(400) / math.sqrt(400)
    assert projection[data.y_test == 1].mean() == pytest.approx(1.0, abs=0.05)
    assert projection[data.y_test == 0].mean() == pytest.approx(-1.0, abs=0.05)


def test_ridge_logistic_student_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    data = _mixture()
    n, lam = data.x_train.shape[1], 3.0
    ours = sd.fit_student(data.x_train, data.y_train, lam)
    # ours: sum BCE(w.x / sqrt(N) + b) + lam / 2 |w|^2; with u = w / sqrt(N) this is sklearn's
    # 1/2 |u|^2 + C sum BCE(u.x + b) times lam N, so C = 1 / (lam N)
    theirs = LogisticRegression(C=1 / (lam * n), tol=1e-10, max_iter=10_000)
    theirs.fit(data.x_train, data.y_train)
    assert np.allclose(ours.w / math.sqrt(n), theirs.coef_[0], atol=1e-4)
    assert ours.b == pytest.approx(theirs.intercept_[0], abs=1e-4)


def test_soft_target_fit_is_stationary_and_a_given_bias_is_kept():
    data = _mixture()
    targets = sd.pseudo_labels(sd.fit_student(data.x_train, data.y_train, 1.0).logits(
        data.x_train), 2.0)  # fmt: skip
    student = sd.fit_student(data.x_train, targets, 0.5)
    residual = 1 / (1 + np.exp(-student.logits(data.x_train))) - targets
    n = data.x_train.shape[1]
    assert abs(residual.sum()) < 1e-4  # the bias's gradient
    assert np.allclose(data.x_train.T @ residual / math.sqrt(n), -0.5 * student.w, atol=1e-4)
    assert sd.fit_student(data.x_train, targets, 0.5, bias=0.25).b == 0.25


def test_pseudo_labels_by_hand():
    logits = np.array([-2.0, 0.5, 1.0, 0.0])
    assert sd.pseudo_labels(logits, sd.HARD).tolist() == [0, 1, 1, 0]
    rms = math.sqrt((4 + 0.25 + 1) / 4)
    expected = [1 / (1 + math.exp(-2.0 * v / rms)) for v in logits]
    assert sd.pseudo_labels(logits, 2.0) == pytest.approx(expected)


def test_exact_error_agrees_with_the_empirical_test_error():
    data = _mixture(dim=300, rho=0.3, test_size=40_000)
    student = sd.fit_student(data.x_train, data.y_train, 1.0)
    exact = student.exact_error(0.3, 0.5)
    sigma = math.sqrt(exact * (1 - exact) / 40_000)
    assert student.error(data.x_test, data.y_test) == pytest.approx(exact, abs=4 * sigma)


def test_early_stopping_keeps_the_stage_before_the_first_without_gain():
    def stage(i, val):
        return sd.Stage(i, 1.0, sd.HARD, None, val, 0.0, 0.0)

    chain = [stage(0, 0.30), stage(1, 0.25), stage(2, 0.26), stage(3, 0.20)]
    assert sd.early_stop(chain).index == 1
    assert sd.early_stop(chain[:2]).index == 1 and sd.early_stop(chain[:1]).index == 0


def test_tuned_noiseless_student_reaches_the_closed_form():
    alpha, delta = 2.0, 0.5
    errors = []
    for seed in range(3):
        data = _mixture(dim=400, alpha=alpha, delta=delta, seed=seed)
        errors.append(sd.first_stage(data, sd.CellConfig(alpha, seed).lambdas, bias="zero",
                                     noiseless=True).exact_error)  # fmt: skip
    assert np.mean(errors) == pytest.approx(optimal_error_noiseless(alpha, delta), abs=0.006)


def test_hard_self_distillation_beats_zero_sd_at_moderate_alpha():
    records = [sd.run_cell(sd.CellConfig(alpha=2.0, seed=seed, dim=300, stages=1))[-1]
               for seed in range(2)]  # fmt: skip
    gain = np.mean([r["sd0_exact_error"] - r["hard_sd1_exact_error"] for r in records])
    assert gain > 0.02  # METHODS.md 5.6(b) saw about 5 points at alpha 2


def test_bias_fixing_prevents_the_drift_to_the_majority_class():
    def last_stage(bias):
        return np.mean([sd.run_cell(sd.CellConfig(alpha=2.0, seed=seed, dim=200, rho=0.2,
                                                  theta=0.2, stages=3, bias=bias))[-1][
                            "hard_sd3_exact_error"] for seed in range(2)])  # fmt: skip

    assert last_stage("fix") < last_stage("learn") - 0.02


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"rho": 1.0}, "rho"), ({"theta": 0.5}, "theta"), ({"bias": "free"}, "bias: must be one of"),
     ({"lambdas": (0.0,)}, "lambdas")],
)  # fmt: skip
def test_bad_cells_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        sd.CellConfig(alpha=1.0, seed=0, **changes)
