"""Self-distillation in a noisy Gaussian mixture (Takanami et al. 2025): reference curves.

The study itself (multi-stage SD with hard/soft pseudo-labels) is still to come; these closed
forms are what it will check itself against (METHODS.md 5.5).
"""

from __future__ import annotations

import math


def gaussian_tail(x: float) -> float:
    """H(x) = 1 - Phi(x): the probability that a standard normal exceeds x."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def optimal_error_noiseless(alpha: float, delta: float) -> float:
    """Test error of the optimally ridge-regularised 0-SD student on noiseless labels:
    eps(alpha) = H(1 / sqrt(Delta (1 + Delta / alpha))), alpha = M/N samples per dimension,
    Delta the cluster variance. Tends to the Bayes error H(1 / sqrt(Delta)) as alpha grows."""
    if alpha <= 0 or delta <= 0:
        raise ValueError(f"alpha and delta must be > 0, got alpha={alpha}, delta={delta}")
    return gaussian_tail(1.0 / math.sqrt(delta * (1.0 + delta / alpha)))


def replica_error(m: float, b: float, q: float, *, rho: float, delta: float) -> float:
    """Test error of a linear classifier sign(w.x/sqrt(N) + b) in the binary mixture, from its
    overlap m with the cluster mean, its bias b and its squared norm q = ||w||^2 / N:
    rho H((m + b) / sqrt(Delta q)) + (1 - rho) H((m - b) / sqrt(Delta q))."""
    scale = math.sqrt(delta * q)
    return rho * gaussian_tail((m + b) / scale) + (1 - rho) * gaussian_tail((m - b) / scale)
