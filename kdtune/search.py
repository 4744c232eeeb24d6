"""Search spaces (define-by-run Optuna functions, one per method) and the searcher/scheduler.

A space names each hyperparameter with a default range; the study's `search` overrides a range
and `fixed` pins a value. The same name means the same thing in every method ("temperature" in
kd, dkd and mixup_kd), so Optuna's sampler learns it across methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kdtune.config import CHOICES, StudySpec


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
    space.float("w_kd", 1.0, 12.0)  # linear: a name has one scale in every method (Optuna)


def _dkd_space(space: Space) -> None:
    space.float("temperature", 1.0, 16.0, log=True)
    space.float("w_tckd", 0.25, 4.0, log=True)
    space.float("w_nckd", 1.0, 12.0, log=True)


def _cutmixpick_space(space: Space) -> None:
    _kd_space(space)
    space.choice("pick", ["s_ent", "t_ent"])


def _da_kd_space(space: Space) -> None:
    _kd_space(space)
    space.choice("augmentation", list(CHOICES["augmentation"]))


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
    "mixup": lambda space: space.float("alpha", 0.1, 2.0, log=True),
    "mixup_kd": _mixup_kd_space,
    "cutmix_kd": _kd_space,
    "da_kd": _da_kd_space,
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


def grid_keys(spec: StudySpec) -> list[str]:
    """What tells a grid study's configurations apart: the method, then every key a point sets."""
    keys = ["method"]
    for point in spec.grid:
        keys += [k for k in point if k not in keys]
    return keys


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The trial configs of a grid study: each point once per seed, seeds innermost (so the
    repeats of a point run side by side), the study's `fixed` values under the point's own."""
    points = []
    for point in spec.grid:
        names = space_params(str(point["method"]))
        fixed = {k: v for k, v in spec.fixed.items() if k in names}
        for seed in spec.trial_seeds:
            points.append({**trial_constants(spec), **fixed, **point, "seed": seed})
    return points


def make_searcher(spec: StudySpec) -> Any:
    """Optuna multi-objective search; metric and mode go to the searcher, not to TuneConfig.
    A grid study runs its points in order instead (Tune's basic generator)."""
    if spec.grid:
        return points_searcher(grid_points(spec))
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
    """Early stopping (ASHA) only for single-objective searches: Tune's ASHA takes one metric,
    and a grid study compares every point at its full budget."""
    if len(spec.objectives) != 1 or spec.grid:
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


def points_searcher(points: list[dict[str, Any]]) -> Any:
    """A Tune searcher that hands out `points` in order, each as a whole trial config.
    (Tune's basic generator wants every key of every point declared in a shared param space,
    which points of different methods, with different keys, cannot share.)"""
    import json

    from ray.tune.search import Searcher

    class PointsSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__()
            self.points, self.next_index = points, 0

        def suggest(self, trial_id: str) -> dict[str, Any] | str:
            if self.next_index >= len(self.points):
                return Searcher.FINISHED
            self.next_index += 1
            return dict(self.points[self.next_index - 1])

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            pass

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "w") as handle:
                json.dump({"points": self.points, "next_index": self.next_index}, handle)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path) as handle:
                state = json.load(handle)
            self.points, self.next_index = state["points"], state["next_index"]

    return PointsSearcher()
