"""Seed replicates of a search's candidates: the seed noise pooled over them, the racing rule that
says which configuration gets another seed, and the bootstrap of the front's uncertainty.

Pure functions over each configuration's values, one row per seed and one column per objective
(each maximised or minimised, as in `kdtune.pareto`). A configuration's reported value is its
seed mean; its standard error comes from the seed noise pooled over every configuration that has
replicates, since two or three seeds of one configuration say little about its own spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdtune.pareto import Direction, as_minimisation, best_first, hypervolume_2d, pareto_front

# how many standard errors of a difference make it clear (about 95% one-sided at z = 2)
CLEAR_Z = 2.0
OPEN, DOMINATED, ON_FRONT = "open", "dominated", "front"


def _groups(groups: Sequence[np.ndarray], objectives: int) -> list[np.ndarray]:
    shaped = [np.asarray(g, dtype=float).reshape(-1, objectives) for g in groups]
    if any(len(g) == 0 for g in shaped):
        raise ValueError("every configuration needs at least one seed's values")
    return shaped


def seed_means(groups: Sequence[np.ndarray], objectives: int) -> np.ndarray:
    """(configurations, objectives): each configuration's mean over its seeds."""
    return np.array([g.mean(axis=0) for g in _groups(groups, objectives)]).reshape(-1, objectives)


def pooled_sd(groups: Sequence[np.ndarray], objectives: int) -> np.ndarray:
    """Per objective, the seed standard deviation pooled over the configurations measured with
    two seeds or more: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)). NaN while none has two."""
    shaped = [g for g in _groups(groups, objectives) if len(g) > 1]
    freedom = sum(len(g) - 1 for g in shaped)
    if not freedom:
        return np.full(objectives, np.nan)
    squares = sum(((g - g.mean(axis=0)) ** 2).sum(axis=0) for g in shaped)
    return np.sqrt(squares / freedom)


def standard_errors(groups: Sequence[np.ndarray], objectives: int) -> np.ndarray:
    """(configurations, objectives): the pooled seed deviation over the square root of each
    configuration's seed count; NaN while no configuration has replicates."""
    counts = np.array([len(g) for g in _groups(groups, objectives)], dtype=float)
    return pooled_sd(groups, objectives)[None, :] / np.sqrt(counts)[:, None]


def race(means: np.ndarray, errors: np.ndarray, directions: Sequence[Direction],
         z: float = CLEAR_Z) -> list[str]:  # fmt: skip
    """Each configuration's standing, from its seed means and their standard errors:
    - "dominated": another configuration is better in every objective by more than `z`
      standard errors of the difference, so more seeds would not bring it onto the front;
    - "front": against every other configuration it is better in some objective by more than
      that, so none can dominate it;
    - "open": neither is clear yet (a tie, or errors still unknown: NaN counts as unknown)."""
    costs = as_minimisation(means, directions)
    errors = np.nan_to_num(np.asarray(errors, dtype=float), nan=np.inf)
    standings = []
    for i in range(len(costs)):
        margin = z * np.sqrt(errors[i] ** 2 + errors**2)  # (configurations, objectives)
        ahead_of_i = costs < costs[i] - margin  # j better than i, clearly, per objective
        behind_i = costs > costs[i] + margin  # j worse than i, clearly
        others = np.arange(len(costs)) != i
        if (ahead_of_i.all(axis=1) & others).any():
            standings.append(DOMINATED)
        elif behind_i.any(axis=1)[others].all():
            standings.append(ON_FRONT)
        else:
            standings.append(OPEN)
    return standings


def next_replicates(groups: Sequence[np.ndarray], directions: Sequence[Direction],
                    front_seeds: int, budget: int, z: float = CLEAR_Z) -> list[int]:  # fmt: skip
    """The configurations to run with one more seed, at most `budget` of them: those still
    "open" in the race and measured with fewer than `front_seeds` seeds, best first (the front
    of the means, then the fronts behind it), each at most once per call."""
    objectives = len(directions)
    means = seed_means(groups, objectives)
    standings = race(means, standard_errors(groups, objectives), directions, z)
    wanted = [i for i in best_first(means, directions)
              if standings[i] == OPEN and len(groups[i]) < front_seeds]  # fmt: skip
    return [int(i) for i in wanted[:max(budget, 0)]]


def _residual_pool(groups: list[np.ndarray]) -> np.ndarray:
    """Every replicated configuration's deviations from its mean, widened by sqrt(n / (n - 1))
    so that their spread estimates the seed deviation, not its shrunken sample version."""
    pool = [(g - g.mean(axis=0)) * np.sqrt(len(g) / (len(g) - 1)) for g in groups if len(g) > 1]
    return np.concatenate(pool) if pool else np.empty((0, groups[0].shape[1]))


def bootstrap_means(groups: Sequence[np.ndarray], objectives: int, draws: int,
                    seed: int = 0) -> np.ndarray:  # fmt: skip
    """(draws, configurations, objectives): seed means recomputed on seeds drawn with
    replacement. A configuration with replicates draws from its own seeds; one measured once has
    no spread of its own, so its value moves by a deviation drawn from the pooled ones (it stays
    put while no configuration has replicates)."""
    shaped = _groups(groups, objectives)
    rng = np.random.default_rng(seed)
    pool = _residual_pool(shaped)
    out = np.empty((draws, len(shaped), objectives))
    for c, values in enumerate(shaped):
        if len(values) > 1:
            picks = rng.integers(0, len(values), size=(draws, len(values)))
            out[:, c] = values[picks].mean(axis=1)
        elif len(pool):
            out[:, c] = values[0] + pool[rng.integers(0, len(pool), size=draws)]
        else:
            out[:, c] = values[0]
    return out


def p_nondominated(groups: Sequence[np.ndarray], directions: Sequence[Direction],
                   draws: int = 2000, seed: int = 0) -> np.ndarray:  # fmt: skip
    """Each configuration's probability of being on the front of the seed means: the share of
    bootstrap draws (`bootstrap_means`) in which no other configuration dominates it."""
    samples = bootstrap_means(groups, len(directions), draws, seed)
    return np.mean([pareto_front(sample, directions) for sample in samples], axis=0)


def hypervolume_interval(groups: Sequence[np.ndarray], directions: Sequence[Direction],
                         reference: Sequence[float], draws: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:  # fmt: skip
    """The hypervolume of the front of the seed means, and the central `level` interval of the
    hypervolumes of the bootstrap draws' fronts: (value, low, high)."""
    value = hypervolume_2d(seed_means(groups, len(directions)), directions, reference)
    samples = bootstrap_means(groups, len(directions), draws, seed)
    volumes = [hypervolume_2d(sample, directions, reference) for sample in samples]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(volumes, [tail, 100 - tail])
    return value, float(low), float(high)
