"""Seed replicates of a search's candidates: the seed noise pooled over them, the racing rule that
says which configuration gets another seed, and the bootstrap of the front's uncertainty.

Pure functions over each configuration's values, one row per seed and one column per objective
(each maximised or minimised, as in `kdtune.pareto`). A configuration's reported value is its
seed mean; its standard error comes from the seed noise pooled over every configuration that has
replicates, since two or three seeds of one configuration say little about its own spread.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdtune.pareto import Direction, as_minimisation, best_first, hypervolume_2d, pareto_front

# how many standard errors of a difference make it clear (about 95% one-sided at z = 2)
CLEAR_Z = 2.0
# The race trusts the pooled seed noise once it has this many degrees of freedom (four
# configurations of 3 seeds): pooled over 2 configurations of 3 seeds (4), a standard
# deviation is as likely as not 20% low, and a real study of 7 methods (loss_weights) declared
# its front decided, p_nondominated 1.0, on a member that 3 fresh seeds then dominated.
MIN_FREEDOM = 8
OPEN, DOMINATED, ON_FRONT = "open", "dominated", "front"


def _groups(groups: Sequence[np.ndarray], objectives: int) -> list[np.ndarray]:
    shaped = [np.asarray(g, dtype=float).reshape(-1, objectives) for g in groups]
    if any(len(g) == 0 for g in shaped):
        raise ValueError("every configuration needs at least one seed's values")
    return shaped


def seed_means(groups: Sequence[np.ndarray], objectives: int) -> np.ndarray:
    """(configurations, objectives): each configuration's mean over its seeds."""
    return np.array([g.mean(axis=0) for g in _groups(groups, objectives)]).reshape(-1, objectives)


def freedom(groups: Sequence[np.ndarray], objectives: int) -> int:
    """The pooled seed deviation's degrees of freedom: sum (n_i - 1)."""
    return sum(len(g) - 1 for g in _groups(groups, objectives))


def trusted_errors(groups: Sequence[np.ndarray], objectives: int,
                   min_freedom: int = MIN_FREEDOM) -> np.ndarray:  # fmt: skip
    """`standard_errors`, or NaN (unknown: nothing is clear in the race) while the pooled seed
    noise has fewer than `min_freedom` degrees of freedom."""
    errors = standard_errors(groups, objectives)
    return errors if freedom(groups, objectives) >= min_freedom else np.full_like(errors, np.nan)


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
    - "front": its errors are known and against every other configuration it is better in
      some objective by more than that, so none can dominate it;
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
        elif np.isfinite(errors[i]).all() and behind_i.any(axis=1)[others].all():
            standings.append(ON_FRONT)
        else:
            standings.append(OPEN)
    return standings


def next_replicates(groups: Sequence[np.ndarray], directions: Sequence[Direction],
                    front_seeds: int, budget: int, z: float = CLEAR_Z,
                    min_freedom: int = MIN_FREEDOM) -> list[int]:  # fmt: skip
    """The configurations to run with one more seed, at most `budget` of them: those still
    "open" in the race and measured with fewer than `front_seeds` seeds, best first (the front
    of the means, then the fronts behind it), each at most once per call. Until the pooled seed
    noise has `min_freedom` degrees of freedom every configuration is open."""
    objectives = len(directions)
    means = seed_means(groups, objectives)
    standings = race(means, trusted_errors(groups, objectives, min_freedom), directions, z)
    wanted = [i for i in best_first(means, directions)
              if standings[i] == OPEN and len(groups[i]) < front_seeds]  # fmt: skip
    return [int(i) for i in wanted[:max(budget, 0)]]


def _residual_pool(groups: list[np.ndarray]) -> np.ndarray:
    """Every replicated configuration's deviations from its mean, widened by sqrt(n / (n - 1))
    so that their spread estimates the seed deviation, not its shrunken sample version."""
    pool = [(g - g.mean(axis=0)) * np.sqrt(len(g) / (len(g) - 1)) for g in groups if len(g) > 1]
    return np.concatenate(pool) if pool else np.empty((0, groups[0].shape[1]))


