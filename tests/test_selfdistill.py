from __future__ import annotations

import math

import numpy as np
import pytest

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
