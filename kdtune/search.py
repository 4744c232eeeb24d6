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

import contextlib
import dataclasses
import json
import math
import pickle
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

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


def make_searcher(spec: StudySpec, declarations: Declarations, storage_url: str = "",
                  resume: bool = False) -> Any:  # fmt: skip
    """Optuna's multi-objective sampler over the study's space, its study kept in `storage_url`
    (an RDB: optuna-dashboard reads it, --resume continues it); a grid study runs its points in
    order instead."""
    if spec.grid:
        return points_searcher(grid_points(spec, declarations))
    return optuna_searcher(DefineByRun(spec, declarations),
                           optuna_study(spec, storage_url, resume), rungs(spec))  # fmt: skip


def quiet_optuna(verbose: bool) -> None:
    """Optuna's own notices ("A new study created in memory") only with --verbose."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II, picklable on every Optuna kdtune supports. Ray Tune pickles the searcher,
    and with it the Optuna study and its sampler, when a study starts (tuner.pkl) and at every
    experiment checkpoint, as the searcher's own `save` does. Optuna 5.1 gave its genetic
    samplers a threading.Lock, which pickle cannot copy, so an NSGA-II search failed before its
    first trial. The lock guards a cache within one process: a copy gets a lock of its own."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def make_sampler(spec: StudySpec) -> Any:
    """The study's Optuna sampler, seeded by the study; each starts from random trials.
    GPSampler models only the parameters every trial has: with several methods, whose
    parameters are scoped by method, it models the method and samples the rest at random
    (Optuna warns on every trial; README, "The sampler", has the measurement)."""
    startup = min(10, spec.num_samples)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=spec.seed, n_startup_trials=startup,
                                         warn_independent_sampling=False)  # fmt: skip
    if spec.sampler == "nsga2":  # generations of a few trials each, or a short search is random
        population = max(4, min(50, spec.num_samples // 3))
        return NSGAIISampler(seed=spec.seed, population_size=population)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup)


def optuna_study(spec: StudySpec, storage_url: str, resume: bool) -> Any:
    """The search's Optuna study, named after the study, in `storage_url` (in memory if "").
    A fresh start replaces a study of the same name there; --resume loads it."""
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    if storage is not None and not resume:
        with contextlib.suppress(KeyError):  # none there yet
            optuna.delete_study(study_name=spec.name, storage=storage)
    directions = ["maximize" if mode == "max" else "minimize" for _, mode in spec.objectives]
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                sampler=make_sampler(spec), load_if_exists=True)  # fmt: skip
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # labels with
        study.set_metric_names([metric for metric, _ in spec.objectives])
    return study


def grace_period(spec: StudySpec) -> float:
    """The spec's, or budget / reduction_factor^2: rungs at a ninth and a third of the budget."""
    return spec.grace_period or spec.recipe.epochs / spec.reduction_factor**2


def make_scheduler(spec: StudySpec) -> Any:
    """MO-ASHA (kdtune.scheduler) for a search, None (Tune's FIFO) for a grid or when asked."""
    if not spec.early_stopping:
        return None
    from kdtune.scheduler import MultiObjectiveAsha

    return MultiObjectiveAsha(spec.name, spec.objectives, spec.recipe.epochs, grace_period(spec),
                              spec.reduction_factor)  # fmt: skip


def rungs(spec: StudySpec) -> list[int]:
    """The epochs at which the study's scheduler judges trials (none without early stopping)."""
    from kdtune.scheduler import rung_epochs

    if not spec.early_stopping:
        return []
    return rung_epochs(grace_period(spec), spec.reduction_factor, spec.recipe.epochs)


def _rebind_running(asked: dict[str, Any], study: Any) -> dict[str, Any]:
    """A restored searcher's Optuna trials (by Tune trial id), bound to this launch's `study`;
    the study's other RUNNING trials were asked after the last save by a driver that then died,
    and no Tune trial will end them: they are told FAIL."""
    running = {trial._trial_id: trial.number for trial in study.get_trials(
        deepcopy=False, states=[optuna.trial.TrialState.RUNNING])}  # fmt: skip
    # a trial the driver told Optuna about after the last save, before it died, is ended in
    # the storage already: Optuna refuses to be told twice
    rebound = {tid: optuna.trial.Trial(study, trial._trial_id)
               for tid, trial in asked.items() if trial._trial_id in running}  # fmt: skip
    kept = {trial._trial_id for trial in rebound.values()}
    for trial_id, number in running.items():
        if trial_id not in kept:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
    return rebound