def bootstrap_means(groups: Sequence[np.ndarray], objectives: int, draws: int,
                    seed: int = 0, pool: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(draws, configurations, objectives): seed means recomputed on seeds drawn with
    replacement. A configuration with replicates draws from its own seeds; one measured once has
    no spread of its own, so its value moves by a deviation drawn from the pooled ones (`pool`,
    default those of `groups`; it stays put while no configuration has replicates)."""
    shaped = _groups(groups, objectives)
    rng = np.random.default_rng(seed)
    pool = _residual_pool(shaped) if pool is None else pool
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


def configuration_key(config: Mapping[str, Any]) -> str:
    """What names a configuration across its seeds: a short hash of its config without the
    seed (the MLflow tag that groups its runs, and the column that joins them in Parquet)."""
    settings = {k: v for k, v in config.items() if k != "seed"}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class ReplicatePlan:
    """Which configuration a search runs again, and with which seed, once its searched trials
    are asked: the racing rule (`next_replicates`) over what the full-budget trials measured,
    each configuration up to `front_seeds` seeds (the search's own, then `seed` + 1, + 2, ...),
    at most `budget` replicate trials in all. Plain data: a Tune searcher pickles it at every
    snapshot, and a resumed study goes on from it, no seed run twice."""

    directions: tuple[Direction, ...]
    front_seeds: int
    budget: int
    min_freedom: int = MIN_FREEDOM
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> config, no seed
    values: dict[str, list[list[float]]] = field(default_factory=dict)  # key -> a row per seed
    seeds: dict[str, list[int]] = field(default_factory=dict)  # key -> seeds begun, running too
    started: int = 0  # replicate trials begun

    def measured(self, config: Mapping[str, Any], values: Sequence[float]) -> None:
        """A trial that ran its whole budget: a searched one, or a replicate."""
        key = configuration_key(config)
        self.configs.setdefault(key, {k: v for k, v in config.items() if k != "seed"})
        self.values.setdefault(key, []).append([float(v) for v in values])
        seeds, seed = self.seeds.setdefault(key, []), int(config.get("seed", 0))
        if seed not in seeds:  # a replicate's seed was noted when it was handed out
            seeds.append(seed)

    def next(self) -> dict[str, Any] | None:
        """The next replicate's config (the configuration with a new seed), or None when the
        race has nothing open below `front_seeds` or the budget is spent."""
        if self.started >= self.budget:
            return None
        keys = list(self.values)
        groups = [np.array(self.values[k]) for k in keys]
        wanted = next_replicates(groups, self.directions, self.front_seeds, len(keys),
                                 min_freedom=self.min_freedom)  # fmt: skip
        for index in wanted:
            key = keys[index]
            if len(self.seeds[key]) < self.front_seeds:  # running ones count
                seed = max(self.seeds[key]) + 1
                self.seeds[key].append(seed)
                self.started += 1
                return {**self.configs[key], "seed": seed}
        return None

    @property
    def spent(self) -> bool:
        return self.started >= self.budget


@dataclass(frozen=True)
class SeedFront:
    """The front of the seed means of a study's configurations, with its uncertainty."""

    means: np.ndarray  # (configurations, objectives)
    errors: np.ndarray  # their standard errors (pooled seed noise); NaN without replicates
    seeds: np.ndarray  # (configurations,): how many seeds each was measured with
    on_front: np.ndarray  # (configurations,) bool: on the front of the means
    p_nondominated: np.ndarray  # (configurations,): the bootstrap's share on the front
    hypervolume: tuple[float, float, float]  # of the means' front, and its 95% interval


def seed_front(groups: Sequence[np.ndarray], directions: Sequence[Direction],
               reference: Sequence[float], draws: int = 1000,
               seed: int = 0) -> SeedFront:  # fmt: skip
    """`groups`: each configuration's values, a row per seed. The bootstrap resamples the
    configurations the race has not found clearly dominated; a clearly dominated one counts 0
    (at z = 2 another beats it in every objective, which its resamples almost never undo), so
    that a study of a thousand configurations bootstraps only its contenders."""
    objectives = len(directions)
    shaped = _groups(groups, objectives)
    means, errors = seed_means(shaped, objectives), standard_errors(shaped, objectives)
    on_front = pareto_front(means, directions)
    standings = race(means, trusted_errors(shaped, objectives), directions)
    contenders = [i for i, standing in enumerate(standings) if standing != DOMINATED]
    pool = _residual_pool(shaped)
    probability, volumes = on_front.astype(float), [math.nan]
    if len(pool):  # without replicates there is nothing to resample: no interval
        samples = bootstrap_means([shaped[i] for i in contenders], objectives, draws, seed, pool)
        probability = np.zeros(len(shaped))
        probability[contenders] = np.mean([pareto_front(s, directions) for s in samples], axis=0)
        if objectives == 2:
            volumes = [hypervolume_2d(s, directions, reference) for s in samples]
    value = hypervolume_2d(means, directions, reference) if objectives == 2 else math.nan
    low, high = (float(v) for v in np.percentile(volumes, [2.5, 97.5]))
    return SeedFront(means, errors, np.array([len(g) for g in shaped]), on_front, probability,
                     (value, low, high))
