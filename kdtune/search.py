"""What a study tries: each method's Optuna space (derived from its hyperparameter declarations),
grid points, the samplers, the Optuna study and the scheduler; without Ray at import, so that
the blackbox builder and replays need none (the Tune searchers are in `kdtune.searchers`).

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
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from kdtune.config import ConfigError, StudySpec, TrialConfig, one_line
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


# TPE's constant liar (each running trial counted at the worst value, so that asks made while many
# trials run spread out) is off by default: measured with 64 trials at once (README, "Many
# trials at once"), it kept no more of the search's quality than plain TPE.
TPE_CONSTANT_LIAR = False


def _tpe(spec: StudySpec, seed: int, startup: int, constant_liar: bool) -> Any:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                      constant_liar=constant_liar)  # fmt: skip


def _gp(spec: StudySpec, seed: int, startup: int, constant_liar: bool) -> Any:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                     warn_independent_sampling=False)  # fmt: skip


def _nsga2(spec: StudySpec, seed: int, startup: int, constant_liar: bool) -> Any:
    # generations of a few trials each, or a short search is all random
    population = max(4, min(50, spec.num_samples // 3))
    return NSGAIISampler(seed=seed, population_size=population)


# config.SAMPLERS's names -> (spec, seed, random start-up trials, constant liar) -> the sampler
SAMPLER_FACTORIES: dict[str, Callable[[StudySpec, int, int, bool], Any]] = {
    "tpe": _tpe, "gp": _gp, "nsga2": _nsga2,
}  # fmt: skip


def make_sampler(spec: StudySpec, seed: int | None = None,
                 constant_liar: bool = TPE_CONSTANT_LIAR) -> Any:  # fmt: skip
    """The study's Optuna sampler, seeded by the study (or `seed`); each starts from random
    trials. GPSampler models only the parameters every trial has: with several methods, whose
    parameters are scoped by method, it models the method and samples the rest at random
    (Optuna warns on every trial; README, "The sampler", has the measurement)."""
    seed = spec.seed if seed is None else seed
    return SAMPLER_FACTORIES[spec.sampler](spec, seed, min(10, spec.num_samples), constant_liar)


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a search resumed after `trials_so_far` Optuna trials. A sampler
    made anew with the study's own seed would draw its random start-up points from the
    beginning again, so a search interrupted within them re-ran the configurations it had
    already tried; a seed of the resume's own, still a function of the study's, does not."""
    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


OPTUNA_TABLES = frozenset(("studies", "trials", "version_info"))
PIP_NAMES = {"MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary"}  # module -> its package
STUDY_ID_ATTR = "kdtune.study_id"  # on an Optuna study: which kdtune study made it
# on an Optuna study: its search handed out every trial it had, replicates included
REPLICATED_ATTR = "kdtune.search_ended"


def _storage_error(why: str, fix: str) -> ConfigError:
    return ConfigError(f"optuna_storage: {why}; {fix}, or leave --optuna-storage out (the "
                       f"study folder's own optuna.db)")  # fmt: skip


