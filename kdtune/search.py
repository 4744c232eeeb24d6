"""Search spaces (define-by-run Optuna functions, one per method) and the searcher/scheduler.

A space names each hyperparameter with a default range; the study's `search` overrides a range
and `fixed` pins a value. The same name means the same thing in every method ("temperature" in
kd and mixup_kd), so Optuna's sampler learns it across methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kdtune.config import StudySpec

# suggest(name, low, high, log): records one hyperparameter of the trial
Suggest = Callable[..., None]


def _kd_space(suggest: Suggest) -> None:
    suggest("temperature", 1.0, 16.0, log=True)
    suggest("w_ce", 0.0, 1.0)
    suggest("w_kd", 0.1, 1.0)


def _mixup_kd_space(suggest: Suggest) -> None:
    _kd_space(suggest)
    suggest("alpha", 0.1, 2.0, log=True)


SPACES: dict[str, Callable[[Suggest], None]] = {
    "ce": lambda suggest: None,
    "kd": _kd_space,
    "mixup_kd": _mixup_kd_space,
}


def space_params(method: str) -> list[str]:
    """Names a method's space suggests (what `search` and `fixed` may refer to)."""
    names: list[str] = []
    SPACES[method](lambda name, *args, **kwargs: names.append(name))
    return names


def trial_constants(spec: StudySpec) -> dict[str, Any]:
    """What every trial of the study shares: the student's recipe and the seed."""
    return {**dataclasses.asdict(spec.recipe), "seed": spec.seed}


class DefineByRun:
    """The Optuna define-by-run space of a study (a class, so Tune can pickle it for resume)."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        spec = self.spec
        method = trial.suggest_categorical("method", list(spec.methods))
        pinned: dict[str, Any] = {}

        def suggest(name: str, low: float, high: float, log: bool = False) -> None:
            low, high = spec.search.get(name, (low, high))
            if name in spec.fixed or low == high:
                pinned[name] = spec.fixed.get(name, low)
            else:
                trial.suggest_float(name, low, high, log=log and low > 0)

        SPACES[method](suggest)
        return {**trial_constants(spec), **pinned}


def make_searcher(spec: StudySpec) -> Any:
    """Optuna multi-objective search; metric and mode go to the searcher, not to TuneConfig."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, spec.num_samples))
    return OptunaSearch(
        space=DefineByRun(spec),
        metric=[metric for metric, _ in spec.objectives],
        mode=[mode for _, mode in spec.objectives],
        sampler=sampler,
    )


def make_scheduler(spec: StudySpec) -> Any:
    """Early stopping (ASHA) only for single-objective studies: Tune's ASHA takes one metric."""
    if len(spec.objectives) != 1:
        return None
    from ray.tune.schedulers import ASHAScheduler

    metric, mode = spec.objectives[0]
    return ASHAScheduler(
        metric=metric,
        mode=mode,
        time_attr="epoch",
        max_t=spec.recipe.epochs,
        grace_period=max(1, spec.recipe.epochs // 4),
    )
