"""Search spaces (define-by-run Optuna functions, one per method) and the searcher/scheduler.

A space names each hyperparameter with a default range; the study's `search` overrides a range
and `fixed` pins a value. The same name means the same thing in every method ("temperature" in
kd, dkd and mixup_kd), so Optuna's sampler learns it across methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kdtune.config import StudySpec


class Space:
    """What a method's space function sees: it names each hyperparameter with a default range.

    The study's `search` overrides a numeric range, `fixed` pins a value; a range whose ends are
    equal is a constant. Pinned values are returned as constants of the trial's config.
    """

    def __init__(self, trial: Any, spec: StudySpec | None) -> None:
        self.trial, self.spec = trial, spec
        self.pinned: dict[str, Any] = {}
        self.names: list[str] = []

    def _pinned(self, name: str, low: Any, high: Any) -> bool:
        self.names.append(name)
        if self.spec is not None and name in self.spec.fixed:
            self.pinned[name] = self.spec.fixed[name]
            return True
        if low == high:
            self.pinned[name] = low
            return True
        return self.trial is None

    def float(self, name: str, low: float, high: float, log: bool = False) -> None:
        if self.spec is not None:
            low, high = self.spec.search.get(name, (low, high))
        if not self._pinned(name, low, high):
            self.trial.suggest_float(name, low, high, log=log and low > 0)

    def int(self, name: str, low: int, high: int) -> None:
        if self.spec is not None:
            low, high = (int(v) for v in self.spec.search.get(name, (low, high)))
        if not self._pinned(name, low, high):
            self.trial.suggest_int(name, low, high)

    def choice(self, name: str, options: list[str]) -> None:
        if not self._pinned(name, options[0], options[-1]):
            self.trial.suggest_categorical(name, options)


def _kd_space(space: Space) -> None:
    space.float("temperature", 1.0, 16.0, log=True)
    space.float("w_ce", 0.0, 1.0)
    space.float("w_kd", 0.1, 1.0)


def _mixup_kd_space(space: Space) -> None:
    _kd_space(space)
    space.float("alpha", 0.1, 2.0, log=True)


def _lskd_space(space: Space) -> None:
    space.float("temperature", 1.0, 8.0, log=True)  # a base temperature on z-scored logits
    space.float("w_ce", 0.0, 1.0)
    space.float("w_kd", 1.0, 12.0, log=True)


def _dkd_space(space: Space) -> None:
    space.float("temperature", 1.0, 16.0, log=True)
    space.float("w_tckd", 0.25, 4.0, log=True)
    space.float("w_nckd", 1.0, 12.0, log=True)


def _cutmixpick_space(space: Space) -> None:
    _kd_space(space)
    space.choice("pick", ["s_ent", "t_ent"])


def _crld_space(space: Space) -> None:
    space.float("temperature", 1.0, 8.0, log=True)
    space.float("tau_w", 0.5, 0.99)
    space.float("tau_s", 0.0, 0.6)
    space.float("w_wv", 0.5, 4.0, log=True)
    space.float("w_cv", 0.1, 2.0, log=True)


def _topkd_space(space: Space) -> None:
    _kd_space(space)
    space.int("k", 2, 10)
    space.float("topk_weight", 1.0, 4.0)
    space.float("w_tdl", 0.1, 2.0, log=True)
    space.float("w_con", 0.01, 1.0, log=True)


SPACES: dict[str, Callable[[Space], None]] = {
    "ce": lambda space: None,
    "kd": _kd_space,
    "lskd": _lskd_space,
    "dkd": _dkd_space,
    "mixup_kd": _mixup_kd_space,
    "cutmix_kd": _kd_space,
    "cutmixpick_kd": _cutmixpick_space,
    "crld": _crld_space,
    "topkd": _topkd_space,
}


def space_params(method: str) -> list[str]:
    """Names a method's space suggests (what `search` and `fixed` may refer to)."""
    space = Space(None, None)
    SPACES[method](space)
    return space.names


def trial_constants(spec: StudySpec) -> dict[str, Any]:
    """What every trial of the study shares: the student's recipe and the seed."""
    return {**dataclasses.asdict(spec.recipe), "seed": spec.seed}


class DefineByRun:
    """The Optuna define-by-run space of a study (a class, so Tune can pickle it for resume)."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        method = trial.suggest_categorical("method", list(self.spec.methods))
        space = Space(trial, self.spec)
        SPACES[method](space)
        return {**trial_constants(self.spec), **space.pinned}


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