def check_optuna_storage(url: str) -> None:
    """An Optuna storage that a search can use, checked before Ray, MLflow or the data: one
    ConfigError naming the field and the fix for a malformed URL, a missing driver, a database
    that cannot be reached, written or read, or one that holds another program's tables
    (Optuna adds its own to any database, MLflow's tracking store included, and then fails)."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise _storage_error(f"{url!r} is not a database URL",
                             "give one such as sqlite:///optuna.db or "
                             "postgresql://user@host/db") from None  # fmt: skip
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_sqlite_file(Path(parsed.database), url)
    try:
        engine = sqlalchemy.create_engine(url)
    except sqlalchemy.exc.NoSuchModuleError:
        raise _storage_error(f"{url}: no database driver for {parsed.drivername!r}",
                             "give a sqlite:///, postgresql:// or mysql:// URL") from None
    except ModuleNotFoundError as error:
        package = PIP_NAMES.get(str(error.name), error.name)
        raise _storage_error(f"{url} needs the Python module {error.name!r}, which is not "
                             "installed", f"pip install {package}") from None  # fmt: skip
    try:
        with engine.connect():
            tables = set(sqlalchemy.inspect(engine).get_table_names())
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise _storage_error(f"cannot open {url} ({one_line(error)})",
                             "check that the database is up and the URL right") from None
    finally:
        engine.dispose()
    if tables and not tables >= OPTUNA_TABLES or "experiments" in tables:
        shown = ", ".join(sorted(tables - OPTUNA_TABLES)[:5])
        raise _storage_error(f"{url} holds another program's tables ({shown}; MLflow's "
                             "tracking store?), which Optuna's would clash with",
                             "give the Optuna studies a database of their own") from None


def _check_sqlite_file(path: Path, url: str) -> None:
    if not path.parent.is_dir():
        raise _storage_error(f"the folder {path.parent} of {url} does not exist",
                             "create it, or give a file in an existing folder")  # fmt: skip
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable or not os.access(path.parent, os.W_OK):  # SQLite writes a journal beside
        raise _storage_error(f"{path if path.exists() else path.parent} is read-only",
                             "make it writable, or give a file in a writable folder")
    if path.exists() and path.stat().st_size:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                verdict = db.execute("pragma quick_check").fetchone()[0]
        except sqlite3.DatabaseError as error:
            verdict = str(error)
        if verdict != "ok":
            raise _storage_error(f"{path} is not a sound SQLite database ({verdict})",
                                 "move it away (a search resumes from nothing else), or "
                                 "give another file")  # fmt: skip


def study_claim(spec: StudySpec, url: str, study_id: str, *, resume: bool) -> str:
    """What the search may do with the Optuna study named after it in `url`: "load" it (a
    resume), "create" it, or "replace" an earlier one of this same kdtune study (a fresh
    start). Never another's: a study made by another kdtune study (another folder; its
    STUDY_ID_ATTR differs) or not by kdtune at all is a ConfigError, as is a resume that
    finds none. A resume whose folder has no id (`study_id` ""; begun by a kdtune older than
    the id) loads a study without one."""
    summaries = optuna.study.get_all_study_summaries(optuna.storages.RDBStorage(url),
                                                     include_best_trial=False)  # fmt: skip
    found = next((s for s in summaries if s.study_name == spec.name), None)
    if found is None:
        if resume:
            raise _storage_error(f"{url} holds no Optuna study {spec.name!r} to resume "
                                 "(was optuna.db replaced or deleted?)",
                                 "put the study's own optuna.db back, or start the study anew "
                                 "without --resume")  # fmt: skip
        return "create"
    maker = found.user_attrs.get(STUDY_ID_ATTR)
    if maker == (study_id or None):
        return "load" if resume else "replace"
    whose = ("a study that kdtune did not make" if maker is None else
             "another kdtune study's (same name, another folder)")  # fmt: skip
    raise _storage_error(f"{url} holds an Optuna study {spec.name!r} with "
                         f"{found.n_trials} trials, {whose}, which "
                         f"this study {'cannot resume' if resume else 'would replace'}",
                         "give this study another --name or --optuna-storage")  # fmt: skip


def optuna_study(spec: StudySpec, storage_url: str, resume: bool, study_id: str = "") -> Any:
    """The search's Optuna study, named after the study, in `storage_url` (in memory if "").
    A fresh start replaces one that this same study made there; --resume loads it
    (`study_claim` refuses every other case)."""
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    claim = study_claim(spec, storage_url, study_id, resume=resume) if storage_url else "create"
    if claim == "replace":
        optuna.delete_study(study_name=spec.name, storage=storage)
    directions = ["maximize" if mode == "max" else "minimize" for _, mode in spec.objectives]
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                sampler=make_sampler(spec), load_if_exists=True)  # fmt: skip
    if study_id:
        study.set_user_attr(STUDY_ID_ATTR, study_id)
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # labels with
        study.set_metric_names([metric for metric, _ in spec.objectives])
    return study


def grace_period(spec: StudySpec) -> float:
    """The spec's, or budget / reduction_factor^2: rungs at a ninth and a third of the budget."""
    return spec.grace_period or spec.recipe.epochs / spec.reduction_factor**2


def make_scheduler(spec: StudySpec) -> Any:
    """MO-ASHA (kdtune.scheduler) for a search, None (first in, first out: see
    `runner.trials_config`) for a grid or when asked."""
    if not spec.early_stopping:
        return None
    from kdtune.scheduler import MultiObjectiveAsha

    return MultiObjectiveAsha(spec.name, spec.objectives, spec.recipe.epochs, grace_period(spec),
                              spec.reduction_factor, spec.seed)  # fmt: skip


def rungs(spec: StudySpec) -> list[int]:
    """The epochs at which the study's scheduler judges trials (none without early stopping)."""
    from kdtune.scheduler import rung_epochs

    if not spec.early_stopping:
        return []
    return rung_epochs(grace_period(spec), spec.reduction_factor, spec.recipe.epochs)


# Keep the name: the searchers of studies saved before kdtune.searchers existed were pickled by
# value and call it as kdtune.search._rebind_running (tests/data/saved_study_64f0812 resumes)
def _rebind_running(asked: dict[str, Any], study: Any) -> tuple[dict[str, Any], list[int]]:
    """A restored searcher's Optuna trials (by Tune trial id; saved as Optuna trial ids, or by
    an earlier kdtune as trials), bound to this launch's `study`, and the study's other RUNNING
    trials: asked after the last save by a driver that then died, no Tune trial knows them. The
    next trials take them over, configurations and all, so that the Optuna study holds one
    trial per Tune trial, as an uninterrupted search would."""
    running = [trial._trial_id for trial in study.get_trials(
        deepcopy=False, states=[optuna.trial.TrialState.RUNNING])]  # fmt: skip
    ids = {tid: getattr(saved, "_trial_id", saved) for tid, saved in asked.items()}
    # a trial the driver told Optuna about after the last save, before it died, is ended in
    # the storage already: Optuna refuses to be told twice
    rebound = {tid: optuna.trial.Trial(study, trial_id)
               for tid, trial_id in ids.items() if trial_id in running}  # fmt: skip
    kept = {trial._trial_id for trial in rebound.values()}
    return rebound, [trial_id for trial_id in running if trial_id not in kept]


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


