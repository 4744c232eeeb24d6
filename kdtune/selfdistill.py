"""Self-distillation in a noisy binary Gaussian mixture (Takanami et al. 2025, METHODS.md 5).

Data: y in {0, 1} with P(y = 1) = rho, x | y ~ N(+-v / sqrt(N), Delta I_N), v = 1_N (so the
cluster means have norm 1), M = alpha N training samples whose labels are flipped with
probability theta; validation samples are drawn (and flipped) the same way, test labels are clean.

Student: ridge-regularised logistic regression, logit(x) = w.x / sqrt(N) + b, minimising
sum_mu BCE(target_mu, logit_mu) + lambda / 2 |w|^2 (the bias is not regularised).

Multi-stage SD: stage 0 learns the noisy labels; stage t >= 1 learns, on the same inputs, the
previous stage's pseudo-labels: hard 1[logit > 0], or soft sigmoid(beta logit / s) where s is
the RMS of the previous stage's training logits (so beta is scale-free, like the paper's
beta = 1 / sqrt(Q)). Each stage's lambda (and beta) is picked on the validation split; the
stages stop early at the first one that does not lower the validation error.

The bias, `bias =`:
- "zero": b = 0 in every stage, what the paper's replica code does for balanced classes. A
  learned bias would follow the chance imbalance of the noisy labels, and as lambda grows and w
  shrinks that bias alone decides: the strongly regularised students, which are the best ones
  here, would collapse to one class.
- "learn": every stage learns its own; under imbalance the pseudo-labels can then drift
  towards the majority class, stage after stage.
- "fix" (bias fixing; an assumption, the paper's exact rule is unconfirmed, METHODS.md 5.3):
  stage 0 learns b from the real labels, so it carries the class prior, and later stages keep it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from kdtune.config import ConfigError

HARD = math.inf  # beta of hard pseudo-labels


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


@dataclass(frozen=True)
class Mixture:
    x_train: np.ndarray  # (M, N)
    y_train: np.ndarray  # noisy labels in {0, 1}
    clean_train: np.ndarray  # the labels before flipping
    x_val: np.ndarray
    y_val: np.ndarray  # noisy, as a held-out part of the training data would be
    clean_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray  # clean
    rho: float
    delta: float


def sample_mixture(
    *, dim: int, alpha: float, rho: float, delta: float, theta: float, seed: int,
    val_fraction: float = 0.5, test_size: int = 10_000,
) -> Mixture:  # fmt: skip
    """Draw train, validation and test sets; exactly round(rho * count) positives in each."""
    rng = np.random.default_rng(seed)
    mean = np.ones(dim) / math.sqrt(dim)

    def draw(count: int, flip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.zeros(count)
        y[: round(rho * count)] = 1.0
        rng.shuffle(y)
        x = (2 * y - 1)[:, None] * mean + math.sqrt(delta) * rng.standard_normal((count, dim))
        observed = np.where(rng.random(count) < flip, 1.0 - y, y)
        return x, observed, y

    train_size = max(4, round(alpha * dim))
    x_train, y_train, clean_train = draw(train_size, theta)
    x_val, y_val, clean_val = draw(max(4, round(val_fraction * train_size)), theta)
    x_test, _, y_test = draw(test_size, 0.0)
    return Mixture(x_train, y_train, clean_train, x_val, y_val, clean_val, x_test, y_test,
                   rho, delta)  # fmt: skip


@dataclass(frozen=True)
class Student:
    w: np.ndarray
    b: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w / math.sqrt(len(self.w)) + self.b

    def error(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((self.logits(x) > 0) != (y > 0.5)))

    def exact_error(self, rho: float, delta: float) -> float:
        """The expected test error on the mixture (no test-sampling noise), by replica_error."""
        n = len(self.w)
        m, q = float(self.w.sum() / n), float(self.w @ self.w / n)  # v = 1_N: m = w.v / N
        return replica_error(m, self.b, q, rho=rho, delta=delta)


def fit_student(
    x: np.ndarray, targets: np.ndarray, lam: float, *, bias: float | None = None,
    start: Student | None = None,
) -> Student:  # fmt: skip
    """Ridge-regularised logistic regression to convergence (L-BFGS); `targets` in [0, 1].
    The bias is learned unless given. Strictly convex in w for lam > 0, so the optimum is
    unique and `start` only saves time."""
    n = x.shape[1]
    root = math.sqrt(n)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:n], theta[n] if bias is None else bias
        z = x @ w / root + b
        loss = np.logaddexp(0.0, z).sum() - targets @ z + 0.5 * lam * w @ w
        residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - targets  # sigmoid(z) - target, overflow-free
        grad_w = x.T @ residual / root + lam * w
        return float(loss), np.append(grad_w, residual.sum()) if bias is None else grad_w

    theta0 = np.zeros(n + (bias is None))
    if start is not None:
        theta0[:n] = start.w
        if bias is None:
            theta0[n] = start.b
    found = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                     options={"maxiter": 5000, "gtol": 1e-7})  # fmt: skip
    w = found.x[:n]
    return Student(w, float(found.x[n]) if bias is None else float(bias))


def pseudo_labels(teacher_logits: np.ndarray, beta: float) -> np.ndarray:
    """Hard (beta = inf): 1[logit > 0]; soft: sigmoid(beta * logit / RMS(logits))."""
    if math.isinf(beta):
        return (teacher_logits > 0).astype(float)
    scale = math.sqrt(float(np.mean(teacher_logits**2))) or 1.0
    return 0.5 * (1.0 + np.tanh(0.5 * beta * teacher_logits / scale))


@dataclass(frozen=True)
class Stage:
    index: int  # 0 = trained on the (noisy) labels
    lam: float
    beta: float  # inf for hard pseudo-labels, nan at stage 0
    student: Student = field(repr=False)
    val_error: float  # on the noisy validation labels: what the choices were made on
    test_error: float  # on the clean test set
    exact_error: float  # the expected test error, by the replica formula


def _best_stage(
    data: Mixture, index: int, targets_by_beta: dict[float, np.ndarray],
    lambdas: Sequence[float], bias: float | None, val_labels: np.ndarray,
) -> Stage:  # fmt: skip
    """Fit every (beta, lambda) and keep the lowest validation error (first on ties)."""
    best: Stage | None = None
    for beta, targets in targets_by_beta.items():
        previous = None
        for lam in sorted(lambdas, reverse=True):  # strong to weak ridge: warm starts
            student = fit_student(data.x_train, targets, lam, bias=bias, start=previous)
            previous = student
            val_error = student.error(data.x_val, val_labels)
            if best is None or val_error < best.val_error:
                best = Stage(index, lam, beta, student, val_error,
                             student.error(data.x_test, data.y_test),
                             student.exact_error(data.rho, data.delta))  # fmt: skip
    assert best is not None
    return best


BIAS_MODES = ("zero", "learn", "fix")


def first_stage(
    data: Mixture, lambdas: Sequence[float], *, bias: str, noiseless: bool = False
) -> Stage:
    """0-SD: the student of the labels (the clean ones when `noiseless`), lambda on val."""
    train, val = (data.clean_train, data.clean_val) if noiseless else (data.y_train, data.y_val)
    return _best_stage(data, 0, {math.nan: train}, lambdas, 0.0 if bias == "zero" else None, val)


def self_distill(
    data: Mixture, start: Stage, *, lambdas: Sequence[float], betas: Sequence[float],
    stages: int, bias: str = "learn",
) -> list[Stage]:  # fmt: skip
    """Stages 0..`stages`: each learns the previous one's pseudo-labels (betas = (HARD,) for
    hard ones), its lambda and beta picked on the validation split."""
    chain = [start]
    for index in range(1, stages + 1):
        teacher_logits = chain[-1].student.logits(data.x_train)
        targets = {beta: pseudo_labels(teacher_logits, beta) for beta in betas}
        fixed_bias = {"zero": 0.0, "fix": start.student.b, "learn": None}[bias]
        chain.append(_best_stage(data, index, targets, lambdas, fixed_bias, data.y_val))
    return chain


def early_stop(chain: Sequence[Stage], tolerance: float = 0.0) -> Stage:
    """The stage before the first one whose validation error does not improve by more than
    `tolerance`: limiting the number of stages, as the paper recommends."""
    for previous, current in zip(chain, chain[1:]):
        if current.val_error >= previous.val_error - tolerance:
            return previous
    return chain[-1]


@dataclass(frozen=True)
class CellConfig:
    """One trial of the study: one data draw, every variant on it."""

    alpha: float
    seed: int
    setting: str = "balanced"  # a label the study groups by
    dim: int = 400
    rho: float = 0.5
    delta: float = 0.5
    theta: float = 0.3
    stages: int = 3
    bias: str = "zero"
    # half-decades; smaller ridges never won on validation in our runs and are the slow fits
    lambdas: tuple[float, ...] = tuple(float(v) for v in np.logspace(-1, 3, 9))
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    val_fraction: float = 0.5
    test_size: int = 10_000

    def __post_init__(self) -> None:
        rules = [
            ("alpha", self.alpha > 0, "must be > 0"),
            ("dim", self.dim >= 2, "must be >= 2"),
            ("rho", 0 < self.rho < 1, "is a class fraction: must lie in (0, 1)"),
            ("delta", self.delta > 0, "(cluster variance) must be > 0"),
            ("theta", 0 <= self.theta < 0.5, "(label-flip probability) must lie in [0, 0.5)"),
            ("stages", self.stages >= 0, "must be >= 0"),
            ("bias", self.bias in BIAS_MODES, f"must be one of {list(BIAS_MODES)}"),
            ("lambdas", bool(self.lambdas) and min(self.lambdas) > 0, "must all be > 0"),
            ("betas", bool(self.betas) and min(self.betas) > 0, "must all be > 0"),
            ("val_fraction", self.val_fraction > 0, "must be > 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name}: {rule}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CellConfig:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)


@dataclass(frozen=True)
class GmmStudySpec:
    """The self-distillation study: a balanced sweep over alpha (0-SD, hard and soft SD, the
    noiseless 0-SD against its closed form) and, under class imbalance, SD with a learned vs a
    fixed bias. Every cell is one Ray Tune trial."""

    name: str = "self_distillation_gmm"
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    dim: int = 400
    delta: float = 0.5
    theta: float = 0.3  # METHODS.md 5.1's "optimal SD" sweep: rho 0.5, Delta 0.5, theta 0.3
    stages: int = 3
    # the imbalanced cells: rho, label noise, alpha, stages (run with bias "learn" and "fix")
    imbalance: tuple[float, float, float, int] = (0.2, 0.2, 2.0, 4)
    max_concurrent_trials: int = 2
    storage_path: str = "./ray_results"

    def points(self) -> list[dict[str, Any]]:
        """The trial configs, validated. The lambda and beta grids stay at their defaults and
        out of the configs (Tune's loggers take scalars only)."""
        shared = {"dim": self.dim, "delta": self.delta}
        cells = [CellConfig(alpha=alpha, seed=seed, theta=self.theta, stages=self.stages, **shared)
                 for alpha in self.alphas for seed in self.seeds]  # fmt: skip
        rho, theta, alpha, stages = self.imbalance
        cells += [CellConfig(alpha=alpha, seed=seed, setting=f"imbalanced, bias {bias}", rho=rho,
                             theta=theta, stages=int(stages), bias=bias, **shared)
                  for bias in ("learn", "fix") for seed in self.seeds]  # fmt: skip
        return [{k: v for k, v in asdict(c).items() if k not in ("lambdas", "betas")}
                for c in cells]  # fmt: skip


def _stage_record(prefix: str, stage: Stage) -> dict[str, float]:
    return {
        f"{prefix}_val_error": stage.val_error,
        f"{prefix}_test_error": stage.test_error,
        f"{prefix}_exact_error": stage.exact_error,
        f"{prefix}_lambda": stage.lam,
    }


def run_cell(config: CellConfig) -> list[dict[str, float]]:
    """Every variant on one draw of the data: one record per stage (for metric histories); the
    last one also holds the summary: 0-SD, 1-SD and early-stopped SD, hard and soft, the
    noiseless 0-SD and, for balanced classes, its closed form."""
    data = sample_mixture(dim=config.dim, alpha=config.alpha, rho=config.rho,
                          delta=config.delta, theta=config.theta, seed=config.seed,
                          val_fraction=config.val_fraction, test_size=config.test_size)  # fmt: skip
    start = first_stage(data, config.lambdas, bias=config.bias)
    common = {"lambdas": config.lambdas, "stages": config.stages, "bias": config.bias}
    hard = self_distill(data, start, betas=(HARD,), **common)
    soft = self_distill(data, start, betas=config.betas, **common)
    records = [
        {"stage": index, **_stage_record("hard", hard[index]),
         **_stage_record("soft", soft[index]), "soft_beta": soft[index].beta}
        for index in range(config.stages + 1)
    ]  # fmt: skip
    summary = records[-1]
    for name, chain in (("hard", hard), ("soft", soft)):
        stopped = early_stop(chain)
        summary.update({f"{name}_sd{s.index}_exact_error": s.exact_error for s in chain})
        summary.update({
            f"{name}_es_exact_error": stopped.exact_error,
            f"{name}_es_test_error": stopped.test_error,
            f"{name}_es_stages": stopped.index,
            f"{name}_last_exact_error": chain[-1].exact_error,
        })  # fmt: skip
    noiseless = first_stage(data, config.lambdas, bias=config.bias, noiseless=True)
    summary.update({
        "sd0_exact_error": start.exact_error,
        "sd0_test_error": start.test_error,
        "hard_gain": start.exact_error - summary["hard_es_exact_error"],
        "noiseless_sd0_exact_error": noiseless.exact_error,
        "noiseless_sd0_test_error": noiseless.test_error,
    })  # fmt: skip
    if config.rho == 0.5:
        summary["theory_noiseless_error"] = optimal_error_noiseless(config.alpha, config.delta)
    return records
