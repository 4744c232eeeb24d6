"""What a study tries: each method's Optuna space (derived from its hyperparameter declarations),
grid points, the searcher (Optuna's ask/tell as a Ray Tune Searcher) and the scheduler.

Every config handed to a trial is resolved here: the method, every hyperparameter it declares
(searched, fixed by the study, or at its default), the recipe and the seed, typed by the
declarations. So Tune's `trial.config`, the MLflow child run's params and `results.parquet`
all record the configuration that actually ran.

The sampler sees a method's hyperparameters under names scoped by the method ("kd.temperature",
"lskd.w_kd"): the same concept can need another range per method (w_kd is 0.1-1 for kd and 1-12
for lskd), and TPE models each name as one density, so a shared name would pool observations of
different methods and scales. docs/architecture.md says more.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from kdtune.config import StudySpec, TrialConfig
from kdtune.hparams import Declarations, HParam, Value, scoped


def resolve(raw: Mapping[str, Any], declarations: Declarations) -> dict[str, Any]:
    """A trial config, complete and typed (validated: raises ConfigError)."""
    return TrialConfig.from_dict(raw, declarations).to_dict()


def trial_constants(spec: StudySpec) -> dict[str, Any]:
    """What every trial of the study shares: the student's recipe and the seed."""
    return {**dataclasses.asdict(spec.recipe), "seed": spec.seed}


def fixed_values(spec: StudySpec, method: str, hparams: Sequence[HParam]) -> dict[str, Any]:
    """The study's `fixed` values that apply to `method`."""
    values = {h.name: scoped(spec.fixed, method, h.name) for h in hparams}
    return {name: value for name, value in values.items() if value is not None}


def search_range(spec: StudySpec, method: str, hparam: HParam) -> tuple[Any, ...] | None:
    """Where the study searches `hparam` in `method`, or None when it holds it fixed."""
    if scoped(spec.fixed, method, hparam.name) is not None:
        return None
    bounds = scoped(spec.search, method, hparam.name) or hparam.search
    if bounds is not None and hparam.kind in (float, int) and bounds[0] == bounds[1]:
        return None  # a range of one value is a constant (`pinned_by_search`)
    return bounds


def varied_names(spec: StudySpec, method: str, hparams: Sequence[HParam]) -> list[str]:
    """The hyperparameters of `method` that the study's search varies."""
    return [h.name for h in hparams if search_range(spec, method, h) is not None]


def _suggest(trial: Any, method: str, hparam: HParam, bounds: tuple[Any, ...]) -> Value:
    name = f"{method}.{hparam.name}"  # scoped: see the module docstring
    if hparam.kind is float:
        return trial.suggest_float(name, bounds[0], bounds[1], log=hparam.log)
    if hparam.kind is int:
        return trial.suggest_int(name, int(bounds[0]), int(bounds[1]), log=hparam.log)
    return trial.suggest_categorical(name, list(bounds))


def _pinned_by_search(spec: StudySpec, method: str, hparam: HParam) -> Any:
    bounds = scoped(spec.search, method, hparam.name)
    return bounds[0] if bounds is not None and bounds[0] == bounds[1] else None


class DefineByRun:
    """The Optuna define-by-run space of a study (a class, so Tune can pickle it for resume)."""

    def __init__(self, spec: StudySpec, declarations: Declarations) -> None:
        self.spec, self.declarations = spec, dict(declarations)

    def __call__(self, trial: Any) -> dict[str, Any]:
        method = trial.suggest_categorical("method", list(self.spec.methods))
        hparams = self.declarations[method]
        values = fixed_values(self.spec, method, hparams)
        for hparam in hparams:
            bounds = search_range(self.spec, method, hparam)
            if bounds is not None:
                values[hparam.name] = _suggest(trial, method, hparam, bounds)
            elif (pinned := _pinned_by_search(self.spec, method, hparam)) is not None:
                values[hparam.name] = pinned
        return resolve({**trial_constants(self.spec), **values, "method": method},
                       self.declarations)  # fmt: skip


def grid_keys(spec: StudySpec) -> list[str]:
    """What tells a grid study's configurations apart: the method, then every key a point sets."""
    keys = ["method"]
    for point in spec.grid:
        keys += [k for k in point if k not in keys]
    return keys


def grid_points(spec: StudySpec, declarations: Declarations) -> list[dict[str, Any]]:
    """The resolved trial configs of a grid study: each point once per seed, seeds innermost (so
    the repeats of a point run side by side), the study's `fixed` values under the point's own."""
    points = []
    for point in spec.grid:
        method = str(point["method"])
        fixed = fixed_values(spec, method, declarations[method])
        for seed in spec.trial_seeds:
            raw = {**trial_constants(spec), **fixed, **point, "seed": seed}
            points.append(resolve(raw, declarations))
    return points


def make_searcher(spec: StudySpec, declarations: Declarations) -> Any:
    """Optuna's multi-objective TPE over the study's space; a grid study runs its points in order
    instead."""
    if spec.grid:
        return points_searcher(grid_points(spec, declarations))
    import optuna

    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, spec.num_samples))
    return optuna_searcher(DefineByRun(spec, declarations), spec.objectives, sampler)


def quiet_optuna(verbose: bool) -> None:
    """Optuna's own notices ("A new study created in memory") only with --verbose."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


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


def optuna_searcher(
    space: DefineByRun, objectives: Sequence[tuple[str, str]], sampler: Any
) -> Any:  # fmt: skip
    """Optuna's ask/tell as a Tune Searcher: each Tune trial asks one Optuna trial, whose config
    is `space(trial)`, and tells it the final objectives (a failed or non-finite trial is told
    FAIL, so the sampler never learns from it)."""
    import optuna
    from ray.tune.search import Searcher

    class OptunaSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=[m for m, _ in objectives], mode=[d for _, d in objectives])
            self.space = space
            directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
            self.study = optuna.create_study(directions=directions, sampler=sampler)
            self.asked: dict[str, Any] = {}  # Tune trial id -> its Optuna trial

        def suggest(self, trial_id: str) -> dict[str, Any]:
            if trial_id not in self.asked:
                self.asked[trial_id] = self.study.ask()
            return self.space(self.asked[trial_id])

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            trial = self.asked.pop(trial_id, None)
            if trial is None:
                return
            values = [(result or {}).get(m) for m in self.metric]
            if error or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, values)

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as handle:
                pickle.dump(self.__dict__, handle)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as handle:
                self.__dict__.update(pickle.load(handle))

    return OptunaSearcher()


def points_searcher(points: list[dict[str, Any]]) -> Any:
    """A Tune searcher that hands out `points` in order, each as a whole trial config.
    (Tune's basic generator wants every key of every point declared in a shared param space,
    which points of different methods, with different keys, cannot share.)"""
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


def label_keys(spec: StudySpec, declarations: Declarations) -> dict[str, list[str]]:
    """method -> the config keys that tell the study's trials of that method apart (what names
    their runs): the hyperparameters its search varies, or what its grid points set (and the
    seed, when every point runs over several)."""
    if not spec.grid:
        return {m: varied_names(spec, m, declarations[m]) for m in spec.methods}
    keys: dict[str, list[str]] = {m: [] for m in spec.methods}
    for point in spec.grid:
        method = keys.setdefault(str(point["method"]), [])
        method += [k for k in point if k != "method" and k not in method]
    seeds = ["seed"] if len(spec.trial_seeds) > 1 else []
    return {method: [*names, *seeds] for method, names in keys.items()}