CURVE_POINTS = 20  # the most epochs of a trial's curve that Optuna is told of


def keep_curve(curve: dict[int, float], reports: Sequence[Mapping[str, Any]], metric: str) -> None:
    """Add each report's finite `metric` to `curve` (epoch -> value)."""
    for report in reports:
        value = report.get(metric)
        if "epoch" in report and isinstance(value, (int, float)) and math.isfinite(value):
            curve[int(report["epoch"])] = float(value)


def write_curve(trial: Any, curve: Mapping[int, float]) -> None:
    """A trial's curve as Optuna intermediate values (optuna-dashboard lists them with the
    trial; `save_learning_curves` draws them): at most CURVE_POINTS epochs, evenly, the last
    always. Only for a trial that ran its whole budget, just before it is told: TPE reads a
    pruned trial's intermediate values with a single direction and fails on a
    multi-objective study, and Optuna's `Trial.report` refuses one, so the study's storage
    takes them directly."""
    epochs = sorted(curve)
    stride = max(1, -(-len(epochs) // CURVE_POINTS))
    for epoch in [*epochs[-1 - stride :: -stride][::-1], epochs[-1]] if epochs else []:
        trial.storage.set_trial_intermediate_value(trial._trial_id, epoch, curve[epoch])


CURVES_PLOT = "kdtune-learning-curves"  # optuna-dashboard's id of the study's curves figure


class _Figure:
    """What optuna-dashboard's `save_plotly_graph_object` reads of a plotly Figure (its JSON),
    for a figure given as plotly's JSON form (kdtune does not depend on plotly)."""

    def __init__(self, figure: Mapping[str, Any]) -> None:
        self.figure = figure

    def to_json(self) -> str:
        return json.dumps(self.figure)


def save_learning_curves(study: Any, metric: str, front: set[str]) -> None:
    """The trials' `metric` per epoch as a figure on the study's page in optuna-dashboard, whose
    own learning-curve chart is drawn for single-objective studies only: a line per trial that
    ran its budget (its intermediate values; red if its configuration is on the `front`, of
    Tune trial ids), the rung values of each stopped one dotted."""
    from optuna_dashboard import save_plotly_graph_object

    traces = []
    for trial in study.get_trials(deepcopy=False):
        curve = trial.intermediate_values or {
            epoch: values[0] for epoch, values in rung_values(trial).items()}  # fmt: skip
        if not curve:
            continue
        on_front = trial.user_attrs.get("tune_trial_id") in front
        style = ({"color": "#d62728", "width": 2.5} if on_front else
                 {"color": "#9e9e9e", "width": 1, "dash": "solid" if trial.intermediate_values
                  else "dot"})  # fmt: skip
        epochs = sorted(curve)
        traces.append({"type": "scatter", "mode": "lines+markers", "x": epochs,
                       "y": [curve[e] for e in epochs], "name": f"trial {trial.number}",
                       "line": style, "marker": {"size": 4, "color": style["color"]},
                       "showlegend": False})  # fmt: skip
    layout = {"title": {"text": f"{metric} per epoch: red, the front's trials; grey, the others"
                                "; dotted, stopped early (at its rungs)"},
              "xaxis": {"title": {"text": "epoch"}}, "yaxis": {"title": {"text": metric}}}
    save_plotly_graph_object(study, _Figure({"data": traces, "layout": layout}),
                             graph_object_id=CURVES_PLOT)  # fmt: skip


MLFLOW_RUN_ATTR, MLFLOW_URL_ATTR = "mlflow_run_id", "mlflow_run_url"


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


def label_keys(spec: StudySpec, declarations: Declarations) -> dict[str, list[str]]:
    """method -> the config keys that tell the study's trials of that method apart (what names
    their runs): the hyperparameters its search varies, or what its grid points set, and the
    seed where configurations run over several."""
    if not spec.grid:  # and the seed, when the front's configurations run over several
        seeds = ["seed"] if spec.replicate_trials else []
        return {m: [*varied_names(spec, m, declarations[m]), *seeds] for m in spec.methods}
    keys: dict[str, list[str]] = {m: [] for m in spec.methods}
    for point in spec.grid:
        method = keys.setdefault(str(point["method"]), [])
        method += [k for k in point if k != "method" and k not in method]
    seeds = ["seed"] if len(spec.trial_seeds) > 1 else []
    return {method: [*names, *seeds] for method, names in keys.items()}