RUNG_VALUES = "values_at_epoch_"  # + the rung epoch: an Optuna trial's objectives there


def rung_values(trial: Any) -> dict[int, list[float]]:
    """An Optuna trial's objectives at each rung epoch it reached (its user attributes)."""
    return {int(key[len(RUNG_VALUES):]): value for key, value in trial.user_attrs.items()
            if key.startswith(RUNG_VALUES)}  # fmt: skip


def keep_rung_values(trial: Any, reports: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                     rung_epochs: Sequence[int]) -> None:  # fmt: skip
    """Keep the objectives of each report at a rung epoch on the Optuna trial (user attributes
    `rung_values` reads), where importances can still be read when few trials run in full."""
    for report in reports:
        values = [report.get(m) for m in metrics]
        if report.get("epoch") in rung_epochs and None not in values:
            trial.set_user_attr(f"{RUNG_VALUES}{report['epoch']}", values)


def how_it_ended(result: Mapping[str, Any], metrics: Sequence[str], budget: int,
                 error: bool) -> tuple[str, list[Any]]:  # fmt: skip
    """What Optuna is told of a finished Tune trial: ("FAIL", []) for a failed or non-finite one,
    ("PRUNED", []) for one stopped before its budget, else ("COMPLETE", its objectives)."""
    values = [result.get(m) for m in metrics]
    if error or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return "FAIL", []
    if result.get("epoch", 0) < budget:  # stopped at a rung
        return "PRUNED", []
    return "COMPLETE", values


def optuna_searcher(space: DefineByRun, study: Any, rung_epochs: Sequence[int] = ()) -> Any:
    """Optuna's ask/tell as a Tune Searcher: each Tune trial asks one Optuna trial, whose config
    is `space(trial)`, and tells it how the trial ended: its final objectives; PRUNED for a trial
    the scheduler stopped early (TPE then counts it among the poor trials, and no low-fidelity
    values enter the front); FAIL for a failed or non-finite one, which the sampler ignores.
    Its objectives at the scheduler's rung epochs stay on the Optuna trial (`keep_rung_values`)."""
    from ray.tune.search import Searcher

    from kdtune.callback import expand

    modes = ["max" if d == optuna.study.StudyDirection.MAXIMIZE else "min"
             for d in study.directions]  # fmt: skip

    class OptunaSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=list(study.metric_names), mode=modes)
            self.space, self.study = space, study
            self.asked: dict[str, Any] = {}  # Tune trial id -> its Optuna trial
            self.epochs: dict[str, int] = {}  # Tune trial id -> its budget in epochs

        def suggest(self, trial_id: str) -> dict[str, Any]:
            if trial_id not in self.asked:
                self.asked[trial_id] = self.study.ask()
                self.asked[trial_id].set_user_attr("tune_trial_id", trial_id)
            config = self.space(self.asked[trial_id])
            self.epochs[trial_id] = int(config.get("epochs", 0))
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self.asked:
                keep_rung_values(self.asked[trial_id], expand(result), self.metric, rung_epochs)

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            if result:  # a trial stopped at a rung ends on that rung's report
                self.on_trial_result(trial_id, result)
            trial = self.asked.pop(trial_id, None)
            if trial is None:
                return
            state, values = how_it_ended(result or {}, self.metric,
                                         self.epochs.pop(trial_id, 0), error)  # fmt: skip
            self.study.tell(trial, values or None, state=optuna.trial.TrialState[state])

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as handle:
                pickle.dump(self.__dict__, handle)

        def restore(self, checkpoint_path: str) -> None:
            """The state of the first launch, its running trials bound to this launch's study:
            the pickled one names the storage where the study folder was then."""
            with open(checkpoint_path, "rb") as handle:
                state = pickle.load(handle)
            self.__dict__.update(state, asked=_rebind_running(state["asked"], self.study),
                                 study=self.study)  # fmt: skip

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
